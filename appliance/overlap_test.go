package appliance_test

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"net"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/edgegate/edgegate/appliance"
	"github.com/edgegate/edgegate/device"
	"github.com/edgegate/edgegate/egp"
	"github.com/edgegate/edgegate/internal/faultproxy"
	"github.com/edgegate/edgegate/internal/redistest"
	"github.com/edgegate/edgegate/internal/wait"
	"github.com/edgegate/edgegate/parser"
)

// TestWelcomeNeverLagsAnAck: a persistent-seq device that was
// acknowledged and reconnects at once (a reboot) is told a last_seq no
// lower than what it was acknowledged: numbering its next messages from
// there, none of them is taken for a duplicate of an earlier one.
func TestWelcomeNeverLagsAnAck(t *testing.T) {
	j := newJournal(nil)
	cfg := testConfig(t, "welcome")
	cfg.Handler = j
	a := start(t, cfg)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	for round := 0; round < 5; round++ {
		var acked sync.Map
		c := dialDevice(t, device.Config{Addrs: []string{a.DeviceAddr()}, ID: "reboot", PersistentSeq: true,
			OnAck: func(ack device.Acked) { acked.Store(ack.Seq, ack.Status) }})
		first := c.Welcome().LastSeq
		if err := sendAll(ctx, c, fmt.Sprintf("r%d", round), 20); err != nil {
			t.Fatal(err)
		}
		last := first + 20
		if _, ok := acked.Load(last); !ok {
			t.Fatalf("round %d: seq %d not acknowledged after Flush", round, last)
		}
		// Rebooted: the old connection may still be open.
		c2 := dialDevice(t, device.Config{Addrs: []string{a.DeviceAddr()}, ID: "reboot", PersistentSeq: true})
		if got := c2.Welcome().LastSeq; got < last {
			t.Fatalf("round %d: WELCOME last_seq %d after seq %d was acknowledged", round, got, last)
		}
		c2.Close()
		c.Close()
	}
	if got := j.succeeded("reboot"); len(got) != 100 {
		t.Fatalf("handled %d messages, want 100: %v", len(got), got)
	}
}

// TestSeqsReusedAcrossSessionsAreStored: devices whose seqs start again
// (a lines device, a device without persistent seqs, one that resets)
// reconnect within the stream's duplicate window: their new messages are
// new records, not duplicates of the last session's.
func TestSeqsReusedAcrossSessionsAreStored(t *testing.T) {
	cfg := testConfig(t, "reuse")
	cfg.NATS.JetStream = true
	cfg.Devices.LinesListen = "127.0.0.1:0"
	a := start(t, cfg)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	for session := 0; session < 3; session++ {
		// A lines device: its lines are numbered 1, 2, 3 every time.
		conn, err := net.Dial("tcp", a.LinesAddr())
		if err != nil {
			t.Fatal(err)
		}
		r := bufio.NewReader(conn)
		fmt.Fprintf(conn, "HELLO lines-dev\n")
		for i := 1; i <= 3; i++ {
			fmt.Fprintf(conn, "{\"s\":%d,\"i\":%d}\n", session, i)
		}
		conn.SetReadDeadline(time.Now().Add(10 * time.Second))
		for n := 0; n < 4; n++ { // WELCOME and 3 ACKs
			if _, err := r.ReadString('\n'); err != nil {
				t.Fatalf("lines session %d: %v", session, err)
			}
		}
		conn.Close()
		// An EGP device without persistent seqs, and one that resets.
		for _, reset := range []bool{false, true} {
			id := map[bool]string{false: "plain-dev", true: "reset-dev"}[reset]
			c := dialDevice(t, device.Config{Addrs: []string{a.DeviceAddr()}, ID: id, PersistentSeq: reset, ResetSeq: reset})
			if err := sendAll(ctx, c, fmt.Sprintf("%s-%d", id, session), 3); err != nil {
				t.Fatal(err)
			}
			c.Close()
		}
	}
	recs := readStream(t, a, parser.StreamParsed, 27)
	per := map[string]int{}
	for _, m := range recs {
		per[m.Header.Get(parser.HeaderController)]++
	}
	for _, id := range []string{"lines-dev", "plain-dev", "reset-dev"} {
		if per[id] != 9 {
			t.Errorf("%s: %d records stored, want 9 (3 sessions of 3)", id, per[id])
		}
	}
}

