//go:build linux && (amd64 || arm64)

package device

import (
	"encoding/binary"
	"io"
	"net"
	"syscall"
	"testing"
	"time"
)

// TestStampReaderKernelTime: the time a stampReader keeps is when the
// bytes reached the socket (during the peer's write, on loopback), not
// when they were read, and the bytes are read intact.
func TestStampReaderKernelTime(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	nc, err := net.Dial("tcp", ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer nc.Close()
	peer, err := ln.Accept()
	if err != nil {
		t.Fatal(err)
	}
	defer peer.Close()
	r := newStampReader(nc)
	if r == nil {
		t.Fatal("no stampReader for a loopback TCP connection")
	}
	for i := range 3 {
		msg := []byte{'a' + byte(i), 'b', 'c'}
		t0 := time.Now()
		if _, err := peer.Write(msg); err != nil {
			t.Fatal(err)
		}
		t1 := time.Now()
		// The reader comes late, as one waiting for a CPU would: the
		// kernel's time must not move with it.
		time.Sleep(20 * time.Millisecond)
		got := make([]byte, len(msg))
		if _, err := io.ReadFull(r, got); err != nil {
			t.Fatal(err)
		}
		if string(got) != string(msg) {
			t.Fatalf("read %q, want %q", got, msg)
		}
		if i == 0 && r.last.IsZero() {
			continue // the kernel may turn timestamps on a moment late
		}
		if r.last.Before(t0) || r.last.After(t1) {
			t.Fatalf("read %d: receive time %v, want between the write's start %v and end %v (the read was %v after)",
				i, r.last.Format(time.StampMicro), t0.Format(time.StampMicro), t1.Format(time.StampMicro), time.Since(t1).Round(time.Millisecond))
		}
	}
	peer.Close()
	if n, err := r.Read(make([]byte, 8)); n != 0 || err != io.EOF {
		t.Fatalf("after the peer closed: %d, %v; want 0, EOF", n, err)
	}
}

// TestTimestampOf: the timestamp is found among other control messages;
// truncated or inconsistent ones give none, without a panic.
func TestTimestampOf(t *testing.T) {
	msg := func(level, typ int32, data []byte) []byte {
		b := make([]byte, 16, (16+len(data)+7)&^7)
		binary.NativeEndian.PutUint64(b, uint64(16+len(data)))
		binary.NativeEndian.PutUint32(b[8:], uint32(level))
		binary.NativeEndian.PutUint32(b[12:], uint32(typ))
		b = append(b, data...)
		return b[:cap(b)]
	}
	ts := make([]byte, 16)
	binary.NativeEndian.PutUint64(ts, 1700000000)
	binary.NativeEndian.PutUint64(ts[8:], 123456789)
	want := time.Unix(1700000000, 123456789)
	other := msg(syscall.SOL_IP, 1, []byte{1, 2, 3, 4, 5})
	stamp := msg(syscall.SOL_SOCKET, syscall.SCM_TIMESTAMPNS, ts)
	for name, c := range map[string]struct {
		oob  []byte
		want time.Time
	}{
		"alone":         {stamp, want},
		"after another": {append(append([]byte(nil), other...), stamp...), want},
		"none":          {other, time.Time{}},
		"empty":         {nil, time.Time{}},
		"truncated":     {stamp[:20], time.Time{}},
		"short header":  {stamp[:10], time.Time{}},
		"length zero":   {append(make([]byte, 16), ts...), time.Time{}},
	} {
		if got := timestampOf(c.oob); !got.Equal(c.want) {
			t.Errorf("%s: %v, want %v", name, got, c.want)
		}
	}
}
