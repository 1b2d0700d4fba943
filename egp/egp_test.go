package egp

import (
	"bufio"
	"bytes"
	"errors"
	"io"
	"runtime"
	"strings"
	"testing"

	"pgregory.net/rapid"
)

func TestRoundTrip(t *testing.T) {
	hello := Hello{Version: Version, Flags: FlagPersistentSeq, ID: "imei:356938035643809", Token: []byte("s3cret")}
	welcome := Welcome{Version: Version, AckMode: AckProcessed, MaxFrame: 1 << 20, LastSeq: 1<<63 + 5}
	b := AppendHello(nil, hello)
	b = AppendWelcome(b, welcome)
	b = AppendData(b, 42, []byte("payload"))
	b = AppendData(b, 43, nil)
	b = AppendAck(b, 42, StatusDeadLettered)
	b = AppendPing(b, []byte{1, 2})
	b = AppendPong(b, nil)
	b = AppendError(b, CodeTakenOver, "newer session")
	r := NewReader(bytes.NewReader(b), 0, 0)
	next := func(want Type) []byte {
		t.Helper()
		h, body, err := r.ReadFrame()
		if err != nil || h.Type != want {
			t.Fatalf("got %v %v, want %v", h.Type, err, want)
		}
		return append([]byte(nil), body...)
	}
	if got, err := ParseHello(next(TypeHello)); err != nil || got.ID != hello.ID || got.Flags != hello.Flags || string(got.Token) != "s3cret" {
		t.Fatalf("hello %+v, %v", got, err)
	}
	if got, err := ParseWelcome(next(TypeWelcome)); err != nil || got != welcome {
		t.Fatalf("welcome %+v, %v", got, err)
	}
	if seq, p, err := ParseData(next(TypeData)); err != nil || seq != 42 || string(p) != "payload" {
		t.Fatalf("data %d %q %v", seq, p, err)
	}
	if seq, p, err := ParseData(next(TypeData)); err != nil || seq != 43 || len(p) != 0 {
		t.Fatalf("empty data %d %q %v", seq, p, err)
	}
	if got, err := ParseAck(next(TypeAck)); err != nil || got != (Ack{42, StatusDeadLettered}) {
		t.Fatalf("ack %+v %v", got, err)
	}
	if got := next(TypePing); !bytes.Equal(got, []byte{1, 2}) {
		t.Fatalf("ping %v", got)
	}
	next(TypePong)
	if code, reason, err := ParseError(next(TypeError)); err != nil || code != CodeTakenOver || reason != "newer session" {
		t.Fatalf("error %d %q %v", code, reason, err)
	}
	if _, _, err := r.ReadFrame(); err != io.EOF {
		t.Fatalf("after the last frame: %v, want io.EOF", err)
	}
}

func TestReaderErrors(t *testing.T) {
	hdr := func(magic, typ byte, n uint32) []byte {
		return []byte{magic, typ, byte(n >> 24), byte(n >> 16), byte(n >> 8), byte(n)}
	}
	tests := []struct {
		name string
		in   []byte
		code Code  // 0: not an *Error
		err  error // when code is 0
	}{
		{"bad magic", hdr(0x00, 1, 0), CodeProtocol, nil},
		{"unknown type", hdr(Magic, 0x05, 0), CodeProtocol, nil},
		{"type zero", hdr(Magic, 0x00, 0), CodeProtocol, nil},
		{"over max", hdr(Magic, byte(TypeData), 1025), CodeTooLarge, nil},
		{"4 GiB", hdr(Magic, byte(TypeData), 0xFFFFFFFF), CodeTooLarge, nil},
		{"truncated header", []byte{Magic, 1, 0}, 0, io.ErrUnexpectedEOF},
		{"truncated body", append(hdr(Magic, byte(TypeData), 10), 1, 2, 3), 0, io.ErrUnexpectedEOF},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r := NewReader(bytes.NewReader(tt.in), 1024, 0)
			_, _, err := r.ReadFrame()
			if tt.code != 0 {
				var pe *Error
				if !errors.As(err, &pe) || pe.Code != tt.code {
					t.Fatalf("got %v, want an *Error with code %d", err, tt.code)
				}
				return
			}
			if !errors.Is(err, tt.err) {
				t.Fatalf("got %v, want %v", err, tt.err)
			}
		})
	}
}

// TestOversizeAllocatesNothing: a header claiming a huge body is refused
// before any body memory is allocated (only the error is).
func TestOversizeAllocatesNothing(t *testing.T) {
	in := []byte{Magic, byte(TypeData), 0xFF, 0xFF, 0xFF, 0xFF}
	br := bytes.NewReader(in)
	r := NewReader(br, 1<<20, 16)
	var before, after runtime.MemStats
	runtime.ReadMemStats(&before)
	const runs = 100
	for i := 0; i < runs; i++ {
		br.Reset(in)
		r.rd = br
		if _, err := r.Next(); ErrorCode(err) != CodeTooLarge {
			t.Fatalf("got %v", err)
		}
	}
	runtime.ReadMemStats(&after)
	if perRun := (after.TotalAlloc - before.TotalAlloc) / runs; perRun > 1024 {
		t.Fatalf("%d bytes allocated per refused header, want under 1 KiB (the body is never allocated)", perRun)
	}
}

