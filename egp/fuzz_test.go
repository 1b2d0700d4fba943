package egp

import (
	"bytes"
	"testing"
)

// FuzzReader feeds arbitrary bytes to the frame reader and the body
// parsers: nothing panics, no body is longer than the maximum, and a
// pooled Reader waited on before every frame reads what an own-buffer
// one does.
func FuzzReader(f *testing.F) {
	f.Add(AppendData(AppendHello(nil, Hello{Version: 1, ID: "dev"}), 1, []byte("x")))
	f.Add(AppendWelcome(nil, Welcome{Version: 1, AckMode: AckProcessed, MaxFrame: 4096}))
	f.Add(AppendAck(AppendPing(nil, []byte("p")), 1, 0))
	f.Add(AppendError(nil, CodeBusy, "busy"))
	f.Add([]byte{Magic, 0x03, 0xff, 0xff, 0xff, 0xff})
	f.Add([]byte("GET / HTTP/1.1\r\n\r\n"))
	const max = 4096
	pool := NewBufferPool(16)
	f.Fuzz(func(t *testing.T, in []byte) {
		own := fuzzFrames(t, NewReader(bytes.NewReader(in), max, 16), false, max)
		pooled := fuzzFrames(t, NewPooledReader(bytes.NewReader(in), max, pool), true, max)
		if !bytes.Equal(own, pooled) {
			t.Fatalf("own buffer read %q, pooled %q", own, pooled)
		}
	})
}

// fuzzFrames reads up to 64 frames from r, with a Wait before each when
// wait, parses their bodies and returns the frames read, re-encoded.
func fuzzFrames(t *testing.T, r *Reader, wait bool, max int) []byte {
	defer r.Release()
	var read []byte
	for i := 0; i < 64; i++ {
		if wait {
			if err := r.Wait(); err != nil {
				return read
			}
		}
		h, body, err := r.ReadFrame()
		if err != nil {
			return read
		}
		if len(body) > max || uint32(len(body)) != h.Len {
			t.Fatalf("body of %d bytes for a header of %d (max %d)", len(body), h.Len, max)
		}
		read = append(append(read, byte(h.Type)), body...)
		switch h.Type {
		case TypeHello:
			if hello, err := ParseHello(body); err == nil {
				ValidID(hello.ID)
			}
		case TypeWelcome:
			ParseWelcome(body)
		case TypeData:
			ParseData(body)
		case TypeAck:
			ParseAck(body)
		case TypeError:
			ParseError(body)
		}
	}
	return read
}

// FuzzLines feeds arbitrary bytes to the lines reader and HELLO parser.
func FuzzLines(f *testing.F) {
	f.Add([]byte("HELLO dev-1 token\nmessage\n"))
	f.Add([]byte("HELLO a.b\n"))
	f.Add([]byte("\r\n\r\n"))
	f.Add(bytes.Repeat([]byte("x"), 300))
	const max = 128
	f.Fuzz(func(t *testing.T, in []byte) {
		r := NewLineReader(bytes.NewReader(in), max)
		for i := 0; i < 64; i++ {
			line, err := r.ReadLine()
			if err != nil {
				return
			}
			if len(line) > max {
				t.Fatalf("line of %d bytes, max %d", len(line), max)
			}
			if id, _, err := ParseLinesHello(line); err == nil && ValidID(id) != nil {
				t.Fatalf("accepted invalid id %q", id)
			}
		}
	})
}
