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

// silentGateway accepts EGP/1 sessions, answers HELLO with WELCOME and then
// never sends another byte, as a gateway that lost power mid-session
// looks to its devices. It reports the type and seq of every frame read.
type silentGateway struct {
	ln     net.Listener
	frames chan egp.Header
	data   chan uint64
	pong   bool // answer PINGs (set before the first session)
}

func newSilentGateway(t *testing.T) *silentGateway {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	g := &silentGateway{ln: ln, frames: make(chan egp.Header, 64), data: make(chan uint64, 64)}
	t.Cleanup(func() { ln.Close() })
	go func() {
		for {
			nc, err := ln.Accept()
			if err != nil {
				return
			}
			go func() {
				defer nc.Close()
				r, ok := welcome(nc)
				if !ok {
					return
				}
				for {
					h, body, err := r.ReadFrame()
					if err != nil {
						return
					}
					select {
					case g.frames <- h:
					default:
					}
					if h.Type == egp.TypePing && g.pong {
						nc.Write(egp.AppendPong(nil, body))
					}
					if h.Type == egp.TypeData {
						seq, _, _ := egp.ParseData(body)
						select {
						case g.data <- seq:
						default:
						}
					}
				}
			}()
		}
	}()
	return g
}

// welcome reads a device's HELLO from nc and answers WELCOME, as a
// gateway does; it returns the reader for what follows.
func welcome(nc net.Conn) (*egp.Reader, bool) {
	r := egp.NewReader(nc, egp.DefaultMaxFrame, 4096)
	if _, _, err := r.ReadFrame(); err != nil { // HELLO
		return nil, false
	}
	_, err := nc.Write(egp.AppendWelcome(nil, egp.Welcome{Version: egp.Version, AckMode: egp.AckProcessed, MaxFrame: egp.DefaultMaxFrame}))
	return r, err == nil
}

// TestKeepAliveDetectsVanishedGateway: a gateway that stops answering
// without closing the connection is sent a PING after KeepAlive and given
// up after 2×KeepAlive; the client goes on with the next address and
// resends what was not acknowledged.
func TestKeepAliveDetectsVanishedGateway(t *testing.T) {
	first, second := newSilentGateway(t), newSilentGateway(t)
	ka := 200 * time.Millisecond
	c, err := Dial(context.Background(), Config{
		Addrs: []string{first.ln.Addr().String(), second.ln.Addr().String()},
		ID:    "ka-1", Reconnect: true, KeepAlive: ka,
	})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	seq, err := c.Send(context.Background(), []byte("m"))
	if err != nil {
		t.Fatal(err)
	}
	deadline := time.After(10 * time.Second)
	pinged := false
	for !pinged {
		select {
		case h := <-first.frames:
			pinged = h.Type == egp.TypePing
		case <-deadline:
			t.Fatal("no PING to a silent gateway")
		}
	}
	for {
		select {
		case got := <-second.data:
			if got != seq {
				t.Fatalf("resent seq %d, want %d", got, seq)
			}
			if st := c.Stats(); st.Reconnects != 1 || st.Resent != 1 {
				t.Fatalf("stats %+v, want 1 reconnect and 1 resent", st)
			}
			return
		case <-deadline:
			t.Fatalf("the client did not move to the next gateway (stats %+v)", c.Stats())
		}
	}
}

// TestKeepAliveGatewayThatAnswers: a gateway that answers PINGs keeps the
// session however long it holds back ACKs.
func TestKeepAliveGatewayThatAnswers(t *testing.T) {
	g := newSilentGateway(t)
	g.pong = true
	ka := 400 * time.Millisecond
	c, err := Dial(context.Background(), Config{Addrs: []string{g.ln.Addr().String()}, ID: "ka-2", Reconnect: true, KeepAlive: ka})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if _, err := c.Send(context.Background(), []byte("m")); err != nil {
		t.Fatal(err)
	}
	deadline := time.After(10 * time.Second)
	for pings := 0; pings < 4; { // 4 PINGs answered: at least 4×KeepAlive without an ACK
		select {
		case h := <-g.frames:
			if h.Type == egp.TypePing {
				pings++
			}
		case <-deadline:
			t.Fatalf("%d PINGs within 10s with KeepAlive %v", pings, ka)
		}
	}
	if st := c.Stats(); st.Reconnects != 0 {
		t.Fatalf("%d reconnects to a gateway that answers PINGs", st.Reconnects)
	}
}

