package appliance_test

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"math"
	"net"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/nats-io/nkeys"

	"github.com/edgegate/edgegate/appliance"
	"github.com/edgegate/edgegate/coord"
	"github.com/edgegate/edgegate/device"
	"github.com/edgegate/edgegate/embed"
	"github.com/edgegate/edgegate/internal/wait"
	"github.com/edgegate/edgegate/lease"
	"github.com/edgegate/edgegate/parser"
)

// The tests of this file are attacks by a client of the NATS port (or a
// server on the LAN) against coordination, each answered by a rule of
// docs/design.md, "Trust and overlapping faults", and docs/security.md.

// trustConfig is testConfig with a NATS client port on loopback and
// JetStream on.
func trustConfig(t *testing.T, name string) appliance.Config {
	t.Helper()
	cfg := testConfig(t, name)
	cfg.NATS.Listen = "127.0.0.1:0"
	cfg.NATS.JetStream = true
	return cfg
}

// dialClient connects to the appliance's client port as an outside client
// would; opts may carry credentials.
func dialClient(t *testing.T, a *appliance.Appliance, opts ...nats.Option) *nats.Conn {
	t.Helper()
	nc, err := nats.Connect(a.NATSURL(), append([]nats.Option{nats.Timeout(5 * time.Second)}, opts...)...)
	if err != nil {
		t.Fatalf("client: %v", err)
	}
	t.Cleanup(nc.Close)
	return nc
}

// askStatus requests edgegate.status on nc, as `edgegate status` does, and
// returns the answers of the first request that heard want of them; it
// fails the test when none did within 30s.
func askStatus(t *testing.T, nc *nats.Conn, want int) []coord.Status {
	t.Helper()
	// A request gathers answers for a while; another is made until one
	// heard want of them (a loaded machine may answer one late).
	var out []coord.Status
	wait.For(t, 30*time.Second, func() error {
		out = askStatusOnce(t, nc, want, 3*time.Second)
		if len(out) < want {
			return fmt.Errorf("edgegate.status: %d answers, want %d", len(out), want)
		}
		return nil
	})
	return out
}

func askStatusOnce(t *testing.T, nc *nats.Conn, want int, d time.Duration) []coord.Status {
	t.Helper()
	inbox := nc.NewRespInbox()
	sub, err := nc.SubscribeSync(inbox)
	if err != nil {
		t.Fatal(err)
	}
	defer sub.Unsubscribe()
	if err := nc.PublishRequest(coord.SubjectStatus, inbox, nil); err != nil {
		t.Fatal(err)
	}
	var out []coord.Status
	deadline := time.Now().Add(d)
	for len(out) < want {
		m, err := sub.NextMsg(time.Until(deadline))
		if err != nil {
			break
		}
		var st coord.Status
		if err := json.Unmarshal(m.Data, &st); err == nil {
			out = append(out, st)
		}
	}
	return out
}

// socketID returns the ID of a's socket, as `edgegate status` shows it.
func socketID(t *testing.T, nc *nats.Conn) string {
	t.Helper()
	for _, st := range askStatus(t, nc, 2) {
		if st.Kind == "socket" {
			return st.ID
		}
	}
	t.Fatal("no socket answered edgegate.status")
	return ""
}

// stays reports whether cond stays false for d (polled): for what must
// not happen after an attack, where nothing tells when it would have.
func stays(d time.Duration, cond func() bool) bool {
	err := wait.Until(d, func() error {
		if cond() {
			return nil
		}
		return errors.New("not yet")
	})
	return err != nil // cond never held within d
}