// TestHalfCloseStillAcked: a device that closes its sending side right
// after writing (nc -q1, a shell script) still gets every message handled
// and acknowledged, on both listeners.
func TestHalfCloseStillAcked(t *testing.T) {
	j := newJournal(nil)
	cfg := testConfig(t, "halfclose")
	cfg.Handler = j
	cfg.Devices.LinesListen = "127.0.0.1:0"
	a := start(t, cfg)
	for i := 0; i < 10; i++ {
		id := fmt.Sprintf("nc-%d", i)
		conn, err := net.Dial("tcp", a.LinesAddr())
		if err != nil {
			t.Fatal(err)
		}
		fmt.Fprintf(conn, "HELLO %s\n{\"t\":21.5}\n{\"t\":22}\n", id)
		conn.(*net.TCPConn).CloseWrite()
		conn.SetReadDeadline(time.Now().Add(10 * time.Second))
		got, _ := io.ReadAll(conn)
		conn.Close()
		if want := "WELCOME 0\nACK 1\nACK 2\n"; string(got) != want {
			t.Fatalf("lines device %s got %q, want %q", id, got, want)
		}
	}
	for i := 0; i < 10; i++ {
		id := fmt.Sprintf("egp-%d", i)
		conn, err := net.Dial("tcp", a.DeviceAddr())
		if err != nil {
			t.Fatal(err)
		}
		var b []byte
		b = egp.AppendHello(b, egp.Hello{Version: egp.Version, ID: id})
		for seq := uint64(1); seq <= 3; seq++ {
			b = egp.AppendData(b, seq, []byte("x"))
		}
		conn.Write(b)
		conn.(*net.TCPConn).CloseWrite()
		conn.SetReadDeadline(time.Now().Add(10 * time.Second))
		r := egp.NewReader(conn, 1<<20, 4096)
		var acks []uint64
		for {
			h, body, err := r.ReadFrame()
			if err != nil {
				break
			}
			if h.Type == egp.TypeAck {
				ack, _ := egp.ParseAck(body)
				acks = append(acks, ack.Seq)
			}
		}
		conn.Close()
		if fmt.Sprint(acks) != "[1 2 3]" {
			t.Fatalf("EGP device %s got ACKs %v, want [1 2 3]", id, acks)
		}
	}
	for i := 0; i < 10; i++ {
		if n := len(j.succeeded(fmt.Sprintf("nc-%d", i))); n != 2 {
			t.Errorf("nc-%d: %d messages handled, want 2", i, n)
		}
	}
}