// TestSendBatchLargerThanWindow: a batch of more messages than the window
// goes out in order, with consecutive seqs and the payloads as they were
// when SendBatch was called, as ACKs make room; every one is acknowledged
// in seq order and SendBatch returns the last seq.
// ackingGateway serves one device on a loopback listener, closed when
// the test ends: it says WELCOME and acknowledges every DATA frame as
// processed, right after calling seen with it. It returns the address.
func ackingGateway(t *testing.T, seen func(seq uint64, payload []byte)) string {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close() })
	go func() {
		nc, err := ln.Accept()
		if err != nil {
			return
		}
		defer nc.Close()
		r, ok := welcome(nc)
		if !ok {
			return
		}
		for {
			h, body, err := r.ReadFrame()
			if err != nil || h.Type != egp.TypeData {
				return
			}
			seq, p, _ := egp.ParseData(body)
			seen(seq, p)
			if _, err := nc.Write(egp.AppendAck(nil, seq, egp.StatusProcessed)); err != nil {
				return
			}
		}
	}()
	return ln.Addr().String()
}

func TestSendBatchLargerThanWindow(t *testing.T) {
	type frame struct {
		seq     uint64
		payload string
	}
	got := make(chan frame, 64)
	addr := ackingGateway(t, func(seq uint64, p []byte) { got <- frame{seq, string(p)} })
	var acked []uint64
	c, err := Dial(context.Background(), Config{Addrs: []string{addr}, ID: "batch-1", Window: 3,
		OnAck: func(a Acked) { acked = append(acked, a.Seq) }})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	payloads := make([][]byte, 10)
	for i := range payloads {
		payloads[i] = []byte{byte('a' + i)}
	}
	last, err := c.SendBatch(ctx, payloads)
	if err != nil || last != 10 {
		t.Fatalf("SendBatch = %d, %v; want 10", last, err)
	}
	for i := range payloads {
		payloads[i][0] = '!' // copied: what was sent must not change
	}
	if err := c.Flush(ctx); err != nil {
		t.Fatal(err)
	}
	for i := range 10 {
		f := <-got
		if want := (frame{uint64(i + 1), string(rune('a' + i))}); f != want {
			t.Fatalf("frame %d: %+v, want %+v", i, f, want)
		}
	}
	if len(acked) != 10 {
		t.Fatalf("%d ACK callbacks, want 10: %v", len(acked), acked)
	}
	for i, s := range acked {
		if s != uint64(i+1) {
			t.Fatalf("ACK callbacks in order %v", acked)
		}
	}
	if st := c.Stats(); st.Sent != 10 || st.Acked != 10 || st.OrderErrors != 0 {
		t.Errorf("stats %+v", st)
	}
	c.Close()
	if seq, err := c.SendBatch(ctx, payloads[:2]); !errors.Is(err, ErrClosed) || seq != 0 {
		t.Errorf("SendBatch on a closed client = %d, %v; want 0, ErrClosed", seq, err)
	}
}

// TestCloseDuringReconnect: Close while a reconnect waits for its
// WELCOME (a persistent-seq session waits for its older lease) returns,
// also when the WELCOME comes after it: the session it opens has nobody
// else to close it.
func TestCloseDuringReconnect(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	secondHello := make(chan struct{})
	release := make(chan struct{}) // the second WELCOME goes out
	var conns sync.WaitGroup
	var mu sync.Mutex
	var open []net.Conn
	defer conns.Wait()
	defer func() { // a client that hangs leaves its session open
		mu.Lock()
		defer mu.Unlock()
		for _, nc := range open {
			nc.Close()
		}
	}()
	defer ln.Close()
	conns.Go(func() {
		for n := 1; n <= 2; n++ {
			nc, err := ln.Accept()
			if err != nil {
				return
			}
			mu.Lock()
			open = append(open, nc)
			mu.Unlock()
			conns.Go(func() {
				defer nc.Close()
				r := egp.NewReader(nc, egp.DefaultMaxFrame, 4096)
				if _, _, err := r.ReadFrame(); err != nil {
					return
				}
				welcome := egp.AppendWelcome(nil, egp.Welcome{Version: egp.Version, AckMode: egp.AckProcessed, MaxFrame: egp.DefaultMaxFrame})
				if n == 1 {
					nc.Write(welcome)
					return // cut the first session: the client reconnects
				}
				close(secondHello)
				<-release
				nc.Write(welcome)
				for { // a live session: PINGs answered
					h, body, err := r.ReadFrame()
					if err != nil {
						return
					}
					if h.Type == egp.TypePing {
						nc.Write(egp.AppendPong(nil, body))
					}
				}
			})
		}
	})
	c, err := Dial(context.Background(), Config{Addrs: []string{ln.Addr().String()}, ID: "ctl", Reconnect: true,
		ReconnectWait: time.Millisecond, KeepAlive: 100 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	select {
	case <-secondHello:
	case <-time.After(10 * time.Second):
		t.Fatal("no reconnect")
	}
	closed := make(chan struct{})
	go func() { c.Close(); close(closed) }()
	wait.For(t, 5*time.Second, func() error {
		if _, err := c.Send(context.Background(), []byte("x")); !errors.Is(err, ErrClosed) {
			return fmt.Errorf("Send: %v, want ErrClosed once Close began", err)
		}
		return nil
	})
	close(release)
	select {
	case <-closed:
	case <-time.After(5 * time.Second):
		t.Fatal("Close still blocked 5s after it was called during a reconnect")
	}
}