// TestAttackClientPort: the client port listens on loopback by default,
// a network address without client authentication is refused at start,
// and a client (here without any credentials) can read the streams but
// not purge, delete, reconfigure or write them: intake goes on.
func TestAttackClientPort(t *testing.T) {
	if testing.Short() {
		t.Skip("long")
	}
	t.Run("defaults", func(t *testing.T) {
		host, _, err := net.SplitHostPort(appliance.DefaultConfig().NATS.Listen)
		if ip := net.ParseIP(host); err != nil || ip == nil || !ip.IsLoopback() {
			t.Errorf("default nats.listen %q: want a loopback address", appliance.DefaultConfig().NATS.Listen)
		}
		user, _ := nkeys.CreateUser()
		pub, _ := user.PublicKey()
		for _, tt := range []struct {
			name   string
			mutate func(c *appliance.NATSConfig)
			want   string // in the error; "" = accepted
		}{
			{"any address, no authentication", func(c *appliance.NATSConfig) { c.Listen = "0.0.0.0:4222" }, "nats.user"},
			{"LAN address, no authentication", func(c *appliance.NATSConfig) { c.Listen = "192.0.2.10:4222" }, "nats.nkeys"},
			{"TLS without client certificates", func(c *appliance.NATSConfig) {
				c.Listen, c.TLSCert, c.TLSKey = "0.0.0.0:4222", "/etc/edgegate/nats.pem", "/etc/edgegate/nats.key"
			}, "nats.tls_client_ca"},
			{"password", func(c *appliance.NATSConfig) { c.Listen, c.User, c.Password = "0.0.0.0:4222", "consumer", "s3cret" }, ""},
			{"nkeys", func(c *appliance.NATSConfig) { c.Listen, c.NKeys = "0.0.0.0:4222", []string{pub} }, ""},
			{"client certificates", func(c *appliance.NATSConfig) {
				c.Listen, c.TLSCert, c.TLSKey, c.TLSClientCA = "0.0.0.0:4222", "/etc/edgegate/nats.pem", "/etc/edgegate/nats.key", "/etc/edgegate/ca.pem"
			}, ""},
			{"loopback", func(c *appliance.NATSConfig) { c.Listen = "127.0.0.1:4222" }, ""},
			{"IPv6 loopback", func(c *appliance.NATSConfig) { c.Listen = "[::1]:4222" }, ""},
			{"in-process only", func(c *appliance.NATSConfig) { c.Listen = "" }, ""},
		} {
			cfg := appliance.DefaultConfig()
			tt.mutate(&cfg.NATS)
			err := cfg.Validate()
			switch {
			case tt.want == "" && err != nil:
				t.Errorf("%s: refused: %v", tt.name, err)
			case tt.want != "" && err == nil:
				t.Errorf("%s: accepted, want a refusal naming %s", tt.name, tt.want)
			case tt.want != "" && !strings.Contains(err.Error(), tt.want):
				t.Errorf("%s: %v, want it to name %s", tt.name, err, tt.want)
			}
		}
	})

	t.Run("streams", func(t *testing.T) {
		a := start(t, trustConfig(t, "client-port"))
		dev := dialDevice(t, device.Config{Addrs: []string{a.DeviceAddr()}, ID: "meter-1"})
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		if err := sendAll(ctx, dev, "meter-1", 5); err != nil {
			t.Fatal(err)
		}
		readStream(t, a, parser.StreamParsed, 5)

		nc := dialClient(t, a, nats.ErrorHandler(func(*nats.Conn, *nats.Subscription, error) {})) // no credentials at all
		js, _ := jetstream.New(nc)
		s, err := js.Stream(ctx, parser.StreamParsed)
		if err != nil {
			t.Fatalf("a client cannot read the stream's info: %v", err)
		}
		if _, err := s.GetMsg(ctx, 1); err != nil {
			t.Errorf("a client cannot read a record: %v", err)
		}
		forged := func(subject string) *nats.Msg {
			m := nats.NewMsg(subject)
			m.Header.Set(jetstream.MsgIDHeader, "meter-1:6")
			m.Header.Set(parser.HeaderController, "meter-1")
			m.Header.Set(parser.HeaderSeq, "6")
			m.Header.Set(parser.HeaderFence, strconv.FormatUint(math.MaxUint64, 10))
			m.Data = []byte("forged")
			return m
		}
		var wg sync.WaitGroup
		for _, at := range []struct {
			name string
			do   func(context.Context) error
		}{
			{"purge the stream", func(ctx context.Context) error { return s.Purge(ctx) }},
			{"delete a record", func(ctx context.Context) error { return s.DeleteMsg(ctx, 1) }},
			{"delete the stream", func(ctx context.Context) error { return js.DeleteStream(ctx, parser.StreamDead) }},
			{"change the stream", func(ctx context.Context) error {
				_, err := js.UpdateStream(ctx, jetstream.StreamConfig{Name: parser.StreamParsed, Subjects: []string{"elsewhere.>"}})
				return err
			}},
			{"create a stream", func(ctx context.Context) error {
				_, err := js.CreateStream(ctx, jetstream.StreamConfig{Name: "EVIL", Subjects: []string{"evil.>"}})
				return err
			}},
			{"store a forged record", func(ctx context.Context) error {
				_, err := js.PublishMsg(ctx, forged(coord.ParsedSubject("meter-1")))
				return err
			}},
			{"store a forged dead letter", func(ctx context.Context) error {
				_, err := js.PublishMsg(ctx, forged(coord.DeadSubject("meter-1")))
				return err
			}},
		} {
			wg.Go(func() {
				actx, cancel := context.WithTimeout(ctx, 2*time.Second)
				defer cancel()
				if err := at.do(actx); err == nil {
					t.Errorf("a client could %s", at.name)
				}
			})
		}
		wg.Wait()

		// The appliance's own view: both streams as they were.
		own, err := a.Connect("test-admin")
		if err != nil {
			t.Fatal(err)
		}
		defer own.Close()
		ojs, _ := jetstream.New(own)
		// A push consumer that delivers records (JSON objects: a valid
		// purge request) to the JetStream API, with a subscription there
		// for interest if the login may make one.
		purge := "$JS.API.STREAM.PURGE." + parser.StreamParsed
		nc.SubscribeSync(purge)
		if _, err := s.CreateOrUpdateConsumer(ctx, jetstream.ConsumerConfig{Durable: "to-api", DeliverSubject: purge, AckPolicy: jetstream.AckNonePolicy}); err != nil {
			t.Logf("consumer delivering to %s: %v", purge, err)
		}
		nc.Flush()
		ost, _ := ojs.Stream(ctx, parser.StreamParsed)
		stays(time.Second, func() bool {
			n, _, err := recordCount(ctx, ost)
			return err != nil || n < 5
		})
		for _, name := range []string{parser.StreamParsed, parser.StreamDead} {
			st, err := ojs.Stream(ctx, name)
			if err != nil {
				t.Fatalf("stream %s: %v", name, err)
			}
			n, info, err := recordCount(ctx, st)
			if err != nil {
				t.Fatal(err)
			}
			if want := map[string]uint64{parser.StreamParsed: 5, parser.StreamDead: 0}[name]; n != want || info.State.FirstSeq > 1 {
				t.Errorf("stream %s holds %d records from seq %d after the attacks, want %d from 1", name, n, info.State.FirstSeq, want)
			}
			for _, subject := range info.Config.Subjects {
				if !strings.HasPrefix(subject, "edgegate.") {
					t.Errorf("stream %s subjects %v after the attacks", name, info.Config.Subjects)
				}
			}
		}
		// Intake goes on, and stores what the device sent.
		if err := sendAll(ctx, dev, "meter-1", 5); err != nil {
			t.Fatal(err)
		}
		recs := readStream(t, a, parser.StreamParsed, 10)
		for i, r := range recs {
			if f := r.Header.Get(parser.HeaderFence); f == strconv.FormatUint(math.MaxUint64, 10) || string(r.Data) == "forged" {
				t.Errorf("record %d is the forged one", i+1)
			}
		}
	})
}

