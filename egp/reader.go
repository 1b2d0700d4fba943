package egp

import (
	"encoding/binary"
	"io"
	"sync"
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
	rd   io.Reader
	buf  []byte // buf[r:w] is buffered; nil while a pooled Reader waits
	r, w int
	size int
	pool *BufferPool
	err  error // the stream's error, returned when the buffer is drained
	max  uint32
	hdr  [HeaderSize]byte
	wait [HeaderSize]byte // Wait's read
	scr  []byte
}

// BufferPool lends read buffers of one size to Readers. It is safe for
// concurrent use.
type BufferPool struct {
	size int
	p    sync.Pool
}

// NewBufferPool returns a pool of read buffers of size bytes.
func NewBufferPool(size int) *BufferPool {
	size = max(size, minBuffer)
	return &BufferPool{size: size, p: sync.Pool{New: func() any { b := make([]byte, size); return &b }}}
}

func (p *BufferPool) get() []byte  { return *p.p.Get().(*[]byte) }
func (p *BufferPool) put(b []byte) { p.p.Put(&b) }

const minBuffer = 16

// NewReader returns a Reader on r that refuses bodies over maxFrame bytes
// (DefaultMaxFrame when 0). bufSize is the read buffer size (4096 when 0).
func NewReader(r io.Reader, maxFrame uint32, bufSize int) *Reader {
	if bufSize <= 0 {
		bufSize = 4096
	}
	return newReader(r, maxFrame, max(bufSize, minBuffer), nil)
}

// NewPooledReader is NewReader with its read buffer lent by pool, given
// back while the Reader waits in Wait.
func NewPooledReader(r io.Reader, maxFrame uint32, pool *BufferPool) *Reader {
	return newReader(r, maxFrame, pool.size, pool)
}

func newReader(r io.Reader, maxFrame uint32, size int, pool *BufferPool) *Reader {
	if maxFrame == 0 {
		maxFrame = DefaultMaxFrame
	}
	return &Reader{rd: r, size: size, pool: pool, max: maxFrame}
}

// Buffered returns the number of bytes read from the stream but not yet
// consumed.
func (r *Reader) Buffered() int { return r.w - r.r }

// Release gives a pooled Reader's buffer back, with what it buffered: call
// it when done with the Reader.
func (r *Reader) Release() {
	if r.pool != nil && r.buf != nil {
		r.pool.put(r.buf)
	}
	r.buf, r.r, r.w = nil, 0, 0
}

// readFull fills p from the buffer and the stream, with io.ReadFull's
// errors: io.EOF when the stream ended before p's first byte,
// io.ErrUnexpectedEOF when it ended within p.
func (r *Reader) readFull(p []byte) error {
	want := len(p)
	for len(p) > 0 {
		if r.r == r.w {
			var err error
			if len(p) >= r.size && r.err == nil {
				// Larger than the buffer: read into p itself.
				var n int
				n, err = r.read(p)
				if p = p[n:]; len(p) == 0 {
					r.err = err
					break
				}
			} else {
				err = r.fill()
			}
			if err != nil {
				if err == io.EOF && len(p) < want {
					err = io.ErrUnexpectedEOF
				}
				return err
			}
			continue
		}
		n := copy(p, r.buf[r.r:r.w])
		r.r += n
		p = p[n:]
	}
	return nil
}

// fill reads into the empty buffer: at least one byte, or an error.
func (r *Reader) fill() error {
	r.r, r.w = 0, 0
	if r.err != nil {
		err := r.err
		r.err = nil
		return err
	}
	if r.buf == nil {
		r.buf = r.newBuf()
	}
	n, err := r.read(r.buf)
	r.w = n
	if n == 0 {
		return err
	}
	r.err = err
	return nil
}

func (r *Reader) newBuf() []byte {
	if r.pool != nil {
		return r.pool.get()
	}
	return make([]byte, r.size)
}

// Wait returns when bytes are buffered: at once if some are, else after
// reading from the stream. A pooled Reader gives its buffer back for the
// wait and reads at most a frame header, so that the Reader of an idle
// stream pins no buffer, and a goroutine waiting here needs little stack.
// Its error is the stream's (io.EOF when it ended).
func (r *Reader) Wait() error {
	if r.r < r.w {
		return nil
	}
	if r.pool == nil {
		return r.fill()
	}
	r.Release()
	if r.err != nil {
		err := r.err
		r.err = nil
		return err
	}
	n, err := r.read(r.wait[:])
	if n == 0 {
		return err
	}
	r.buf = r.pool.get()
	r.w = copy(r.buf, r.wait[:n])
	r.err = err
	return nil
}

// read is one read of the stream with at least one byte or an error.
func (r *Reader) read(p []byte) (int, error) {
	for range 100 {
		n, err := r.rd.Read(p)
		if n > 0 || err != nil {
			return n, err
		}
	}
	return 0, io.ErrNoProgress
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
	if cap(r.scr) < int(h.Len) {
		r.scr = make([]byte, h.Len)
	}
	b := r.scr[:h.Len]
	if err := r.readFull(b); err != nil {
		return nil, unexpected(err)
	}
	if cap(r.scr) > 64<<10 {
		r.scr = nil // do not pin a large buffer to an idle connection
	}
	return b, nil
}

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
