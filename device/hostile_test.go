package device

import (
	"context"
	"errors"
	"fmt"
	"net"
	"sync"
	"testing"
	"time"

	"github.com/edgegate/edgegate/egp"
	"github.com/edgegate/edgegate/internal/wait"
)

// scriptedGateway accepts connections on a loopback listener and runs
// session(n, nc, r) for the n-th one (1-based) after reading its HELLO;
// session writes the WELCOME itself. Every connection and the listener
// are closed when the test ends, and their goroutines waited for.
func scriptedGateway(t *testing.T, session func(n int, nc net.Conn, r *egp.Reader)) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	var wg sync.WaitGroup
	var mu sync.Mutex
	var open []net.Conn
	t.Cleanup(func() {
		ln.Close()
		mu.Lock()
		for _, nc := range open {
			nc.Close()
		}
		mu.Unlock()
		wg.Wait()
	})
	wg.Go(func() {
		for n := 1; ; n++ {
			nc, err := ln.Accept()
			if err != nil {
				return
			}
			mu.Lock()
			open = append(open, nc)
			mu.Unlock()
			wg.Go(func() {
				defer nc.Close()
				r := egp.NewReader(nc, egp.DefaultMaxFrame, 4096)
				if _, _, err := r.ReadFrame(); err != nil { // HELLO
					return
				}
				session(n, nc, r)
			})
		}
	})
	return ln.Addr().String()
}

func welcomeFrame(mode egp.AckMode, last uint64) []byte {
	return egp.AppendWelcome(nil, egp.Welcome{Version: egp.Version, AckMode: mode, MaxFrame: egp.DefaultMaxFrame, LastSeq: last})
}

// readData reads frames until a DATA and returns its seq.
func readData(r *egp.Reader) (uint64, error) {
	for {
		h, body, err := r.ReadFrame()
		if err != nil {
			return 0, err
		}
		if h.Type == egp.TypeData {
			seq, _, err := egp.ParseData(body)
			return seq, err
		}
	}
}

// TestAckBeforeCutFrameIsKept: the gateway acknowledges seq 1 and
// then dies in the middle of its next frame (here a PING whose body is
// cut). The ACK arrived whole, before the cut, but the reader keeps it
// back to match it with the next frame (Buffered() >= AckSize), and the
// read error drops it: the acknowledged message is resent to the next
// session and handled twice.
func TestAckBeforeCutFrameIsKept(t *testing.T) {
	resent := make(chan uint64, 16)
	addr := scriptedGateway(t, func(n int, nc net.Conn, r *egp.Reader) {
		nc.Write(welcomeFrame(egp.AckProcessed, 0))
		if n == 1 {
			seq, err := readData(r)
			if err != nil {
				return
			}
			b := egp.AppendAck(nil, seq, egp.StatusProcessed)
			ping := egp.AppendPing(nil, make([]byte, 100))
			b = append(b, ping[:30]...) // cut mid-frame
			nc.Write(b)
			return // the deferred Close ends the session
		}
		for {
			seq, err := readData(r)
			if err != nil {
				return
			}
			resent <- seq
			nc.Write(egp.AppendAck(nil, seq, egp.StatusProcessed))
		}
	})
	var mu sync.Mutex
	var acks []uint64
	c, err := Dial(context.Background(), Config{Addrs: []string{addr}, ID: "hostile-cut", Reconnect: true,
		ReconnectWait: time.Millisecond, KeepAlive: -1,
		OnAck: func(a Acked) { mu.Lock(); acks = append(acks, a.Seq); mu.Unlock() }})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if _, err := c.Send(context.Background(), []byte("m")); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := c.Flush(ctx); err != nil {
		t.Fatal(err)
	}
	st := c.Stats()
	select {
	case seq := <-resent:
		t.Errorf("seq %d, acknowledged by the first session, was resent to the second (stats: resent %d, reconnects %d)", seq, st.Resent, st.Reconnects)
	default:
	}
}

// TestPingFloodBoundsMemory: a gateway that stops reading and sends
// PINGs without end makes the client queue a PONG for each in the
// session's write buffer (the writer is stuck in Write), without bound.
// The protocol's gateway stops reading past 64 KiB of queued ACKs and
// PONGs; the client has no such limit.
func TestPingFloodBoundsMemory(t *testing.T) {
	const pings = 100
	flooded, stop := make(chan struct{}), make(chan struct{})
	addr := scriptedGateway(t, func(n int, nc net.Conn, r *egp.Reader) {
		nc.Write(welcomeFrame(egp.AckProcessed, 0))
		ping := egp.AppendPing(nil, make([]byte, 1<<20)) // max_frame each
		for range pings {
			if _, err := nc.Write(ping); err != nil {
				return
			}
		}
		close(flooded)
		<-stop // reads nothing
	})
	t.Cleanup(func() { close(stop) })
	c, err := Dial(context.Background(), Config{Addrs: []string{addr}, ID: "hostile-ping", KeepAlive: -1})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	select {
	case <-flooded:
	case <-time.After(30 * time.Second):
		t.Fatal("the client did not read the PINGs")
	}
	c.mu.Lock()
	s := c.sess
	c.mu.Unlock()
	if s == nil {
		t.Fatal("the session ended")
	}
	s.wmu.Lock()
	n := len(s.wbuf)
	s.wmu.Unlock()
	if n >= 16<<20 {
		t.Errorf("%d MiB of PONGs queued after %d PINGs of 1 MiB from a gateway that does not read", n>>20, pings)
	}
}

