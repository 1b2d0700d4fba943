//go:build linux && (amd64 || arm64)

package device

import (
	"context"
	"encoding/binary"
	"io"
	"net"
	"sync"
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

// TestSocketTimes: with SocketTimes every ACK carries when its message
// was handed to the kernel and when the kernel received the ACK, and
// both lie where the gateway saw them: the write before the gateway read
// the message, the ACK's arrival after the gateway began writing it (and
// before the client handled it; a read that brings several ACKs carries
// the time of its last bytes).
func TestSocketTimes(t *testing.T) {
	// The gateway read each message before it called seen, and writes
	// its ACK after.
	var mu sync.Mutex
	gw := map[uint64]time.Time{}
	addr := ackingGateway(t, func(seq uint64, _ []byte) {
		mu.Lock()
		gw[seq] = time.Now()
		mu.Unlock()
	})
	var acks []Acked
	var handled []time.Time
	c, err := Dial(context.Background(), Config{Addrs: []string{addr}, ID: "times-1", Window: 8, SocketTimes: true,
		OnAck: func(a Acked) { acks, handled = append(acks, a), append(handled, time.Now()) }})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	const n = 50
	for i := range n / 5 {
		if _, err := c.SendBatch(ctx, [][]byte{{1}, {2}, {3}, {4}, {byte(i)}}); err != nil {
			t.Fatal(err)
		}
	}
	if err := c.Flush(ctx); err != nil {
		t.Fatal(err)
	}
	mu.Lock()
	defer mu.Unlock()
	if len(acks) != n {
		t.Fatalf("%d ACKs, want %d", len(acks), n)
	}
	for i, a := range acks {
		g := gw[a.Seq]
		if a.Seq != uint64(i+1) || a.Written.IsZero() || a.Written.Before(a.Sent) || a.Written.After(g) {
			t.Fatalf("ACK %d: seq %d sent %v written %v; the gateway had read it at %v",
				i, a.Seq, a.Sent.Format(time.StampMicro), a.Written.Format(time.StampMicro), g.Format(time.StampMicro))
		}
		if a.Arrived.Before(g) || a.Arrived.After(handled[i]) {
			t.Fatalf("ACK %d (seq %d) arrived %v; the gateway began writing it after %v, the client handled it at %v",
				i, a.Seq, a.Arrived.Format(time.StampMicro), g.Format(time.StampMicro), handled[i].Format(time.StampMicro))
		}
	}
}
