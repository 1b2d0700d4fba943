package egp

import (
	"io"
	"sync"
)

// BufferPool lends read buffers of one size to Readers and LineReaders.
// It is safe for concurrent use.
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

// buffer is the read buffer of a Reader or LineReader. With a pool it
// holds a buffer only while bytes are buffered, when its user waits for
// the stream with Wait: Wait gives the buffer back and reads a few bytes
// into the buffer struct itself, taking a buffer again when they come.
// An idle connection then pins no buffer, for one more read call each
// time its stream runs dry.
type buffer struct {
	rd   io.Reader
	buf  []byte // buf[r:w] is buffered; nil while a pooled buffer waits
	r, w int
	size int
	pool *BufferPool
	err  error            // the stream's error, returned when the buffer is drained
	wait [HeaderSize]byte // Wait's read
}

func newBuffer(rd io.Reader, size int, pool *BufferPool) buffer {
	if pool != nil {
		size = pool.size
	} else if size <= 0 {
		size = 4096
	}
	return buffer{rd: rd, size: max(size, minBuffer), pool: pool}
}

// Buffered returns the number of bytes read from the stream but not yet
// consumed.
func (b *buffer) Buffered() int { return b.w - b.r }

// Release gives a pooled buffer back, with what it buffered: call it when
// done reading.
func (b *buffer) Release() {
	if b.pool != nil && b.buf != nil {
		b.pool.put(b.buf)
	}
	b.buf, b.r, b.w = nil, 0, 0
}

// Wait returns when bytes are buffered: at once if some are, else after
// reading from the stream. A pooled reader gives its buffer back for the
// wait and reads at most a frame header's worth, so that the reader of an
// idle stream pins no buffer, and a goroutine waiting here needs little
// stack. Its error is the stream's (io.EOF when it ended).
func (b *buffer) Wait() error {
	if b.r < b.w {
		return nil
	}
	if b.pool == nil {
		return b.fill()
	}
	b.Release()
	if err := b.takeErr(); err != nil {
		return err
	}
	n, err := b.read(b.wait[:])
	if n == 0 {
		return err
	}
	b.buf = b.pool.get()
	b.w = copy(b.buf, b.wait[:n])
	b.err = err
	return nil
}

func (b *buffer) takeErr() error {
	err := b.err
	b.err = nil
	return err
}

// fill reads into the empty buffer: at least one byte, or an error.
func (b *buffer) fill() error {
	b.r, b.w = 0, 0
	if err := b.takeErr(); err != nil {
		return err
	}
	if b.buf == nil {
		if b.pool != nil {
			b.buf = b.pool.get()
		} else {
			b.buf = make([]byte, b.size)
		}
	}
	n, err := b.read(b.buf)
	b.w = n
	if n == 0 {
		return err
	}
	b.err = err
	return nil
}

// readFull fills p from the buffer and the stream, with io.ReadFull's
// errors: io.EOF when the stream ended before p's first byte,
// io.ErrUnexpectedEOF when it ended within p.
func (b *buffer) readFull(p []byte) error {
	want := len(p)
	for len(p) > 0 {
		if b.r == b.w {
			var err error
			if len(p) >= b.size && b.err == nil {
				// Larger than the buffer: read into p itself.
				var n int
				n, err = b.read(p)
				if p = p[n:]; len(p) == 0 {
					b.err = err
					break
				}
			} else {
				err = b.fill()
			}
			if err != nil {
				if err == io.EOF && len(p) < want {
					err = io.ErrUnexpectedEOF
				}
				return err
			}
			continue
		}
		n := copy(p, b.buf[b.r:b.w])
		b.r += n
		p = p[n:]
	}
	return nil
}

// read is one read of the stream with at least one byte or an error.
func (b *buffer) read(p []byte) (int, error) {
	for range 100 {
		n, err := b.rd.Read(p)
		if n > 0 || err != nil {
			return n, err
		}
	}
	return 0, io.ErrNoProgress
}
