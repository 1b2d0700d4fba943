package appliance_test

import (
	"bufio"
	"fmt"
	"net"
	"strings"
	"testing"
	"time"

	"github.com/edgegate/edgegate/egp"
)

// rawConn is a device that writes raw bytes, for protocol violations.
func rawConn(t *testing.T, addr string) net.Conn {
	t.Helper()
	c, err := net.DialTimeout("tcp", addr, 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return c
}

// readError reads frames until an ERROR and returns its code; it fails if
// the connection ends without one.
func readError(t *testing.T, c net.Conn) egp.Code {
	t.Helper()
	c.SetReadDeadline(time.Now().Add(10 * time.Second))
	r := egp.NewReader(c, 1<<20, 0)
	for {
		h, body, err := r.ReadFrame()
		if err != nil {
			t.Fatalf("no ERROR frame before: %v", err)
		}
		if h.Type == egp.TypeError {
			code, _, err := egp.ParseError(body)
			if err != nil {
				t.Fatal(err)
			}
			// The gateway closes after ERROR.
			if _, _, err := r.ReadFrame(); err == nil {
				t.Fatalf("connection still open after ERROR %d", code)
			}
			return code
		}
	}
}

func hello(id string, flags byte) []byte {
	return egp.AppendHello(nil, egp.Hello{Version: egp.Version, Flags: flags, ID: id})
}

// TestSeqNotIncreasingDropped: a DATA whose seq is not above the previous
// one on the connection is dropped and counted; the rest go on.
func TestSeqNotIncreasingDropped(t *testing.T) {
	j := newJournal(nil)
	cfg := testConfig(t, "seq")
	cfg.Handler = j
	a := start(t, cfg)
	c := rawConn(t, a.DeviceAddr())
	var b []byte
	b = append(b, hello("seqdev", 0)...)
	for _, seq := range []uint64{5, 6, 6, 3, 7} {
		b = egp.AppendData(b, seq, []byte(fmt.Sprint(seq)))
	}
	if _, err := c.Write(b); err != nil {
		t.Fatal(err)
	}
	r := egp.NewReader(c, 1<<20, 0)
	c.SetReadDeadline(time.Now().Add(10 * time.Second))
	var acked []uint64
	for len(acked) < 3 {
		h, body, err := r.ReadFrame()
		if err != nil {
			t.Fatalf("after ACKs %v: %v", acked, err)
		}
		if h.Type == egp.TypeAck {
			ack, _ := egp.ParseAck(body)
			acked = append(acked, ack.Seq)
		}
	}
	if fmt.Sprint(acked) != "[5 6 7]" {
		t.Fatalf("ACKs %v, want [5 6 7]", acked)
	}
	if got := a.SocketStats().OutOfOrder; got != 2 {
		t.Fatalf("out-of-order count %d, want 2", got)
	}
}

// TestLinesListener: the line-based listener for simple devices and nc.
func TestLinesListener(t *testing.T) {
	j := newJournal(nil)
	cfg := testConfig(t, "lines")
	cfg.Handler = j
	cfg.Devices.LinesListen = "127.0.0.1:0"
	a := start(t, cfg)
	c := rawConn(t, a.LinesAddr())
	c.SetDeadline(time.Now().Add(10 * time.Second))
	fmt.Fprintf(c, "HELLO nc-dev\r\nfirst\nsecond line\nthird\n")
	r := bufio.NewReader(c)
	var got []string
	for len(got) < 4 {
		line, err := r.ReadString('\n')
		if err != nil {
			t.Fatalf("after %q: %v", got, err)
		}
		got = append(got, strings.TrimSpace(line))
	}
	if want := "WELCOME 0|ACK 1|ACK 2|ACK 3"; strings.Join(got, "|") != want {
		t.Fatalf("got %q, want %q", strings.Join(got, "|"), want)
	}
	j.mu.Lock()
	var payloads []string
	for _, call := range j.calls["nc-dev"] {
		payloads = append(payloads, call.payload)
	}
	j.mu.Unlock()
	if strings.Join(payloads, "|") != "first|second line|third" {
		t.Fatalf("handled %q", payloads)
	}
	bad := rawConn(t, a.LinesAddr())
	fmt.Fprintf(bad, "HELO x\n")
	line, _ := bufio.NewReader(bad).ReadString('\n')
	if !strings.HasPrefix(line, "ERROR 1 ") {
		t.Fatalf("bad lines hello answered %q, want ERROR 1 ...", line)
	}
}