// TestAttackForgedPool: a client that announces a parser pool of the
// appliance's own name with 100,000 free workers gets no assignment, and
// records it publishes with the message IDs of the device's coming
// messages are not stored: the real pool handles every message and the
// stream holds what the device sent. It holds for a client with the
// configured login (nats.user) and through a push consumer that delivers
// a record to the ready subject.
func TestAttackForgedPool(t *testing.T) {
	if testing.Short() {
		t.Skip("long")
	}
	cfg := trustConfig(t, "pool-victim")
	cfg.NATS.User, cfg.NATS.Password = "consumer", "s3cret-pass"
	a := start(t, cfg)
	nc := dialClient(t, a, nats.UserInfo("consumer", "s3cret-pass"), nats.ErrorHandler(func(*nats.Conn, *nats.Subscription, error) {}))
	const id, n = "meter-2", 50

	var assigned atomic.Int64
	if _, err := nc.Subscribe(coord.PoolSubject("forged"), func(m *nats.Msg) {
		assigned.Add(1)
		as, err := coord.DecodeAssign(m.Data)
		if err != nil || m.Reply == "" {
			return
		}
		nc.Publish(m.Reply, coord.AppendAnswer(nil, &coord.Answer{Controller: as.Controller, Fence: as.Token.Fence, Accepted: true, Pool: "forged"}))
		o := coord.Outcome{Controller: as.Controller, Fence: as.Token.Fence, Released: true, Statuses: make([]byte, len(as.Msgs))}
		if len(as.Msgs) > 0 {
			o.Done = as.Msgs[len(as.Msgs)-1].Seq
		}
		nc.Publish(m.Reply, coord.AppendOutcome(nil, &o))
	}); err != nil {
		t.Fatal(err)
	}
	ready, _ := json.Marshal(coord.Ready{Pool: "forged", Appliance: cfg.Name, Subject: coord.PoolSubject("forged"), Free: 100000, Workers: 100000})
	stop := make(chan struct{})
	var wg sync.WaitGroup
	wg.Go(func() {
		t := time.NewTicker(20 * time.Millisecond)
		defer t.Stop()
		for {
			nc.Publish(coord.SubjectReady, ready)
			select {
			case <-stop:
				return
			case <-t.C:
			}
		}
	})
	defer func() { close(stop); wg.Wait() }()
	for seq := 1; seq <= n; seq++ {
		m := nats.NewMsg(coord.ParsedSubject(id))
		m.Header.Set(jetstream.MsgIDHeader, fmt.Sprintf("%s:%d", id, seq))
		m.Header.Set(parser.HeaderFence, strconv.FormatUint(math.MaxUint64, 10))
		m.Data = []byte("forged")
		nc.PublishMsg(m)
	}
	nc.Flush()
	// Code that takes the announcement knows the forged pool within
	// milliseconds.
	stays(time.Second, func() bool { return a.SocketStats().Pools > 1 })

	dev := dialDevice(t, device.Config{Addrs: []string{a.DeviceAddr()}, ID: id})
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if err := sendAll(ctx, dev, id, n); err != nil {
		t.Fatal(err)
	}
	if k := assigned.Load(); k > 0 {
		t.Errorf("the forged pool got %d assignments", k)
	}
	if got := a.ParserStats().Messages; got < n {
		t.Errorf("the appliance's parser pool handled %d messages, want %d", got, n)
	}
	recs := readStream(t, a, parser.StreamParsed, n)
	for i, r := range recs {
		want := fmt.Sprintf(`{"c":%q,"i":%d}`, id, i)
		if string(r.Data) != want || r.Header.Get(parser.HeaderSeq) != strconv.Itoa(i+1) {
			t.Errorf("record %d: %q seq %s, want %q seq %d", i+1, r.Data, r.Header.Get(parser.HeaderSeq), want, i+1)
		}
	}

	t.Run("through a push consumer", func(t *testing.T) {
		// A device of the attacker's sends a ready announcement as its
		// payload; a consumer of the stream delivers the record to the
		// ready subject.
		evil := dialDevice(t, device.Config{Addrs: []string{a.DeviceAddr()}, ID: "evil-1"})
		ann, _ := json.Marshal(coord.Ready{Pool: "pushed", Appliance: cfg.Name, Subject: coord.PoolSubject("pushed"), Free: 100000, Workers: 100000})
		if _, err := evil.Send(ctx, ann); err != nil {
			t.Fatal(err)
		}
		if err := evil.Flush(ctx); err != nil {
			t.Fatal(err)
		}
		js, _ := jetstream.New(nc)
		s, err := js.Stream(ctx, parser.StreamParsed)
		if err != nil {
			t.Fatal(err)
		}
		c, err := s.CreateOrUpdateConsumer(ctx, jetstream.ConsumerConfig{Durable: "to-ready", DeliverSubject: coord.SubjectReady,
			FilterSubject: coord.ParsedSubject("evil-1"), AckPolicy: jetstream.AckNonePolicy})
		if err != nil {
			t.Skipf("the login cannot create the consumer: %v", err)
		}
		if stays(time.Second, func() bool { return a.SocketStats().Pools > 1 }) == false {
			t.Errorf("a record delivered to %s made the socket know %d pools", coord.SubjectReady, a.SocketStats().Pools)
		}
		if info, err := c.Info(ctx); err == nil && info.Delivered.Consumer > 0 {
			t.Errorf("the consumer delivered %d records to %s", info.Delivered.Consumer, coord.SubjectReady)
		}
	})
}