// TestSeqResetAcrossACutRoute: a persistent-seq device resets its seqs on
// appliance B while A, cut off from B, still serves its previous session
// with a backlog. The takeover never reaches A over NATS; the store
// enforces it: A's old session can no longer dispatch or move the done
// record, and every message of the new session B acknowledged was handled.
func TestSeqResetAcrossACutRoute(t *testing.T) {
	if testing.Short() {
		t.Skip("long: a cluster of appliances")
	}
	slow := parser.HandlerFunc(func(ctx context.Context, m *parser.Message) error {
		if strings.HasPrefix(string(m.Payload), "old") {
			select {
			case <-ctx.Done():
				return ctx.Err()
			case <-time.After(20 * time.Millisecond):
			}
		}
		return nil
	})
	j := newJournal(slow)
	var route *faultproxy.Proxy
	apps, _ := startClusterRedis(t, 2, j, func(i int, cfg *appliance.Config) {
		cfg.Lease.TTL = 2 * time.Second
		cfg.Lease.Heartbeat = 300 * time.Millisecond
		cfg.NATS.Cluster.Advertise = "127.0.0.1:1" // no route around the proxy
		cfg.NATS.Cluster.User, cfg.NATS.Cluster.Password = "route", "route-secret"
		if i == 1 {
			route = newProxy(t, cfg.NATS.Cluster.Peers[0])
			cfg.NATS.Cluster.Peers = []string{route.Addr()}
		}
	})
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	old := dialDevice(t, device.Config{Addrs: []string{apps[0].DeviceAddr()}, ID: "resetter", PersistentSeq: true, Window: 200})
	for i := 0; i < 150; i++ {
		if _, err := old.Send(ctx, []byte(fmt.Sprintf("old-%d", i))); err != nil {
			t.Fatal(err)
		}
	}
	wait.True(t, 10*time.Second, "the old session's backlog in progress", func() bool {
		return len(j.succeeded("resetter")) >= 5
	})
	route.Block()
	var mu sync.Mutex
	acked := map[uint64]egp.Status{}
	nw := dialDevice(t, device.Config{Addrs: []string{apps[1].DeviceAddr()}, ID: "resetter", PersistentSeq: true, ResetSeq: true,
		OnAck: func(a device.Acked) { mu.Lock(); acked[a.Seq] = a.Status; mu.Unlock() }})
	for i := 1; i <= 40; i++ {
		if _, err := nw.Send(ctx, []byte(fmt.Sprintf("new-%d", i))); err != nil {
			t.Fatal(err)
		}
	}
	if err := nw.Flush(ctx); err != nil {
		t.Fatal(err)
	}
	handled := map[string]bool{}
	for _, c := range j.callsOf("resetter", true) {
		handled[c.payload] = true
	}
	mu.Lock()
	defer mu.Unlock()
	for seq, st := range acked {
		if p := fmt.Sprintf("new-%d", seq); st == egp.StatusProcessed && !handled[p] {
			t.Errorf("seq %d of the new session acknowledged as processed, never handled", seq)
		}
	}
	if overlaps, _ := j.snapshot(); len(overlaps) > 0 {
		t.Errorf("overlapping calls: %v", overlaps)
	}
}

// TestRedisRestartThenANewAppliance: appliance A runs controller x's
// batch; Redis restarts empty; appliance B starts after the restart (it
// never saw the old epoch) and x's device moves to it. B must not run x
// while A's worker may still: it waits a lease from the epoch's start.
func TestRedisRestartThenANewAppliance(t *testing.T) {
	if testing.Short() {
		t.Skip("long: a cluster of appliances and a Redis restart")
	}
	slow := parser.HandlerFunc(func(ctx context.Context, m *parser.Message) error {
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(100 * time.Millisecond):
			return nil
		}
	})
	j := newJournal(slow)
	redis := redistest.Start(t)
	mk := func(name string) appliance.Config {
		cfg := testConfig(t, name)
		cfg.Lease.Redis = redis.URL()
		cfg.Lease.TTL = 2 * time.Second
		cfg.Lease.Heartbeat = 400 * time.Millisecond
		cfg.Lease.CheckInterval = 400 * time.Millisecond
		cfg.Handler = j.on(name)
		return cfg
	}
	a := start(t, mk("a"))
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	old := dialDevice(t, device.Config{Addrs: []string{a.DeviceAddr()}, ID: "x", Window: 100})
	for i := 0; i < 60; i++ {
		if _, err := old.Send(ctx, []byte(fmt.Sprintf("old-%d", i))); err != nil {
			t.Fatal(err)
		}
	}
	wait.True(t, 10*time.Second, "x running on a", func() bool { return len(j.callsOf("x", false)) >= 2 })
	redis.Restart()
	b := start(t, mk("b"))
	nw := dialDevice(t, device.Config{Addrs: []string{b.DeviceAddr()}, ID: "x", Reconnect: true})
	for i := 0; i < 5; i++ {
		if _, err := nw.Send(ctx, []byte(fmt.Sprintf("new-%d", i))); err != nil {
			t.Fatal(err)
		}
	}
	if err := nw.Flush(ctx); err != nil {
		t.Fatal(err)
	}
	if overlaps, _ := j.snapshot(); len(overlaps) > 0 {
		t.Fatalf("x ran on two appliances at once: %v", overlaps)
	}
}
