package socket

import (
	"context"
	"math"
	"net"
	"testing"
	"time"

	"github.com/edgegate/edgegate/egp"
	"github.com/edgegate/edgegate/internal/wait"
	"github.com/edgegate/edgegate/lease"
)

// TestWelcomeComesFirst: a session is registered before its WELCOME goes
// out, which can take seconds (a persistent-seq device waits until the
// lease of its older session's last batch is released). The idle loop
// looking at it meanwhile must not PING it: the device's first frame is
// the WELCOME, as the protocol has it, and a device that gets anything
// else answers by reconnecting.
func TestWelcomeComesFirst(t *testing.T) {
	store := lease.NewMemory()
	h := start(t, Config{IdleTimeout: time.Hour}, store)
	ctx := context.Background()
	g, err := store.Acquire(ctx, "ctl-w", "an-older-batch", time.Minute, lease.Session{})
	if err != nil {
		t.Fatal(err)
	}
	conn, err := net.Dial("tcp", h.s.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	if _, err := conn.Write(egp.AppendHello(nil, egp.Hello{Version: egp.Version, Flags: egp.FlagPersistentSeq, ID: "ctl-w"})); err != nil {
		t.Fatal(err)
	}
	wait.True(t, timeout, "the session registered, its WELCOME waiting for the lease", func() bool {
		h.s.mu.Lock()
		defer h.s.mu.Unlock()
		for sess := range h.s.sessions {
			if sess.id == "ctl-w" {
				return true
			}
		}
		return false
	})
	h.s.sweepIdle()
	h.s.sweepIdle() // a second look would close a session that did not answer the first
	if err := store.Release(ctx, "ctl-w", g.Token, 0); err != nil {
		t.Fatal(err)
	}
	conn.SetReadDeadline(time.Now().Add(timeout))
	fh, _, err := egp.NewReader(conn, egp.DefaultMaxFrame, 4096).ReadFrame()
	if err != nil {
		t.Fatalf("no frame after HELLO: %v", err)
	}
	if fh.Type != egp.TypeWelcome {
		t.Fatalf("the device's first frame is %v, want WELCOME", fh.Type)
	}
}

// TestLastSeqRefused: a DATA with seq 2^64−1 is a protocol error even as
// a session's first: no seq follows it (the next would be 0, which the
// session would then take as its first again), and once handled it would
// be the controller's done record, under which every later message of a
// persistent-seq device counts as a duplicate.
func TestLastSeqRefused(t *testing.T) {
	h := start(t, Config{}, lease.NewMemory())
	d := h.dial("ctl-max", egp.FlagPersistentSeq)
	d.send(math.MaxUint64)
	d.waitError(egp.CodeProtocol)
	if got := d.acked(); len(got) != 0 {
		t.Fatalf("ACKs for %v, want none", got)
	}
}

// TestLongHelloRefused: a HELLO is read before its device is
// authenticated; one announcing a body longer than any HELLO can be is
// refused at its header, not read into a buffer the size it announces.
func TestLongHelloRefused(t *testing.T) {
	h := start(t, Config{HelloTimeout: time.Minute}, lease.NewMemory())
	conn, err := net.Dial("tcp", h.s.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	hdr := []byte{egp.Magic, byte(egp.TypeHello), 0, 0x10, 0, 0} // 1 MiB announced, none sent
	if _, err := conn.Write(hdr); err != nil {
		t.Fatal(err)
	}
	conn.SetReadDeadline(time.Now().Add(timeout))
	fh, body, err := egp.NewReader(conn, egp.DefaultMaxFrame, 4096).ReadFrame()
	if err != nil {
		t.Fatalf("no answer to a HELLO header announcing 1 MiB: %v", err)
	}
	if code, reason, _ := egp.ParseError(body); fh.Type != egp.TypeError || code != egp.CodeProtocol {
		t.Fatalf("answer %v %v %q, want ERROR protocol", fh.Type, code, reason)
	}
}