// TestAttackForgedOutcome: an outcome published by a client (or even one
// that reaches the coordination account) for a batch running in the
// socket's own process, with the controller and fence `edgegate status`
// shows, is not taken: the device is acknowledged only after the handler
// finished, the controller's next message does not run beside it, and
// every message is handled once, in order.
func TestAttackForgedOutcome(t *testing.T) {
	if testing.Short() {
		t.Skip("long")
	}
	for _, via := range []string{"client", "inside"} {
		t.Run(via, func(t *testing.T) {
			const id = "victim"
			started := make(chan uint64, 16)
			gate := make(chan struct{})
			j := newJournal(parser.HandlerFunc(func(ctx context.Context, m *parser.Message) error {
				started <- m.Seq
				if m.Seq == 1 {
					select {
					case <-gate:
					case <-ctx.Done():
						return ctx.Err()
					}
				}
				return nil
			}))
			cfg := trustConfig(t, "outcome-"+via)
			cfg.NATS.JetStream = false
			cfg.Parser.Batch = 1
			cfg.Handler = j
			a := start(t, cfg)
			var nc *nats.Conn
			if via == "client" {
				nc = dialClient(t, a, nats.ErrorHandler(func(*nats.Conn, *nats.Subscription, error) {}))
			} else {
				var err error
				if nc, err = a.ConnectCoord("test-inside"); err != nil {
					t.Fatal(err)
				}
				defer nc.Close()
			}
			var mu sync.Mutex
			acked := map[uint64]time.Time{}
			dev := dialDevice(t, device.Config{Addrs: []string{a.DeviceAddr()}, ID: id, OnAck: func(ak device.Acked) {
				mu.Lock()
				acked[ak.Seq] = time.Now()
				mu.Unlock()
			}})
			ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
			defer cancel()
			for i := 0; i < 3; i++ {
				if _, err := dev.Send(ctx, []byte(strconv.Itoa(i))); err != nil {
					t.Fatal(err)
				}
			}
			select {
			case <-started:
			case <-time.After(10 * time.Second):
				t.Fatal("seq 1 never reached the handler")
			}
			fence := j.callsOf(id, false)[0].fence
			forged := coord.Outcome{Controller: id, Fence: fence, Released: true, Kept: true, Done: 1, Statuses: []byte{0}}
			nc.Publish(coord.SocketSubject(socketID(t, nc))+"."+id, coord.AppendOutcome(nil, &forged))
			nc.Flush()
			// Code that takes the outcome runs seq 2 within milliseconds.
			select {
			case seq := <-started:
				t.Errorf("seq %d ran while seq 1 was still in the handler", seq)
			case <-time.After(time.Second):
			}
			mu.Lock()
			_, early := acked[1]
			mu.Unlock()
			if early {
				t.Errorf("seq 1 acknowledged to the device before the handler finished it")
			}
			close(gate)
			if err := dev.Flush(ctx); err != nil {
				t.Fatal(err)
			}
			overlaps, _ := j.snapshot()
			for _, o := range overlaps {
				t.Error(o)
			}
			if got := j.succeeded(id); len(got) != 3 || got[0] != 1 || got[1] != 2 || got[2] != 3 {
				t.Errorf("handled %v, want [1 2 3] once each", got)
			}
		})
	}
}

