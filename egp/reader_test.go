package egp

import (
	"bytes"
	"errors"
	"io"
	"runtime"
	"testing"
	"testing/iotest"

	"pgregory.net/rapid"
)

// dataFrame is a DATA frame drawn by a property test.
type dataFrame struct {
	seq     uint64
	payload []byte
}

// drawFrames draws up to n DATA frames of up to size payload bytes and
// returns them with their encoding.
func drawFrames(t *rapid.T, size, n int) ([]dataFrame, []byte) {
	frames := rapid.SliceOfN(rapid.Custom(func(t *rapid.T) dataFrame {
		return dataFrame{rapid.Uint64().Draw(t, "seq"), rapid.SliceOfN(rapid.Byte(), 0, size).Draw(t, "p")}
	}), 0, n).Draw(t, "frames")
	var b []byte
	for _, f := range frames {
		b = AppendData(b, f.seq, f.payload)
	}
	return frames, b
}

// chunked returns in's bytes a few at a time, the sizes drawn by t: a
// stream that arrives in pieces as a socket's does.
type chunked struct {
	t  *rapid.T
	in []byte
}

func (c *chunked) Read(p []byte) (int, error) {
	if len(c.in) == 0 {
		return 0, io.EOF
	}
	n := min(len(p), len(c.in), rapid.IntRange(1, 300).Draw(c.t, "chunk"))
	n = copy(p, c.in[:n])
	c.in = c.in[n:]
	return n, nil
}

// TestPooledReaderProperty: frames of any size, arriving in pieces of any
// size, decode the same with a pooled buffer as with an own one, with or
// without waits between them, and the stream's end is io.EOF between
// frames and io.ErrUnexpectedEOF within one.
func TestPooledReaderProperty(t *testing.T) {
	pool := NewBufferPool(64)
	rapid.Check(t, func(t *rapid.T) {
		frames, in := drawFrames(t, 300, 30)
		cut := rapid.IntRange(0, 7).Draw(t, "cut") // bytes of a last frame cut short
		if cut > 0 {
			in = append(in, AppendData(nil, 1, []byte("truncated"))[:cut]...)
		}
		for _, r := range []*Reader{
			NewReader(&chunked{t, in}, 1024, 64),
			NewPooledReader(&chunked{t, in}, 1024, pool),
		} {
			for i, f := range frames {
				if rapid.Bool().Draw(t, "wait") {
					if err := r.Wait(); err != nil {
						t.Fatalf("wait before frame %d: %v", i, err)
					}
				}
				h, err := r.Next()
				if err != nil || h.Type != TypeData || int(h.Len) != 8+len(f.payload) {
					t.Fatalf("frame %d: %v %v", i, h, err)
				}
				body := make([]byte, h.Len)
				if err := r.BodyInto(body); err != nil {
					t.Fatalf("frame %d body: %v", i, err)
				}
				seq, p, _ := ParseData(body)
				if seq != f.seq || !bytes.Equal(p, f.payload) {
					t.Fatalf("frame %d: got %d %q, want %d %q", i, seq, p, f.seq, f.payload)
				}
			}
			want := io.EOF
			if cut > 0 {
				want = io.ErrUnexpectedEOF
			}
			if _, _, err := r.ReadFrame(); err != want {
				t.Fatalf("after the frames: %v, want %v", err, want)
			}
			r.Release()
		}
	})
}

// waiting is a stream that, when read with nothing more to give, records
// what the Reader holds while it would wait, then ends.
type waiting struct {
	r      *Reader
	in     []byte
	waited bool
	held   []byte // the Reader's buffer during the wait
	asked  int    // bytes asked for by the wait's read
}

func (w *waiting) Read(p []byte) (int, error) {
	if len(w.in) == 0 {
		w.waited, w.held, w.asked = true, w.r.buf, len(p)
		return 0, io.EOF
	}
	n := copy(p, w.in)
	w.in = w.in[n:]
	return n, nil
}

// TestPooledReaderWaitsWithoutBuffer: a pooled Reader that has consumed
// what arrived waits for the stream holding no buffer (an idle device
// costs no read buffer), with a read of no more than a frame header; an
// own-buffer Reader waits with its buffer. Between frames read together
// neither waits at all.
func TestPooledReaderWaitsWithoutBuffer(t *testing.T) {
	in := AppendData(AppendData(nil, 1, []byte("one")), 2, []byte("two"))
	for _, pooled := range []bool{true, false} {
		w := &waiting{in: in}
		if pooled {
			w.r = NewPooledReader(w, 0, NewBufferPool(4096))
		} else {
			w.r = NewReader(w, 0, 4096)
		}
		for i := range 2 {
			if err := w.r.Wait(); err != nil {
				t.Fatalf("pooled=%v wait %d: %v", pooled, i, err)
			}
			if _, _, err := w.r.ReadFrame(); err != nil {
				t.Fatalf("pooled=%v frame %d: %v", pooled, i, err)
			}
			if w.waited {
				t.Fatalf("pooled=%v: read past the frames before they were consumed", pooled)
			}
		}
		if err := w.r.Wait(); err != io.EOF || !w.waited {
			t.Fatalf("pooled=%v: after the frames %v, waited %v", pooled, err, w.waited)
		}
		switch {
		case pooled && (w.held != nil || w.asked > HeaderSize):
			t.Errorf("pooled reader waited holding a %d-byte buffer, reading %d bytes; want no buffer and at most %d", len(w.held), w.asked, HeaderSize)
		case !pooled && w.held == nil:
			t.Errorf("own-buffer reader gave its buffer up")
		}
	}
}