// TestAckNoneFlushAfterLostSession: with ack mode none, Flush waits
// until what was sent is written (unflush). When a session ends with
// bytes not written (the gateway stopped reading, then closed), they are
// lost with it, but unflush keeps counting them: Flush in the next,
// healthy session waits forever.
func TestAckNoneFlushAfterLostSession(t *testing.T) {
	cut := make(chan struct{})
	addr := scriptedGateway(t, func(n int, nc net.Conn, r *egp.Reader) {
		nc.Write(welcomeFrame(egp.AckNone, 0))
		if n == 1 {
			<-cut // read nothing, then close with unread data: RST
			return
		}
		for {
			if _, _, err := r.ReadFrame(); err != nil {
				return
			}
		}
	})
	c, err := Dial(context.Background(), Config{Addrs: []string{addr}, ID: "hostile-none", Reconnect: true,
		ReconnectWait: time.Millisecond, KeepAlive: -1})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	payload := make([]byte, 64<<10)
	for range 512 { // 32 MiB: more than the socket buffers hold
		if _, err := c.Send(context.Background(), payload); err != nil {
			t.Fatal(err)
		}
	}
	// The writer is stuck: the gateway reads nothing.
	wait.True(t, 10*time.Second, "writer stuck with bytes not written", func() bool {
		c.mu.Lock()
		defer c.mu.Unlock()
		return c.unflush > 0
	})
	close(cut)
	wait.True(t, 10*time.Second, "reconnect", func() bool { return c.Stats().Reconnects >= 1 })
	if _, err := c.Send(context.Background(), []byte("after")); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if err := c.Flush(ctx); err != nil {
		c.mu.Lock()
		u := c.unflush
		c.mu.Unlock()
		t.Errorf("Flush on a healthy session: %v; unflush still %d bytes from the lost session", err, u)
	}
}

// TestSocketTimesAckNoneWrites: with SocketTimes and ack mode none
// the writer records every write of data (conn.writes) to match it with
// its ACK, and only ACKs trim the list: without ACKs it grows with every
// write for as long as the session lasts.
func TestSocketTimesAckNoneWrites(t *testing.T) {
	if !socketTimes {
		t.Skip("no socket times here")
	}
	addr := scriptedGateway(t, func(n int, nc net.Conn, r *egp.Reader) {
		nc.Write(welcomeFrame(egp.AckNone, 0))
		for {
			if _, _, err := r.ReadFrame(); err != nil {
				return
			}
		}
	})
	c, err := Dial(context.Background(), Config{Addrs: []string{addr}, ID: "hostile-stamps", KeepAlive: -1, SocketTimes: true})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	const n = 2000
	for range n {
		if _, err := c.Send(ctx, []byte("m")); err != nil {
			t.Fatal(err)
		}
		if err := c.Flush(ctx); err != nil { // one write each
			t.Fatal(err)
		}
	}
	c.mu.Lock()
	s := c.sess
	c.mu.Unlock()
	if s == nil {
		t.Fatal("session ended")
	}
	if s.stamps == nil {
		t.Skip("kernel refused SO_TIMESTAMPNS")
	}
	s.wmu.Lock()
	w := len(s.writes)
	s.wmu.Unlock()
	if w > 16 {
		t.Errorf("%d write records kept after %d written messages that will never be acknowledged", w, n)
	}
}

// TestWelcomeSeqOverflow: a persistent-seq client (StartSeq 0) takes
// up the WELCOME's last_seq; a last_seq of 2^64-2 makes Send hand out
// 2^64-1, which no DATA may carry, and then wrap to 0.
func TestWelcomeSeqOverflow(t *testing.T) {
	gateway := func(last uint64) string {
		return scriptedGateway(t, func(n int, nc net.Conn, r *egp.Reader) {
			nc.Write(welcomeFrame(egp.AckProcessed, last))
			for {
				if _, _, err := r.ReadFrame(); err != nil {
					return
				}
			}
		})
	}
	// The last seq allowed is 2^64-2: a WELCOME of it leaves none.
	if c, err := Dial(context.Background(), Config{Addrs: []string{gateway(^uint64(0) - 1)}, ID: "hostile-wrap", PersistentSeq: true, KeepAlive: -1}); err == nil {
		c.Close()
		t.Error("a WELCOME whose last seq leaves no seq to send was taken")
	}
	c, err := Dial(context.Background(), Config{Addrs: []string{gateway(^uint64(0) - 2)}, ID: "hostile-wrap", PersistentSeq: true, KeepAlive: -1})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if seq, err := c.Send(context.Background(), []byte("m")); err != nil || seq != ^uint64(0)-1 {
		t.Fatalf("the last seq: %d, %v", seq, err)
	}
	if seq, err := c.Send(context.Background(), []byte("m")); !errors.Is(err, ErrSeqExhausted) {
		t.Fatalf("a message after the last seq: seq %d, %v", seq, err)
	}
}

