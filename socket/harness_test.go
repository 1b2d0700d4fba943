package socket

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/edgegate/edgegate/coord"
	"github.com/edgegate/edgegate/egp"
	"github.com/edgegate/edgegate/embed"
	"github.com/edgegate/edgegate/internal/testlog"
	"github.com/edgegate/edgegate/internal/wait"
	"github.com/edgegate/edgegate/lease"
)

// The harness runs one socket on its own: an in-process NATS server
// (package embed, no listener), the in-process lease store or a wrapper of
// it, parser pools faked by the test (fakePool in this process, natsPool
// over NATS) and devices speaking EGP/1 over TCP (testDevice). A test
// drives every batch by hand: it takes the assignment a pool got, decides
// what the pool answers and reports, and looks at what the device got.

// timeout bounds every wait of these tests: far longer than anything
// takes, so that only a socket that never does it fails.
const timeout = 10 * time.Second

// testAppliance is the appliance name the socket runs under.
const testAppliance = "test"

// harness is one socket under test and the NATS server it runs on.
type harness struct {
	t     *testing.T
	s     *Server
	store lease.Store
	ns    *embed.Server
	nc    *nats.Conn // the test's own coordination connection (pools, announcements)
	logs  *lockedBuffer
	stop  func() error // stops the socket once and returns what Run did
}

// lockedBuffer collects log output from several goroutines.
type lockedBuffer = testlog.Buffer

// start runs a socket with cfg (its listener, store and logger set here)
// on store until the test ends.
func start(t *testing.T, cfg Config, store lease.Store) *harness {
	t.Helper()
	ns, err := embed.New(embed.Config{})
	if err != nil {
		t.Fatal(err)
	}
	h := &harness{t: t, store: store, ns: ns, logs: &lockedBuffer{}}
	t.Cleanup(ns.Shutdown)
	snc, err := ns.ConnectCoord("socket")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(snc.Close)
	if h.nc, err = ns.ConnectCoord("test"); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(h.nc.Close)

	cfg.Name = testAppliance
	cfg.Listen = "127.0.0.1:0"
	cfg.Logger = slog.New(slog.NewTextHandler(h.logs, &slog.HandlerOptions{Level: slog.LevelDebug}))
	if cfg.TTL == 0 {
		cfg.TTL = 5 * time.Second
	}
	cfg.CheckInterval = 50 * time.Millisecond
	cfg.PoolExpiry = time.Hour // the test announces its pools once
	cfg.Drain = 100 * time.Millisecond
	cfg.Dispatchers = 2
	if h.s, err = New(cfg, snc, store); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- h.s.Run(ctx) }()
	h.stop = sync.OnceValue(func() error {
		cancel()
		return <-done
	})
	t.Cleanup(func() {
		if err := h.stop(); err != nil {
			t.Errorf("Run: %v", err)
		}
		if t.Failed() {
			t.Logf("socket log:\n%s", h.logs)
		}
	})
	wait.True(t, timeout, "the socket serves", h.s.Ready)
	return h
}

// announce tells the socket about a pool, as a pool's ready announcement
// does, and waits until it knows it.
func (h *harness) announce(id, appliance string, free int) {
	h.t.Helper()
	r := coord.Ready{Pool: id, Appliance: appliance, Subject: coord.PoolSubject(id), Free: free, Workers: free}
	b, _ := json.Marshal(r)
	if err := h.nc.Publish(coord.SubjectReady, b); err != nil {
		h.t.Fatal(err)
	}
	wait.True(h.t, timeout, "the socket knows pool "+id, func() bool {
		h.s.mu.Lock()
		defer h.s.mu.Unlock()
		p := h.s.pools[id]
		return p != nil && p.available() > 0
	})
}

// controller returns the socket's state of controller id, and whether it
// knows it.
func (h *harness) controller(id string) (st state, batchLen int, known bool) {
	c, sh := h.s.lookup(id)
	defer sh.mu.Unlock()
	if c == nil {
		return 0, 0, false
	}
	return c.state, c.batchLen, true
}

