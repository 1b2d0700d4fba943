package parser

import (
	"bufio"
	"encoding/binary"
	"fmt"
	"io"
	"os"
	"strings"
	"testing"
	"time"

	"go.uber.org/goleak"
)

// TestMain doubles as the exec handler's test child: with
// EDGEGATE_EXEC_TEST_CHILD set the test binary speaks the exec protocol on
// stdin/stdout instead of running tests.
func TestMain(m *testing.M) {
	if mode := os.Getenv("EDGEGATE_EXEC_TEST_CHILD"); mode != "" {
		os.Exit(execTestChild(mode))
	}
	goleak.VerifyTestMain(m)
}

// execTestChild answers requests by payload:
//
//	"bad..."   permanent error
//	"flaky..." transient error on attempt 1, then done
//	"skip..."  done, nothing to publish
//	"crash"    exits with status 3, once per marker file (EDGEGATE_EXEC_TEST_MARK)
//	"hang"     never answers
//	"garbage"  writes an invalid status
//	"log..."   writes the payload to stderr, then done
//	"last..."  done, record "parsed:<payload>", then exits with status 0
//	"biglog"   writes a 100 KiB line to stderr, then "after the long line", then done
//	"stamp"    done, record "stamp-<attempt>": another output on every attempt
//	otherwise  done, record "parsed:<payload>"
func execTestChild(mode string) int {
	in := bufio.NewReader(os.Stdin)
	out := bufio.NewWriter(os.Stdout)
	reply := func(status byte, body string) {
		var hdr [5]byte
		binary.BigEndian.PutUint32(hdr[:4], uint32(1+len(body)))
		hdr[4] = status
		out.Write(hdr[:])
		out.WriteString(body)
		out.Flush()
	}
	for {
		var n uint32
		if err := binary.Read(in, binary.BigEndian, &n); err != nil {
			return 0 // stdin closed: stop
		}
		req := make([]byte, n)
		if _, err := io.ReadFull(in, req); err != nil {
			return 1
		}
		idLen := int(req[0])
		rest := req[1+idLen:]
		attempt := binary.BigEndian.Uint16(rest[24:26])
		payload := string(rest[26:])
		switch {
		case strings.HasPrefix(payload, "bad"):
			reply(ExecPermanent, "cannot parse "+payload)
		case strings.HasPrefix(payload, "flaky") && attempt == 1:
			reply(ExecTransient, "not yet")
		case strings.HasPrefix(payload, "skip"):
			reply(ExecSkip, "")
		case payload == "crash":
			mark := os.Getenv("EDGEGATE_EXEC_TEST_MARK")
			if _, err := os.Stat(mark); err != nil {
				os.WriteFile(mark, nil, 0o600)
				os.Exit(3)
			}
			reply(ExecOK, "survived")
		case payload == "hang":
			time.Sleep(time.Hour)
		case payload == "garbage":
			out.Write([]byte{0, 0, 0, 1, 9})
			out.Flush()
		case strings.HasPrefix(payload, "log"):
			os.Stderr.WriteString(payload + "\n")
			reply(ExecOK, "logged")
		case payload == "stamp":
			reply(ExecOK, fmt.Sprintf("stamp-%d", attempt))
		case payload == "biglog":
			os.Stderr.WriteString(strings.Repeat("x", 100<<10) + "\nafter the long line\n")
			reply(ExecOK, "logged")
		case strings.HasPrefix(payload, "last"):
			reply(ExecOK, "parsed:"+payload)
			return 0
		default:
			reply(ExecOK, "parsed:"+payload)
		}
		_ = mode
	}
}