// TestReaderStreamErrors: an error that comes with the last bytes is
// returned after them, and one that comes alone at once.
func TestReaderStreamErrors(t *testing.T) {
	boom := errors.New("boom")
	frame := AppendData(nil, 7, []byte("x"))
	for _, pooled := range []bool{true, false} {
		src := iotest.DataErrReader(io.MultiReader(bytes.NewReader(frame), iotest.ErrReader(boom)))
		r := NewReader(src, 0, 16)
		if pooled {
			r = NewPooledReader(src, 0, NewBufferPool(16))
		}
		if _, body, err := r.ReadFrame(); err != nil {
			t.Fatalf("pooled=%v: %v", pooled, err)
		} else if seq, _, _ := ParseData(body); seq != 7 {
			t.Fatalf("pooled=%v: seq %d", pooled, seq)
		}
		if _, err := r.Next(); !errors.Is(err, boom) {
			t.Fatalf("pooled=%v: got %v, want %v", pooled, err, boom)
		}
	}
	r := NewPooledReader(iotest.OneByteReader(bytes.NewReader(frame)), 0, NewBufferPool(16))
	if _, _, err := r.ReadFrame(); err != nil {
		t.Fatalf("one byte at a time: %v", err)
	}
}

// TestPooledLineReaderProperty: lines of any length (CRLF or LF), arriving
// in pieces of any size, read the same with a pooled buffer as with an own
// one, with or without waits between them; a line over the maximum is
// CodeTooLarge, an unterminated last one io.ErrUnexpectedEOF.
func TestPooledLineReaderProperty(t *testing.T) {
	pool := NewBufferPool(64)
	const max = 200
	rapid.Check(t, func(t *rapid.T) {
		lines := rapid.SliceOfN(rapid.SliceOfN(rapid.ByteRange('a', 'z'), 0, 300), 0, 30).Draw(t, "lines")
		crlf := rapid.Bool().Draw(t, "crlf")
		var in []byte
		for _, l := range lines {
			in = append(in, l...)
			if crlf {
				in = append(in, '\r')
			}
			in = append(in, '\n')
		}
		tail := rapid.SliceOfN(rapid.ByteRange('a', 'z'), 0, 5).Draw(t, "unterminated")
		in = append(in, tail...)
		for _, r := range []*LineReader{
			NewLineReader(&chunked{t, in}, max),
			NewPooledLineReader(&chunked{t, in}, max, pool),
		} {
			for i, want := range lines {
				if rapid.Bool().Draw(t, "wait") {
					if err := r.Wait(); err != nil {
						t.Fatalf("wait before line %d: %v", i, err)
					}
				}
				got, err := r.ReadLine()
				if len(want) > max {
					if ErrorCode(err) != CodeTooLarge {
						t.Fatalf("line %d of %d bytes: %v, want CodeTooLarge", i, len(want), err)
					}
					goto next // a reader stops at a line too long
				}
				if err != nil || !bytes.Equal(got, want) {
					t.Fatalf("line %d: %q %v, want %q", i, got, err, want)
				}
			}
			if _, err := r.ReadLine(); (len(tail) > 0) != (err == io.ErrUnexpectedEOF) || len(tail) == 0 && err != io.EOF {
				t.Fatalf("after the lines (unterminated %q): %v", tail, err)
			}
		next:
			r.Release()
		}
	})
}

// TestScratchGrowsAsTheBodyArrives: a frame that announces a large body
// (a PING of max_frame) and sends a few bytes of it must not make the
// reader allocate the whole announced size while it waits for the rest.
func TestScratchGrowsAsTheBodyArrives(t *testing.T) {
	pr, pw := io.Pipe()
	r := NewReader(pr, DefaultMaxFrame, 4096)
	done := make(chan error, 1)
	var before, during runtime.MemStats
	runtime.GC()
	runtime.ReadMemStats(&before)
	go func() {
		_, _, err := r.ReadFrame()
		done <- err
	}()
	hdr := []byte{Magic, byte(TypePing), 0, 0x10, 0, 0} // 1 MiB announced
	if _, err := pw.Write(append(hdr, "ten bytes!"...)); err != nil {
		t.Fatal(err)
	}
	// A write returns once the reader took it: this one, once the reader
	// reads the body (its buffer for it made).
	if _, err := pw.Write([]byte("!")); err != nil {
		t.Fatal(err)
	}
	runtime.ReadMemStats(&during)
	pw.Close()
	if err := <-done; !errors.Is(err, io.ErrUnexpectedEOF) {
		t.Fatalf("ReadFrame of a cut body: %v", err)
	}
	if grew := during.TotalAlloc - before.TotalAlloc; grew >= 512<<10 {
		t.Fatalf("%d bytes allocated for a body of which 10 arrived", grew)
	}
}
