package egp

import (
	"bufio"
	"bytes"
	"io"
	"strconv"
)

// The lines variant serves simple devices and nc:
//
//	device:  HELLO <id> [token]\n
//	gateway: WELCOME <last_seq>\n
//	device:  one message per line; its seq is the line number in the connection
//	gateway: ACK <seq>\n          (ACK <seq> dead\n when it was dead-lettered)
//	gateway: ERROR <code> <reason>\n, then it closes
//
// A trailing "\r" is removed, so CRLF devices work too.

// LineReader reads newline-terminated lines of at most max bytes.
type LineReader struct {
	r   *bufio.Reader
	max int
}

// NewLineReader returns a LineReader that refuses lines over max bytes
// (DefaultMaxFrame when 0).
func NewLineReader(r io.Reader, max int) *LineReader {
	if max <= 0 {
		max = DefaultMaxFrame
	}
	return &LineReader{r: bufio.NewReaderSize(r, 4096), max: max}
}

// ReadLine returns the next line without its terminator, in a new slice. A
// line longer than the maximum is an *Error with CodeTooLarge; the reader
// never buffers more than the maximum plus one read buffer.
func (l *LineReader) ReadLine() ([]byte, error) {
	var line []byte
	for {
		frag, err := l.r.ReadSlice('\n')
		if len(line)+len(frag) > l.max+2 { // +2: the terminator
			return nil, protoErr(CodeTooLarge, "line longer than %d bytes", l.max)
		}
		line = append(line, frag...)
		switch err {
		case nil:
			line = line[:len(line)-1]
			line = bytes.TrimSuffix(line, []byte{'\r'})
			if len(line) > l.max {
				return nil, protoErr(CodeTooLarge, "line of %d bytes, at most %d", len(line), l.max)
			}
			return line, nil
		case bufio.ErrBufferFull:
			continue
		case io.EOF:
			if len(line) > 0 {
				return nil, io.ErrUnexpectedEOF
			}
			return nil, io.EOF
		default:
			return nil, err
		}
	}
}

// ParseLinesHello parses a lines HELLO: "HELLO <id> [token]". The ID is
// checked with ValidID.
func ParseLinesHello(line []byte) (id string, token []byte, err error) {
	f := bytes.Fields(line)
	if len(f) == 0 || string(f[0]) != "HELLO" {
		return "", nil, protoErr(CodeProtocol, "first line must be HELLO <id> [token]")
	}
	if len(f) < 2 || len(f) > 3 {
		return "", nil, protoErr(CodeProtocol, "HELLO takes an id and an optional token, got %d words", len(f)-1)
	}
	id = string(f[1])
	if err := ValidID(id); err != nil {
		return "", nil, err
	}
	if len(f) == 3 {
		token = f[2]
	}
	return id, token, nil
}

// AppendLinesWelcome appends "WELCOME <last_seq>\n".
func AppendLinesWelcome(b []byte, lastSeq uint64) []byte {
	b = append(b, "WELCOME "...)
	return append(strconv.AppendUint(b, lastSeq, 10), '\n')
}

// AppendLinesAck appends "ACK <seq>\n", or "ACK <seq> dead\n" for a
// dead-lettered message.
func AppendLinesAck(b []byte, seq uint64, status Status) []byte {
	b = append(b, "ACK "...)
	b = strconv.AppendUint(b, seq, 10)
	if status == StatusDeadLettered {
		b = append(b, " dead"...)
	}
	return append(b, '\n')
}

// AppendLinesError appends "ERROR <code> <reason>\n".
func AppendLinesError(b []byte, code Code, reason string) []byte {
	b = append(b, "ERROR "...)
	b = strconv.AppendUint(b, uint64(code), 10)
	b = append(b, ' ')
	b = append(b, bytes.ReplaceAll([]byte(reason), []byte{'\n'}, []byte{' '})...)
	return append(b, '\n')
}
