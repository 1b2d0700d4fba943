package egp

import (
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

// LineReader reads newline-terminated lines of at most max bytes. Like a
// Reader, one made with a BufferPool holds a read buffer only while it has
// bytes buffered (see Wait).
type LineReader struct {
	buffer
	max int
}

// NewLineReader returns a LineReader that refuses lines over max bytes
// (DefaultMaxFrame when 0).
func NewLineReader(r io.Reader, max int) *LineReader {
	return newLineReader(r, max, nil)
}

// NewPooledLineReader is NewLineReader with its read buffer lent by pool,
// given back while the LineReader waits in Wait.
func NewPooledLineReader(r io.Reader, max int, pool *BufferPool) *LineReader {
	return newLineReader(r, max, pool)
}

func newLineReader(r io.Reader, max int, pool *BufferPool) *LineReader {
	if max <= 0 {
		max = DefaultMaxFrame
	}
	return &LineReader{buffer: newBuffer(r, 4096, pool), max: max}
}

// ReadLine returns the next line without its terminator, in a new slice. A
// line longer than the maximum is an *Error with CodeTooLarge; the reader
// never buffers more than the maximum plus one read buffer. The stream's
// end is io.EOF between lines and io.ErrUnexpectedEOF within one.
func (l *LineReader) ReadLine() ([]byte, error) {
	var line []byte
	for {
		if l.r == l.w {
			if err := l.fill(); err != nil {
				if err == io.EOF && len(line) > 0 {
					err = io.ErrUnexpectedEOF
				}
				return nil, err
			}
		}
		chunk := l.buf[l.r:l.w]
		end := bytes.IndexByte(chunk, '\n')
		if end >= 0 {
			chunk = chunk[:end+1]
		}
		if len(line)+len(chunk) > l.max+2 { // +2: the terminator
			return nil, protoErr(CodeTooLarge, "line longer than %d bytes", l.max)
		}
		line = append(line, chunk...)
		l.r += len(chunk)
		if end >= 0 {
			line = bytes.TrimSuffix(line[:len(line)-1], []byte{'\r'})
			if len(line) > l.max {
				return nil, protoErr(CodeTooLarge, "line of %d bytes, at most %d", len(line), l.max)
			}
			return line, nil
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