// lock reads controller id's lease from the store.
func (h *harness) lock(id string) lease.State {
	h.t.Helper()
	st, err := h.store.Inspect(context.Background(), id)
	if err != nil {
		h.t.Fatal(err)
	}
	return st
}

// batch is one assignment a fake pool got.
type batch struct {
	a       *coord.Assign
	outcome func(coord.Outcome) // fakePool: the socket's callback
	reply   string              // natsPool: where answers and outcomes go
	at      time.Time
}

func (b *batch) seqs() []uint64 {
	var s []uint64
	for _, m := range b.a.Msgs {
		s = append(s, m.Seq)
	}
	return s
}

// holders checks what a device relies on when a pool starts a batch:
// exactly one holder. The store's lock is this batch's grant, and no other
// batch of the controller runs (at this pool or any other the test has).
type holders struct {
	t       *testing.T
	store   lease.Store
	mu      sync.Mutex
	running map[string]uint64 // controller → fence of the batch running
}

func newHolders(t *testing.T, store lease.Store) *holders {
	return &holders{t: t, store: store, running: map[string]uint64{}}
}

func (h *holders) start(a *coord.Assign) {
	st, err := h.store.Inspect(context.Background(), a.Controller)
	if err != nil {
		h.t.Errorf("inspect %s: %v", a.Controller, err)
	}
	if !st.Locked || st.Token != a.Token {
		h.t.Errorf("%s: a batch under %v starts while the lock is %+v", a.Controller, a.Token, st)
	}
	h.mu.Lock()
	defer h.mu.Unlock()
	if f, ok := h.running[a.Controller]; ok {
		h.t.Errorf("%s: a batch under fence %d starts while the one under fence %d runs", a.Controller, a.Token.Fence, f)
	}
	h.running[a.Controller] = a.Token.Fence
}

func (h *holders) end(a *coord.Assign) {
	h.mu.Lock()
	defer h.mu.Unlock()
	delete(h.running, a.Controller)
}

// finish does what a parser does at the end of b: keep the lease (for
// b's Hold) or release it, recording the last seq as done, and builds the
// outcome proper, every message processed. A keep the store refuses for a
// newer session is a release.
func finish(t *testing.T, store lease.Store, b *batch, keep bool) coord.Outcome {
	t.Helper()
	a := b.a
	done := a.Msgs[len(a.Msgs)-1].Seq
	var err error
	if keep {
		err = store.Keep(context.Background(), a.Controller, a.Token, a.Hold, done)
		if errors.Is(err, lease.ErrSuperseded) {
			// A newer session: the keep released the lease instead.
			keep, err = false, nil
		}
	} else {
		err = store.Release(context.Background(), a.Controller, a.Token, done)
	}
	if err != nil {
		t.Fatalf("%s: end of the batch under %v: %v", a.Controller, a.Token, err)
	}
	return coord.Outcome{
		Controller: a.Controller, Fence: a.Token.Fence, Released: true, Kept: keep, Done: done,
		Statuses: make([]byte, len(a.Msgs)), Pool: a.Token.Owner,
	}
}

// fakePool is the parser pool of the socket's process (Config.Local): the
// socket offers it batches by a call. busy answers the next offers busy.
type fakePool struct {
	id      string
	workers int
	holders *holders
	batches chan *batch

	mu      sync.Mutex
	busy    int
	running int

	outcomes sync.WaitGroup // outcomes being reported
}

func newFakePool(h *holders, id string, workers int) *fakePool {
	p := &fakePool{id: id, workers: workers, holders: h, batches: make(chan *batch, 64)}
	h.t.Cleanup(p.outcomes.Wait)
	return p
}

func (p *fakePool) ID() string { return p.id }

func (p *fakePool) Free() int {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.workers - p.running
}

func (p *fakePool) Offer(a *coord.Assign, outcome func(coord.Outcome)) bool {
	p.mu.Lock()
	if p.busy > 0 || p.running >= p.workers {
		p.busy = max(0, p.busy-1)
		p.mu.Unlock()
		p.batches <- &batch{a: a, at: time.Now()} // refused: recorded, never run
		return false
	}
	p.running++
	p.mu.Unlock()
	p.holders.start(a)
	p.batches <- &batch{a: a, outcome: outcome, at: time.Now()}
	return true
}

