package egp

import (
	"encoding/binary"
	"io"
	"slices"
)

// Header is a decoded frame header.
type Header struct {
	Type Type
	Len  uint32 // body length
}

// Reader reads frames from a stream. It never allocates more than the
// configured maximum for a body: the length is checked first.
//
// A Reader made with a BufferPool holds a read buffer only while it has
// bytes buffered, when its user waits for the stream with Wait: Wait
// gives the buffer back and reads a few bytes into the Reader itself,
// taking a buffer again when they come. An idle connection then pins no
// buffer, for one more read call each time the stream runs dry.
type Reader struct {
	buffer
	max uint32
	hdr [HeaderSize]byte
	scr []byte
}

// NewReader returns a Reader on r that refuses bodies over maxFrame bytes
// (DefaultMaxFrame when 0). bufSize is the read buffer size (4096 when 0).
func NewReader(r io.Reader, maxFrame uint32, bufSize int) *Reader {
	return newReader(r, maxFrame, bufSize, nil)
}

// NewPooledReader is NewReader with its read buffer lent by pool, given
// back while the Reader waits in Wait.
func NewPooledReader(r io.Reader, maxFrame uint32, pool *BufferPool) *Reader {
	return newReader(r, maxFrame, 0, pool)
}

func newReader(r io.Reader, maxFrame uint32, size int, pool *BufferPool) *Reader {
	if maxFrame == 0 {
		maxFrame = DefaultMaxFrame
	}
	return &Reader{buffer: newBuffer(r, size, pool), max: maxFrame}
}

// Next reads and checks the next frame header. A bad magic byte, an unknown
// type or a length over the maximum is an *Error with the matching code.
func (r *Reader) Next() (Header, error) {
	if err := r.readFull(r.hdr[:]); err != nil {
		return Header{}, err
	}
	return r.check()
}

func (r *Reader) check() (Header, error) {
	if r.hdr[0] != Magic {
		return Header{}, protoErr(CodeProtocol, "bad magic byte 0x%02x, want 0x%02x", r.hdr[0], Magic)
	}
	h := Header{Type: Type(r.hdr[1]), Len: binary.BigEndian.Uint32(r.hdr[2:])}
	if !h.Type.valid() {
		return Header{}, protoErr(CodeProtocol, "unknown frame type 0x%02x", r.hdr[1])
	}
	if h.Len > r.max {
		return Header{}, protoErr(CodeTooLarge, "%s frame of %d bytes, max_frame is %d", h.Type, h.Len, r.max)
	}
	return h, nil
}

// BodyInto reads the body of the frame whose header Next returned into b,
// which the caller sized to the header's Len.
func (r *Reader) BodyInto(b []byte) error {
	return unexpected(r.readFull(b))
}

// Scratch reads the body of the frame whose header Next returned into a
// buffer the Reader reuses: it is valid until the next call.
func (r *Reader) Scratch(h Header) ([]byte, error) {
	n := int(h.Len)
	b := r.scr[:0]
	for len(b) < n {
		if len(b) == cap(b) {
			// The buffer grows as the body arrives, by at most what
			// came so far (or scratchStep): a frame that announces a
			// large body and sends little of it costs little.
			b = slices.Grow(b, min(n-len(b), max(len(b), scratchStep)))
		}
		m := min(n, cap(b))
		if err := r.readFull(b[len(b):m]); err != nil {
			return nil, unexpected(err)
		}
		b = b[:m]
	}
	r.scr = b
	if cap(b) > scratchStep {
		r.scr = nil // do not pin a large buffer to an idle connection
	}
	return b, nil
}

// scratchStep is the first size of Scratch's buffer for a large body.
const scratchStep = 64 << 10

// ReadFrame reads the next frame whole, its body in reused scratch space.
func (r *Reader) ReadFrame() (Header, []byte, error) {
	h, err := r.Next()
	if err != nil {
		return h, nil, err
	}
	b, err := r.Scratch(h)
	return h, b, err
}

func unexpected(err error) error {
	if err == io.EOF {
		return io.ErrUnexpectedEOF
	}
	return err
}