// TestAttackClockOverNATS: an assignment that goes over NATS (to a pool of
// another process) does not carry the socket's clock, which lets a pool of
// the same process skip the lease check.
func TestAttackClockOverNATS(t *testing.T) {
	store := lease.NewMemory()
	cfg := trustConfig(t, "clock")
	cfg.NATS.JetStream = false
	cfg.Parser.Workers = 0
	cfg.LeaseStore = store
	a := start(t, cfg)

	sniff, err := a.ConnectCoord("test-sniffer")
	if err != nil {
		t.Fatal(err)
	}
	defer sniff.Close()
	var mu sync.Mutex
	var clocks []uint64
	if _, err := sniff.Subscribe(coord.PoolSubject(">"), func(m *nats.Msg) {
		if as, err := coord.DecodeAssign(m.Data); err == nil {
			mu.Lock()
			clocks = append(clocks, as.Clock, uint64(as.Deadline))
			mu.Unlock()
		}
	}); err != nil {
		t.Fatal(err)
	}
	sniff.Flush()
	// A pool of another process: its own connection, no shared clock.
	pc, err := a.ConnectCoord("test-remote-pool")
	if err != nil {
		t.Fatal(err)
	}
	defer pc.Close()
	pool, err := parser.New(parser.Config{Name: "remote", Workers: 2, Handler: parser.Discard(), TTL: cfg.Lease.TTL, Heartbeat: cfg.Lease.Heartbeat}, pc, store)
	if err != nil {
		t.Fatal(err)
	}
	pctx, pcancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { defer close(done); pool.Run(pctx) }()
	defer func() { pcancel(); <-done }()

	dev := dialDevice(t, device.Config{Addrs: []string{a.DeviceAddr()}, ID: "meter-c"})
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if err := sendAll(ctx, dev, "meter-c", 10); err != nil {
		t.Fatal(err)
	}
	// The sniffer's copies come on a connection of their own, maybe after
	// the ACKs.
	wait.True(t, 10*time.Second, "assignments seen on NATS", func() bool {
		mu.Lock()
		defer mu.Unlock()
		return len(clocks) > 0
	})
	mu.Lock()
	defer mu.Unlock()
	for i := 0; i < len(clocks); i += 2 {
		if clocks[i] != 0 || clocks[i+1] != 0 {
			t.Errorf("an assignment over NATS carries clock %x, deadline %d", clocks[i], int64(clocks[i+1]))
		}
	}
}