// next returns the next batch offered (accepted or refused).
func (p *fakePool) next(t *testing.T) *batch {
	t.Helper()
	return nextBatch(t, p.batches, "a batch offered to pool "+p.id)
}

// nextBatch waits for a batch on ch.
func nextBatch(t *testing.T, ch chan *batch, what string) *batch {
	t.Helper()
	var b *batch
	wait.True(t, timeout, what, func() bool {
		select {
		case b = <-ch:
			return true
		default:
			return false
		}
	})
	return b
}

// none checks that no batch is waiting on ch.
func none(t *testing.T, ch chan *batch, why string) {
	t.Helper()
	select {
	case b := <-ch:
		t.Fatalf("%s, yet a batch of seqs %v under %v came", why, b.seqs(), b.a.Token)
	default:
	}
}

// end finishes b, run by p, keeping its lease or releasing it, and
// reports its outcome to the socket from a goroutine of its own, as a
// worker does (a panic of the socket's state machine then fails the test
// binary at once, instead of a test goroutine holding a shard lock).
func (p *fakePool) end(t *testing.T, store lease.Store, b *batch, keep bool) {
	t.Helper()
	o := finish(t, store, b, keep)
	p.holders.end(b.a)
	p.mu.Lock()
	p.running--
	p.mu.Unlock()
	p.outcomes.Go(func() { b.outcome(o) })
}

// natsPool is a parser pool of another appliance, reached over NATS.
type natsPool struct {
	id      string
	nc      *nats.Conn
	holders *holders
	batches chan *batch
}