func TestParseMalformed(t *testing.T) {
	if _, err := ParseHello([]byte{1, 0}); ErrorCode(err) != CodeProtocol {
		t.Errorf("short HELLO: %v", err)
	}
	if _, err := ParseHello([]byte{1, 0, 5, 'a'}); ErrorCode(err) != CodeProtocol {
		t.Errorf("id_len beyond body: %v", err)
	}
	if _, err := ParseHello([]byte{2, 0, 1, 'a'}); ErrorCode(err) != CodeVersion {
		t.Errorf("version 2: %v", err)
	}
	if _, err := ParseWelcome(make([]byte, 13)); err == nil {
		t.Error("short WELCOME accepted")
	}
	if _, err := ParseAck(make([]byte, 10)); err == nil {
		t.Error("long ACK accepted")
	}
	if _, _, err := ParseData(make([]byte, 7)); err == nil {
		t.Error("short DATA accepted")
	}
	if _, _, err := ParseError([]byte{1}); err == nil {
		t.Error("short ERROR accepted")
	}
}

func TestValidID(t *testing.T) {
	tests := []struct {
		id string
		ok bool
	}{
		{"imei:356938035643809", true},
		{"00:1A:2B:3C:4D:5E", true},
		{"plant-7_line-2", true},
		{strings.Repeat("a", 128), true},
		{strings.Repeat("a", 129), false},
		{"", false},
		{"a.b", false},
		{"a*", false},
		{"a>", false},
		{"a b", false},
		{"a\tb", false},
		{"ü", false},
		{"a/b", false},
	}
	for _, tt := range tests {
		err := ValidID(tt.id)
		if (err == nil) != tt.ok {
			t.Errorf("ValidID(%q) = %v, want ok %v", tt.id, err, tt.ok)
		}
		if err != nil && ErrorCode(err) != CodeBadID {
			t.Errorf("ValidID(%q): code %d, want %d", tt.id, ErrorCode(err), CodeBadID)
		}
	}
}

func TestLines(t *testing.T) {
	r := NewLineReader(strings.NewReader("HELLO dev-1 tok\r\nfirst\n\nlast"), 16)
	line, err := r.ReadLine()
	if err != nil {
		t.Fatal(err)
	}
	id, tok, err := ParseLinesHello(line)
	if err != nil || id != "dev-1" || string(tok) != "tok" {
		t.Fatalf("hello %q %q %v", id, tok, err)
	}
	for _, want := range []string{"first", ""} {
		if l, err := r.ReadLine(); err != nil || string(l) != want {
			t.Fatalf("line %q %v, want %q", l, err, want)
		}
	}
	if _, err := r.ReadLine(); err != io.ErrUnexpectedEOF {
		t.Fatalf("unterminated last line: %v, want io.ErrUnexpectedEOF", err)
	}

	long := NewLineReader(strings.NewReader(strings.Repeat("x", 10000)+"\n"), 100)
	if _, err := long.ReadLine(); ErrorCode(err) != CodeTooLarge {
		t.Fatalf("long line: %v, want CodeTooLarge", err)
	}
	for _, bad := range []string{"", "HELO x", "HELLO", "HELLO a b c", "HELLO a.b"} {
		if _, _, err := ParseLinesHello([]byte(bad)); err == nil {
			t.Errorf("ParseLinesHello(%q) accepted", bad)
		}
	}
	if got := string(AppendLinesAck(nil, 7, StatusDeadLettered)); got != "ACK 7 dead\n" {
		t.Errorf("dead ack %q", got)
	}
	if got := string(AppendLinesError(nil, CodeBadID, "bad\nid")); got != "ERROR 9 bad id\n" {
		t.Errorf("error line %q", got)
	}
}

// TestFramesProperty: any sequence of frames decodes to itself.
func TestFramesProperty(t *testing.T) {
	rapid.Check(t, func(t *rapid.T) {
		frames, b := drawFrames(t, 200, 50)
		r := NewReader(bufio.NewReader(bytes.NewReader(b)), 256, 0)
		for i, f := range frames {
			h, body, err := r.ReadFrame()
			if err != nil || h.Type != TypeData {
				t.Fatalf("frame %d: %v %v", i, h, err)
			}
			seq, p, _ := ParseData(body)
			if seq != f.seq || !bytes.Equal(p, f.payload) {
				t.Fatalf("frame %d: got %d %q, want %d %q", i, seq, p, f.seq, f.payload)
			}
		}
		if _, _, err := r.ReadFrame(); err != io.EOF {
			t.Fatalf("trailing: %v", err)
		}
	})
}