// TestAttackRoutes: an appliance that lists peers, or listens for routes
// on a network address, without route credentials is refused at start; a
// server without them cannot join an appliance that has them, and its
// session announcement kicks no device off.
func TestAttackRoutes(t *testing.T) {
	if testing.Short() {
		t.Skip("long: servers joining over routes")
	}
	var logs lockedBuffer
	cfg := testConfig(t, "routed")
	cfg.LeaseStore = lease.NewMemory()
	cfg.NATS.Cluster.Listen = "0.0.0.0:0"
	cfg.NATS.Cluster.Peers = []string{"127.0.0.1:1"}
	a, err := appliance.New(context.Background(), cfg)
	if err == nil {
		// Today's behaviour: it starts; the rogue below joins it.
		ctx, cancel := context.WithCancel(context.Background())
		done := make(chan error, 1)
		go func() { done <- a.Run(ctx) }()
		defer func() { cancel(); <-done }()
		<-a.Ready()
		t.Errorf("an appliance with nats.cluster.peers and no route credentials started")
	} else {
		if !strings.Contains(err.Error(), "nats.cluster.user") {
			t.Errorf("refusal %q does not name nats.cluster.user", err)
		}
		for _, tt := range []struct {
			name   string
			mutate func(c *appliance.ClusterConfig)
			want   string
		}{
			{"network listener", func(c *appliance.ClusterConfig) { c.Peers = nil }, "nats.cluster.user"},
			{"TLS on the system roots", func(c *appliance.ClusterConfig) {
				c.TLSCert, c.TLSKey, c.User, c.Password = "/etc/edgegate/route.pem", "/etc/edgegate/route.key", "route", "r0ute-secret"
			}, "nats.cluster.tls_ca"},
		} {
			c := cfg
			tt.mutate(&c.NATS.Cluster)
			if err := c.Validate(); err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Errorf("%s: %v, want a refusal naming %s", tt.name, err, tt.want)
			}
		}
		cfg.NATS.Cluster.User, cfg.NATS.Cluster.Password = "route", "r0ute-secret"
		a = start(t, cfg)
	}

	dev := dialDevice(t, device.Config{Addrs: []string{a.DeviceAddr()}, ID: "meter-r"})
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if err := sendAll(ctx, dev, "meter-r", 3); err != nil {
		t.Fatal(err)
	}
	_, port, _ := net.SplitHostPort(a.ClusterAddr())
	rogue, err := embed.New(embed.Config{Name: "rogue", Logger: slog.New(slog.NewTextHandler(&logs, nil)),
		Cluster: embed.ClusterConfig{Listen: "127.0.0.1:0", Peers: []string{"127.0.0.1:" + port}}})
	if err != nil {
		t.Fatal(err)
	}
	defer rogue.Shutdown()
	joined := func() bool { return rogue.NATS().NumRoutes() > 0 }
	refused := func() bool { return strings.Contains(strings.ToLower(logs.String()), "authorization violation") }
	wait.True(t, 10*time.Second, "the rogue's route joined or refused", func() bool { return joined() || refused() })
	// A route the appliance refuses shows on the rogue's side for a
	// moment, until the refusal closes it: joined is a route still there,
	// unrefused, a while later.
	if stays(2*time.Second, func() bool { return !joined() || refused() }) {
		t.Errorf("a server without route credentials joined the appliance")
	}
	rc, err := rogue.ConnectCoord("rogue") // where sessions are announced
	if err != nil {
		t.Fatal(err)
	}
	defer rc.Close()
	for i := 0; i < 10; i++ {
		rc.Publish(coord.SessionSubject("meter-r"), []byte("rogue-socket"))
	}
	rc.Flush()
	if !stays(time.Second, func() bool { return a.SocketStats().Takeovers > 0 }) {
		t.Errorf("the rogue's session announcement took the device's session over")
	}
}