func newNATSPool(t *testing.T, h *harness, hs *holders, id string) *natsPool {
	p := &natsPool{id: id, nc: h.nc, holders: hs, batches: make(chan *batch, 64)}
	sub, err := h.nc.Subscribe(coord.PoolSubject(id), func(m *nats.Msg) {
		a, err := coord.DecodeAssign(m.Data)
		if err != nil {
			t.Errorf("pool %s: %v", id, err)
			return
		}
		p.batches <- &batch{a: a, reply: m.Reply, at: time.Now()}
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { sub.Unsubscribe() })
	if err := h.nc.Flush(); err != nil {
		t.Fatal(err)
	}
	return p
}

func (p *natsPool) next(t *testing.T) *batch {
	t.Helper()
	return nextBatch(t, p.batches, "an assignment to pool "+p.id)
}

// answer answers b: accepted (the batch then runs) or busy.
func (p *natsPool) answer(t *testing.T, b *batch, accepted bool) {
	t.Helper()
	if accepted {
		p.holders.start(b.a)
	}
	p.publish(t, b.reply, coord.AppendAnswer(nil, &coord.Answer{Controller: b.a.Controller, Fence: b.a.Token.Fence, Accepted: accepted, Pool: p.id}))
}

// end finishes b and sends its outcome.
func (p *natsPool) end(t *testing.T, store lease.Store, b *batch, keep bool) {
	t.Helper()
	o := finish(t, store, b, keep)
	p.holders.end(b.a)
	p.publish(t, b.reply, coord.AppendOutcome(nil, &o))
}

func (p *natsPool) publish(t *testing.T, subject string, data []byte) {
	t.Helper()
	if err := p.nc.Publish(subject, data); err != nil {
		t.Fatal(err)
	}
	if err := p.nc.Flush(); err != nil {
		t.Fatal(err)
	}
}

// testDevice is a device connected over EGP/1. A goroutine of its own
// reads what the gateway sends; the test looks at it with acks and
// errors, waiting with package wait.
type testDevice struct {
	t    *testing.T
	conn net.Conn
	r    *egp.Reader
	done chan struct{}

	mu       sync.Mutex
	welcomed bool
	acks     []egp.Ack
	errors   []egp.Code
}

// dial connects a device of controller id with HELLO flags and reads its
// WELCOME.
func (h *harness) dial(id string, flags byte) *testDevice {
	h.t.Helper()
	conn, err := net.Dial("tcp", h.s.Addr().String())
	if err != nil {
		h.t.Fatal(err)
	}
	d := &testDevice{t: h.t, conn: conn, r: egp.NewReader(conn, egp.DefaultMaxFrame, 4096), done: make(chan struct{})}
	h.t.Cleanup(func() {
		conn.Close()
		<-d.done
	})
	go d.read()
	if _, err := conn.Write(egp.AppendHello(nil, egp.Hello{Version: egp.Version, Flags: flags, ID: id})); err != nil {
		h.t.Fatal(err)
	}
	wait.True(h.t, timeout, id+": WELCOME", func() bool {
		d.mu.Lock()
		defer d.mu.Unlock()
		return d.welcomed
	})
	return d
}

func (d *testDevice) read() {
	defer close(d.done)
	for {
		fh, body, err := d.r.ReadFrame()
		if err != nil {
			return
		}
		d.mu.Lock()
		switch fh.Type {
		case egp.TypeAck:
			a, err := egp.ParseAck(body)
			if err != nil {
				d.t.Errorf("malformed ACK: %v", err)
			}
			d.acks = append(d.acks, a)
		case egp.TypeWelcome:
			d.welcomed = true
		case egp.TypeError:
			code, _, _ := egp.ParseError(body)
			d.errors = append(d.errors, code)
		}
		d.mu.Unlock()
	}
}

// send sends DATA frames with seqs.
func (d *testDevice) send(seqs ...uint64) {
	d.t.Helper()
	var b []byte
	for _, s := range seqs {
		b = egp.AppendData(b, s, fmt.Appendf(nil, "message %d", s))
	}
	if _, err := d.conn.Write(b); err != nil {
		d.t.Fatal(err)
	}
}

// acked returns the seqs acknowledged so far, in the order they came.
func (d *testDevice) acked() []uint64 {
	d.mu.Lock()
	defer d.mu.Unlock()
	var s []uint64
	for _, a := range d.acks {
		s = append(s, a.Seq)
	}
	return s
}

// waitAcks waits until the device got ACKs for exactly want, in order,
// each processed, and fails at once on anything else.
func (d *testDevice) waitAcks(want ...uint64) {
	d.t.Helper()
	wait.For(d.t, timeout, func() error {
		d.mu.Lock()
		defer d.mu.Unlock()
		for i, a := range d.acks {
			if i >= len(want) || a.Seq != want[i] || a.Status != egp.StatusProcessed {
				return fmt.Errorf("ACKs %+v, want seqs %v processed, in order", d.acks, want)
			}
		}
		if len(d.acks) < len(want) {
			return fmt.Errorf("ACKs %+v, want seqs %v", d.acks, want)
		}
		return nil
	})
}

// waitError waits until the device got ERROR code.
func (d *testDevice) waitError(code egp.Code) {
	d.t.Helper()
	wait.True(d.t, timeout, "ERROR "+code.String(), func() bool {
		d.mu.Lock()
		defer d.mu.Unlock()
		return slices.Contains(d.errors, code)
	})
}

// grantStore is the in-process store, recording its grants, whose epoch
// began at epochStart (zero: it cannot lose leases, as lease.Memory).
type grantStore struct {
	*lease.Memory
	epochStart time.Time

	mu     sync.Mutex
	grants []lease.Grant
}

func newGrantStore(epochStart time.Time) *grantStore {
	return &grantStore{Memory: lease.NewMemory(), epochStart: epochStart}
}

func (s *grantStore) Acquire(ctx context.Context, id, owner string, ttl time.Duration, sess lease.Session) (lease.Grant, error) {
	g, err := s.Memory.Acquire(ctx, id, owner, ttl, sess)
	if err != nil {
		return g, err
	}
	g.EpochStart = s.epochStart
	s.mu.Lock()
	s.grants = append(s.grants, g)
	s.mu.Unlock()
	return g, nil
}

// granted returns the grants made so far, oldest first.
func (s *grantStore) granted() []lease.Grant {
	s.mu.Lock()
	defer s.mu.Unlock()
	return slices.Clone(s.grants)
}

// zeroTime is an epoch start for a store that cannot lose leases.
var zeroTime time.Time

// inFlightState reports whether st is a state a batch in flight is in.
func (st state) inFlightState() bool { return st == stAssigned || st == stRunning }