// reconnectRig is a persistent-seq client that sent seqs 1 to 3 in a
// first session, which ended (the gateway acknowledged them first when
// ackFirst), and reconnected to a second one whose WELCOME says last is
// done. The second session's gateway sends each DATA seq to got and
// acknowledges it, and refuses seqs that do not follow each other.
type reconnectRig struct {
	c   *Client
	got chan uint64

	mu    sync.Mutex
	acked []uint64 // OnAck's seqs, in order
}

func newReconnectRig(t *testing.T, ackFirst bool, last uint64) *reconnectRig {
	t.Helper()
	rig := &reconnectRig{got: make(chan uint64, 16)}
	firstSeen := make(chan struct{})
	addr := scriptedGateway(t, func(n int, nc net.Conn, r *egp.Reader) {
		if n == 1 {
			nc.Write(welcomeFrame(egp.AckProcessed, 0))
			for range 3 {
				seq, err := readData(r)
				if err != nil {
					return
				}
				if ackFirst {
					nc.Write(egp.AppendAck(nil, seq, egp.StatusProcessed))
				}
			}
			close(firstSeen)
			return // without ackFirst, the ACKs are lost with the connection
		}
		nc.Write(welcomeFrame(egp.AckProcessed, last))
		var prev uint64
		for {
			seq, err := readData(r)
			if err != nil {
				return
			}
			if prev != 0 && seq != prev+1 {
				nc.Write(egp.AppendError(nil, egp.CodeProtocol, fmt.Sprintf("DATA seq %d after %d", seq, prev)))
				return
			}
			prev = seq
			rig.got <- seq
			nc.Write(egp.AppendAck(nil, seq, egp.StatusProcessed)) // at or below last: a duplicate, not handled
		}
	})
	c, err := Dial(context.Background(), Config{Addrs: []string{addr}, ID: "hostile-reconnect", PersistentSeq: true,
		Reconnect: true, ReconnectWait: time.Millisecond, KeepAlive: -1,
		OnAck: func(a Acked) { rig.mu.Lock(); rig.acked = append(rig.acked, a.Seq); rig.mu.Unlock() }})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	rig.c = c
	for range 3 {
		if _, err := c.Send(context.Background(), []byte("m")); err != nil {
			t.Fatal(err)
		}
	}
	select {
	case <-firstSeen:
	case <-time.After(10 * time.Second):
		t.Fatal("the first session saw no 3 DATA")
	}
	wait.True(t, 10*time.Second, "reconnect", func() bool { return c.Stats().Reconnects >= 1 })
	return rig
}

// TestReconnectWelcomeBeyondSent: a persistent-seq client sent seqs
// 1..3; the next session's WELCOME says 1000 is done, which this client
// never sent. Its next messages must be numbered after 1000: a gateway
// holding that record acknowledges the others as duplicates without
// handling them.
func TestReconnectWelcomeBeyondSent(t *testing.T) {
	rig := newReconnectRig(t, true, 1000)
	seq, err := rig.c.Send(context.Background(), []byte("new"))
	if err != nil {
		t.Fatal(err)
	}
	if seq <= 1000 {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		ferr := rig.c.Flush(ctx)
		t.Errorf("after a WELCOME saying 1000 is done (3 sent), Send numbered a new message %d; Flush: %v — reported acknowledged though the gateway's record makes it a duplicate", seq, ferr)
	}
}

// TestReconnectSkipsWhatTheWelcomeSaysIsDone: a persistent-seq device's
// session ends before the ACKs of seqs 1 to 3 came; the next WELCOME says
// they are done (last seq 3), or more (1000: another client under the ID
// meanwhile). They are reported acknowledged, not resent, and the session's
// seqs follow each other from its first, as the gateway requires: a
// resend of 1 to 3 before a new message numbered after 1000 left a gap.
func TestReconnectSkipsWhatTheWelcomeSaysIsDone(t *testing.T) {
	for _, last := range []uint64{3, 1000} {
		t.Run(fmt.Sprint("last seq ", last), func(t *testing.T) {
			rig := newReconnectRig(t, false, last)
			seq, err := rig.c.Send(context.Background(), []byte("new"))
			if err != nil {
				t.Fatal(err)
			}
			if seq != last+1 {
				t.Errorf("the new message numbered %d, want %d", seq, last+1)
			}
			ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
			defer cancel()
			if err := rig.c.Flush(ctx); err != nil {
				t.Fatalf("Flush: %v", err)
			}
			if s := <-rig.got; s != seq {
				t.Errorf("the second session's first DATA: seq %d, want %d", s, seq)
			}
			rig.mu.Lock()
			defer rig.mu.Unlock()
			if fmt.Sprint(rig.acked) != fmt.Sprint([]uint64{1, 2, 3, seq}) {
				t.Errorf("OnAck for %v, want 1 2 3 %d", rig.acked, seq)
			}
		})
	}
}