// TestAttackReadyFlood: 100,000 ready announcements from a client never
// reach the socket; from inside, the socket's pool table stays bounded and
// the appliance keeps working.
func TestAttackReadyFlood(t *testing.T) {
	if testing.Short() {
		t.Skip("long: 100,000 announcements")
	}
	flood := func(nc *nats.Conn, n int, prefix string) {
		for i := 0; i < n; i++ {
			id := prefix + strconv.Itoa(i)
			b, _ := json.Marshal(coord.Ready{Pool: id, Appliance: "elsewhere", Subject: coord.PoolSubject(id), Workers: 1})
			nc.Publish(coord.SubjectReady, b)
		}
		nc.Flush()
	}
	cfg := trustConfig(t, "flooded")
	cfg.NATS.JetStream = false
	a := start(t, cfg)
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()

	t.Run("client", func(t *testing.T) {
		flood(dialClient(t, a, nats.ErrorHandler(func(*nats.Conn, *nats.Subscription, error) {})), 100000, "flood-")
		if !stays(time.Second, func() bool { return a.SocketStats().Pools > 1 }) {
			t.Errorf("a client's announcements reached the socket: %d pools known", a.SocketStats().Pools)
		}
	})
	t.Run("inside", func(t *testing.T) {
		nc, err := a.ConnectCoord("test-inside")
		if err != nil {
			t.Fatal(err)
		}
		defer nc.Close()
		flood(nc, 3000, "inside-")
		wait.True(t, 10*time.Second, "pools beyond the table's bound ignored", func() bool { return a.SocketStats().PoolsIgnored > 0 })
		if n := a.SocketStats().Pools; n > 1024 {
			t.Errorf("the socket knows %d pools, want at most 1024", n)
		}
	})
	dev := dialDevice(t, device.Config{Addrs: []string{a.DeviceAddr()}, ID: "meter-f"})
	if err := sendAll(ctx, dev, "meter-f", 20); err != nil {
		t.Fatal(err)
	}
}

// TestReadOnlyLogin: a client login (none on loopback, or nats.user) sees
// `edgegate status`, tails records, and reads the streams with stream
// info, direct reads and its own consumers, pull and ordered.
func TestReadOnlyLogin(t *testing.T) {
	if testing.Short() {
		t.Skip("long: the status collection windows of two logins")
	}
	for _, login := range []string{"none", "nats.user"} {
		t.Run(login, func(t *testing.T) {
			cfg := trustConfig(t, "reader-"+strings.ReplaceAll(login, ".", "-"))
			var opts []nats.Option
			if login == "nats.user" {
				cfg.NATS.User, cfg.NATS.Password = "consumer", "s3cret-pass"
				opts = append(opts, nats.UserInfo("consumer", "s3cret-pass"))
			}
			a := start(t, cfg)
			nc := dialClient(t, a, opts...)
			ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
			defer cancel()

			kinds := map[string]bool{}
			for _, st := range askStatus(t, nc, 2) {
				kinds[st.Kind] = true
			}
			if !kinds["socket"] || !kinds["pool"] {
				t.Errorf("edgegate status answered by %v, want a socket and a pool", kinds)
			}
			tail, err := nc.SubscribeSync(coord.ParsedSubject(">"))
			if err != nil {
				t.Fatal(err)
			}
			nc.Flush()
			dev := dialDevice(t, device.Config{Addrs: []string{a.DeviceAddr()}, ID: "meter-3"})
			if err := sendAll(ctx, dev, "meter-3", 5); err != nil {
				t.Fatal(err)
			}
			if m, err := tail.NextMsg(5 * time.Second); err != nil || m.Header.Get(parser.HeaderController) != "meter-3" {
				t.Errorf("tail: %v, %v", m, err)
			}
			readStream(t, a, parser.StreamParsed, 5)

			js, _ := jetstream.New(nc)
			s, err := js.Stream(ctx, parser.StreamParsed)
			if err != nil {
				t.Fatalf("stream info: %v", err)
			}
			last, err := s.GetLastMsgForSubject(ctx, coord.ParsedSubject("meter-3"))
			if err != nil || last.Header.Get(parser.HeaderSeq) != "5" {
				t.Fatalf("last record of meter-3: %v, %v", last, err)
			}
			if m, err := s.GetMsg(ctx, last.Sequence); err != nil || m.Header.Get(parser.HeaderSeq) != "5" {
				t.Errorf("record 5: %v, %v", m, err)
			}
			names := js.StreamNames(ctx)
			var got []string
			for n := range names.Name() {
				got = append(got, n)
			}
			if len(got) != 2 || names.Err() != nil {
				t.Errorf("stream names %v (%v), want the two streams", got, names.Err())
			}
			c, err := s.CreateOrUpdateConsumer(ctx, jetstream.ConsumerConfig{Durable: "reader", AckPolicy: jetstream.AckExplicitPolicy,
				FilterSubject: coord.ParsedSubject(">")})
			if err != nil {
				t.Fatalf("pull consumer: %v", err)
			}
			batch, err := c.Fetch(5, jetstream.FetchMaxWait(5*time.Second))
			if err != nil {
				t.Fatal(err)
			}
			var seqs []string
			for m := range batch.Messages() {
				seqs = append(seqs, m.Headers().Get(parser.HeaderSeq))
				if err := m.DoubleAck(ctx); err != nil {
					t.Errorf("ack: %v", err)
				}
			}
			if strings.Join(seqs, ",") != "1,2,3,4,5" || batch.Error() != nil {
				t.Errorf("fetched seqs %v (%v), want 1..5", seqs, batch.Error())
			}
			if info, err := c.Info(ctx); err != nil || info.AckFloor.Stream != last.Sequence {
				t.Errorf("consumer after acks: %+v, %v", info, err)
			}
			if err := s.DeleteConsumer(ctx, "reader"); err != nil {
				t.Errorf("delete own consumer: %v", err)
			}
			oc, err := s.OrderedConsumer(ctx, jetstream.OrderedConsumerConfig{FilterSubjects: []string{coord.ParsedSubject("meter-3")}})
			if err != nil {
				t.Fatalf("ordered consumer: %v", err)
			}
			if m, err := oc.Next(jetstream.FetchMaxWait(5 * time.Second)); err != nil || !bytes.Contains(m.Data(), []byte("meter-3")) {
				t.Errorf("ordered consumer: %v", err)
			}
		})
	}
}

// TestReadOnlyStatusAcrossCluster: `edgegate status` through one
// appliance's client port hears every socket and pool of the cluster:
// the status requests cross the routes in the coordination account.
func TestReadOnlyStatusAcrossCluster(t *testing.T) {
	if testing.Short() {
		t.Skip("long: a cluster of appliances")
	}
	apps := startCluster(t, 2, newJournal(nil), nil)
	nc := dialClient(t, apps[0])
	got := map[string]bool{}
	for _, st := range askStatus(t, nc, 4) {
		got[st.Appliance+"/"+st.Kind] = true
	}
	for _, want := range []string{"node-0/socket", "node-0/pool", "node-1/socket", "node-1/pool"} {
		if !got[want] {
			t.Errorf("edgegate status through node-0 lacks %s (got %v)", want, got)
		}
	}
}
