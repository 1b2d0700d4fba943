package parser

import (
	"context"
	"fmt"
	"sync/atomic"
	"testing"
	"time"

	"github.com/edgegate/edgegate/coord"
	"github.com/edgegate/edgegate/egp"
	"github.com/edgegate/edgegate/embed"
	"github.com/edgegate/edgegate/internal/redistest"
	"github.com/edgegate/edgegate/internal/wait"
	"github.com/edgegate/edgegate/lease"
)

// startPool runs a pool of workers on a real embedded NATS server and the
// in-process lease store.
func startPool(t *testing.T, workers int, h Handler) (*Pool, *lease.Memory, *embed.Server) {
	t.Helper()
	return startPoolWith(t, Config{Workers: workers, Handler: h, TTL: 10 * time.Second, Heartbeat: time.Second})
}

func startPoolWith(t *testing.T, cfg Config) (*Pool, *lease.Memory, *embed.Server) {
	t.Helper()
	store := lease.NewMemory()
	p, ns := startPoolStore(t, cfg, store)
	return p, store, ns
}

// startPoolStore runs a pool on a real embedded NATS server and store.
func startPoolStore(t *testing.T, cfg Config, store lease.Store) (*Pool, *embed.Server) {
	t.Helper()
	return startPoolSet(t, cfg, store, nil)
}

// startPoolSet is startPoolStore with set, when not nil, called on the
// pool before it runs (the seams of tests).
func startPoolSet(t *testing.T, cfg Config, store lease.Store, set func(*Pool)) (*Pool, *embed.Server) {
	t.Helper()
	ns, err := embed.New(embed.DefaultConfig())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(ns.Shutdown)
	nc, err := ns.Connect("parser")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(nc.Close)
	p, err := New(cfg, nc, store)
	if err != nil {
		t.Fatal(err)
	}
	if set != nil {
		set(p)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { defer close(done); p.Run(ctx) }()
	t.Cleanup(func() { cancel(); <-done })
	wait.For(t, 10*time.Second, p.Healthy)
	return p, ns
}

func assignment(t *testing.T, store lease.Store, p *Pool, id string, hold time.Duration, seqs ...uint64) *coord.Assign {
	t.Helper()
	g, err := store.Acquire(context.Background(), id, p.ID(), 10*time.Second, lease.Session{})
	if err != nil {
		t.Fatal(err)
	}
	a := &coord.Assign{Controller: id, Token: g.Token, Valid: 10 * time.Second, Hold: hold, Socket: "socket-1"}
	for _, s := range seqs {
		a.Msgs = append(a.Msgs, coord.Msg{Seq: s, Received: time.Now(), Payload: []byte("x")})
	}
	return a
}

func waitOutcome(t *testing.T, ch <-chan coord.Outcome) coord.Outcome {
	t.Helper()
	select {
	case o := <-ch:
		return o
	case <-time.After(10 * time.Second):
		t.Fatal("no outcome")
		return coord.Outcome{}
	}
}

// waitBatch returns the two calls of a batch offered directly: its
// statuses ahead of the lease's keep or release (Early), then its outcome
// proper, without statuses.
func waitBatch(t *testing.T, ch <-chan coord.Outcome) (early, final coord.Outcome) {
	t.Helper()
	if early = waitOutcome(t, ch); !early.Early {
		t.Fatalf("first call %+v: want the statuses ahead (Early)", early)
	}
	if final = waitOutcome(t, ch); final.Early || len(final.Statuses) != 0 {
		t.Fatalf("second call %+v: want the outcome proper, without statuses", final)
	}
	return early, final
}

// waitFinal returns a batch's outcome proper, after its statuses ahead
// (Early) if they came first: a batch whose keep went to the store.
func waitFinal(t *testing.T, ch <-chan coord.Outcome) coord.Outcome {
	t.Helper()
	o := waitOutcome(t, ch)
	if o.Early {
		if o = waitOutcome(t, ch); o.Early {
			t.Fatalf("second call %+v: want the outcome proper", o)
		}
	}
	return o
}

// sessionElsewhere announces a new session of id on another socket
// ("socket-2") and waits until the pool lets id's kept lease go; it returns
// the lease's state then.
func sessionElsewhere(t *testing.T, ns *embed.Server, store lease.Store, id string) lease.State {
	t.Helper()
	nc, err := ns.Connect("socket")
	if err != nil {
		t.Fatal(err)
	}
	defer nc.Close()
	if err := nc.Publish(coord.SessionSubject(id), []byte("socket-2")); err != nil {
		t.Fatal(err)
	}
	var st lease.State
	wait.For(t, 10*time.Second, func() error {
		var err error
		if st, err = store.Inspect(context.Background(), id); err != nil {
			return err
		}
		if st.Locked {
			return fmt.Errorf("the lease kept for %s outlived a new session on another socket", id)
		}
		return nil
	})
	return st
}

// TestOfferInProcess: a socket of the same process hands a pool batches
// without NATS. A free worker takes one; its statuses come back as a call
// once the messages are handled, and its outcome as another, with the
// lease released and done recorded; with every worker busy the answer is
// busy and nothing runs.
func TestOfferInProcess(t *testing.T) {
	gate := make(chan struct{})
	p, store, _ := startPool(t, 1, HandlerFunc(func(ctx context.Context, m *Message) error {
		if m.Controller == "slow" {
			<-gate
		}
		return nil
	}))
	outcomes := make(chan coord.Outcome, 4)
	out := func(o coord.Outcome) { outcomes <- o }

	slow := assignment(t, store, p, "slow", 0, 1)
	if !p.Offer(slow, out) {
		t.Fatal("a pool with a free worker refused an assignment")
	}
	other := assignment(t, store, p, "other", 0, 1, 2)
	waitFree(t, p, 0, "the worker never took the first batch")
	if p.Offer(other, out) {
		t.Fatal("a pool with its only worker busy accepted a second batch")
	}
	close(gate)
	e, o := waitBatch(t, outcomes)
	if e.Controller != "slow" || e.Done != 1 || len(e.Statuses) != 1 || egp.Status(e.Statuses[0]) != egp.StatusProcessed {
		t.Fatalf("statuses %+v: want slow's, done 1, one processed", e)
	}
	if o.Controller != "slow" || !o.Released || o.Kept || o.Done != 1 {
		t.Fatalf("outcome %+v: want slow released, done 1", o)
	}
	if st, err := store.Inspect(context.Background(), "slow"); err != nil || st.Locked || st.Done != 1 {
		t.Fatalf("after the outcome the lease is %+v (%v): want released with done 1", st, err)
	}
	// The refused batch's lease is untouched: the socket gives it back.
	if st, _ := store.Inspect(context.Background(), "other"); !st.Locked || st.Token != other.Token {
		t.Fatalf("the refused batch's lease is %+v: want still held by its grant", st)
	}
	if s := p.Stats(); s.Direct != 2 || s.Busy != 1 || s.Batches != 1 {
		t.Errorf("stats %+v: want 2 offered, 1 busy, 1 batch", s)
	}
}

// TestKeptLeaseAndSessions: a lease kept after a batch is released when
// the controller opens a session on another socket, and left alone when
// the session is on the socket the lease was kept for (which goes on under
// it: its own announcement may reach the pool after the batch it sent
// directly).
func TestKeptLeaseAndSessions(t *testing.T) {
	p, store, ns := startPool(t, 2, HandlerFunc(func(ctx context.Context, m *Message) error { return nil }))
	nc, err := ns.Connect("socket")
	if err != nil {
		t.Fatal(err)
	}
	defer nc.Close()
	outcomes := make(chan coord.Outcome, 4)
	for _, id := range []string{"ctl", "probe"} {
		a := assignment(t, store, p, id, 5*time.Second, 1, 2, 3)
		if !p.Offer(a, func(o coord.Outcome) { outcomes <- o }) {
			t.Fatal("refused")
		}
		if _, o := waitBatch(t, outcomes); !o.Kept || !o.Released || o.Done != 3 {
			t.Fatalf("outcome %+v: want kept with done 3", o)
		}
	}
	locked := func(id string) bool {
		st, err := store.Inspect(context.Background(), id)
		if err != nil {
			t.Fatal(err)
		}
		return st.Locked
	}
	waitReleased := func(id string) {
		t.Helper()
		wait.True(t, 10*time.Second, "the lease kept for "+id+" released after a new session of it on another socket",
			func() bool { return !locked(id) })
	}

	// ctl's new session on the socket its lease was kept for, then probe's
	// on another socket: the pool handles them in order, so once probe's
	// lease is released, ctl's announcement was handled too.
	if err := nc.Publish(coord.SessionSubject("ctl"), []byte("socket-1")); err != nil {
		t.Fatal(err)
	}
	if err := nc.Publish(coord.SessionSubject("probe"), []byte("socket-2")); err != nil {
		t.Fatal(err)
	}
	waitReleased("probe")
	if !locked("ctl") {
		t.Fatal("the pool released a kept lease for a new session on the socket it was kept for")
	}
	if err := nc.Publish(coord.SessionSubject("ctl"), []byte("socket-2")); err != nil {
		t.Fatal(err)
	}
	waitReleased("ctl")
}

// TestSupersededLeaseIgnoresStamp: once a pool released a kept lease for a
// new session on another socket, a batch its old socket of this process
// still sends under it, stamped as surely held, is fenced: its handler
// never runs while the new session's appliance may hold the controller.
func TestSupersededLeaseIgnoresStamp(t *testing.T) {
	clock := coord.NewClock()
	var calls atomic.Int64
	p, store, ns := startPoolWith(t, Config{Workers: 1, Clock: clock, TTL: 10 * time.Second, Heartbeat: time.Second,
		Handler: HandlerFunc(func(ctx context.Context, m *Message) error { calls.Add(1); return nil })})
	outcomes := make(chan coord.Outcome, 4)
	out := func(o coord.Outcome) { outcomes <- o }
	stamp := func(a *coord.Assign) {
		a.Clock, a.Deadline = clock.ID(), clock.At(time.Now().Add(5*time.Second))
	}
	first := assignment(t, store, p, "ctl", 5*time.Second, 1, 2)
	stamp(first)
	if !p.Offer(first, out) {
		t.Fatal("refused")
	}
	// Kept with or without a store call (the stamp leaves about the hold):
	// either way the pool keeps it, and the session elsewhere releases it.
	if o := waitFinal(t, outcomes); !o.Kept || !o.Released || o.Done != 2 {
		t.Fatalf("outcome %+v: want kept with done 2", o)
	}
	if st := sessionElsewhere(t, ns, store, "ctl"); st.Done != 2 {
		t.Errorf("released with done %d, want 2", st.Done)
	}
	next := *first
	next.Msgs = []coord.Msg{{Seq: 3, Received: time.Now(), Payload: []byte("x")}}
	stamp(&next)
	if !p.Offer(&next, out) {
		t.Fatal("refused the batch under the released lease")
	}
	if o := waitOutcome(t, outcomes); o.Released || o.Kept || len(o.Statuses) != 0 {
		t.Fatalf("outcome %+v: want fenced, nothing acknowledged", o)
	}
	if n := calls.Load(); n != 2 {
		t.Errorf("handler called %d times: want 2, none under the released lease", n)
	}
	if s := p.Stats(); s.LeaseLost != 1 {
		t.Errorf("stats %+v: want one batch lost to its lease", s)
	}
}

// TestFirstKeepDeferred: the first batch under a lease fresh from its
// acquire, stamped by a socket of this process with until when the acquire
// set the lock to expire, is kept without a store call: the acquire counts
// as its last keep. Its outcome is final at once with that Until, and the
// done record waits for the release, which the next session elsewhere
// triggers here.
func TestFirstKeepDeferred(t *testing.T) {
	clock := coord.NewClock()
	// The TTL the sockets acquire with (assignment's); a long heartbeat: the
	// deferral window (while the lock has at least the hold less half a
	// heartbeat left, 7 s after the acquire here) outlasts a slow
	// machine's batch.
	p, store, ns := startPoolWith(t, Config{Workers: 1, Clock: clock, TTL: 10 * time.Second, Heartbeat: 4 * time.Second,
		Handler: HandlerFunc(func(ctx context.Context, m *Message) error { return nil })})
	outcomes := make(chan coord.Outcome, 4)
	until := time.Now().Add(10 * time.Second) // set before the acquire: the socket's view
	a := assignment(t, store, p, "ctl", 5*time.Second, 1, 2, 3)
	a.Clock, a.Deadline = clock.ID(), clock.At(until)
	if !p.Offer(a, func(o coord.Outcome) { outcomes <- o }) {
		t.Fatal("refused")
	}
	o := waitOutcome(t, outcomes)
	if o.Early || !o.Released || !o.Kept || o.Done != 3 || len(o.Statuses) != 3 {
		t.Fatalf("outcome %+v: want final at once, kept, done 3, three statuses", o)
	}
	if !o.Until.Equal(clock.Time(a.Deadline)) {
		t.Errorf("Until %v: want the acquire's expiry as stamped, %v", o.Until, clock.Time(a.Deadline))
	}
	st, err := store.Inspect(context.Background(), "ctl")
	if err != nil || !st.Locked || st.Done != 0 {
		t.Fatalf("after the deferred keep the lease is %+v (%v): want held, nothing recorded yet", st, err)
	}
	if s := p.Stats(); s.Kept != 1 || s.Deferred != 1 {
		t.Errorf("stats %+v: want one keep, deferred", s)
	}
	if st := sessionElsewhere(t, ns, store, "ctl"); st.Done != 3 {
		t.Errorf("released with done %d, want 3", st.Done)
	}
}

// TestKeepDeferred: a batch under a lease its pool kept a moment ago for a
// socket of the same process is kept again without a store call: its
// outcome comes at once, final, with the statuses and Until, when the last
// keep set the lock to expire; the done record stays where that keep left
// it until the lease is released, which records the new one.
func TestKeepDeferred(t *testing.T) {
	// A long heartbeat: the deferral window (while the lock has at least
	// the hold less half a heartbeat left, 5 s after the keep here)
	// outlasts a slow machine's gap between the two batches.
	p, store, ns := startPoolWith(t, Config{Workers: 1, Handler: HandlerFunc(func(ctx context.Context, m *Message) error { return nil }),
		TTL: 30 * time.Second, Heartbeat: 10 * time.Second})
	outcomes := make(chan coord.Outcome, 4)
	out := func(o coord.Outcome) { outcomes <- o }
	const hold = 15 * time.Second
	first := assignment(t, store, p, "ctl", hold, 1, 2, 3)
	start := time.Now()
	if !p.Offer(first, out) {
		t.Fatal("refused")
	}
	if _, o := waitBatch(t, outcomes); !o.Kept || !o.Until.IsZero() || o.Done != 3 {
		t.Fatalf("first outcome %+v: want kept by a store call (no Until), done 3", o)
	}
	next := *first
	next.Msgs = []coord.Msg{{Seq: 4, Payload: []byte("x")}, {Seq: 5, Payload: []byte("x")}}
	if !p.Offer(&next, out) {
		t.Fatal("refused the next batch")
	}
	o := waitOutcome(t, outcomes)
	if o.Early || !o.Released || !o.Kept || o.Done != 5 || len(o.Statuses) != 2 {
		t.Fatalf("second outcome %+v: want final at once, kept, done 5, two statuses", o)
	}
	if o.Until.Before(start.Add(hold)) || o.Until.After(time.Now().Add(hold)) {
		t.Errorf("Until %v: want a hold after the first keep began (%v)", o.Until, start.Add(hold))
	}
	st, err := store.Inspect(context.Background(), "ctl")
	if err != nil || !st.Locked || st.Done != 3 {
		t.Fatalf("after the deferred keep the lease is %+v (%v): want held, done still 3", st, err)
	}
	if s := p.Stats(); s.Kept != 2 || s.Deferred != 1 || s.Messages != 5 {
		t.Errorf("stats %+v: want 2 kept, 1 of them deferred, 5 messages", s)
	}
	// The device moves to another socket: the pool lets the lease go, and
	// records the done seq it held back.
	if st := sessionElsewhere(t, ns, store, "ctl"); st.Done != 5 {
		t.Errorf("released with done %d, want 5", st.Done)
	}
}

// waitFree waits until the pool has exactly n free workers.
func waitFree(t *testing.T, p *Pool, n int, msg string) {
	t.Helper()
	wait.For(t, 10*time.Second, func() error {
		if free := p.Free(); free != n {
			return fmt.Errorf("%s: %d free workers, want %d", msg, free, n)
		}
		return nil
	})
}

// TestKeepDeferredWhileLockHolds: whether a batch's keep needs a store
// call is decided by how long the lock, as the acquire or the last keep
// set it, still holds, not by how long ago that call was. A device's
// second batch that ends well over half a heartbeat period after the
// acquire (at 10,000 controllers it comes behind every other
// controller's first one) is kept without a call while the acquire's TTL
// leaves at least the hold less half a heartbeat: no keep script runs,
// the lock keeps the acquire's expiry and the done record waits. Once
// less is left, the keep goes to Redis: it records done and sets the lock
// to expire a hold later.
func TestKeepDeferredWhileLockHolds(t *testing.T) {
	if testing.Short() {
		t.Skip("long: waits out most of a lease")
	}
	const ttl, heartbeat, hold = 4 * time.Second, 100 * time.Millisecond, 2 * time.Second
	redis := redistest.Start(t)
	rc := redis.Client()
	store := lease.NewRedis(rc, "", 0)
	lockKey := store.Keys("ctl")[1]
	clock := coord.NewClock()
	p, _ := startPoolStore(t, Config{Workers: 1, Clock: clock, TTL: ttl, Heartbeat: heartbeat,
		Handler: HandlerFunc(func(ctx context.Context, m *Message) error { return nil })}, store)
	ctx := context.Background()
	outcomes := make(chan coord.Outcome, 4)
	out := func(o coord.Outcome) { outcomes <- o }

	// As a socket of this process does: the lock expires no sooner than a
	// TTL after the acquire began, stamped on the shared clock.
	expires := time.Now().Add(ttl)
	g, err := store.Acquire(ctx, "ctl", p.ID(), ttl, lease.Session{})
	if err != nil {
		t.Fatal(err)
	}
	a := &coord.Assign{Controller: "ctl", Token: g.Token, Valid: ttl, Hold: hold, Socket: "socket-1",
		Clock: clock.ID(), Deadline: clock.At(expires)}
	stamped := clock.Time(a.Deadline)
	batch := func(seqs ...uint64) *coord.Assign {
		b := *a
		b.Msgs = nil
		for _, s := range seqs {
			b.Msgs = append(b.Msgs, coord.Msg{Seq: s, Received: time.Now(), Payload: []byte("x")})
		}
		if !p.Offer(&b, out) {
			t.Fatal("refused")
		}
		return &b
	}
	// The rule reads the clock: the test lets it pass the points it is
	// about (a wait for time itself, not for readiness).
	waitTill := func(when time.Time) { <-time.After(time.Until(when)) }
	deferred := func(what string, done uint64) {
		t.Helper()
		o := waitOutcome(t, outcomes)
		if o.Early || !o.Released || !o.Kept || o.Done != done || !o.Until.Equal(stamped) {
			t.Fatalf("%s: outcome %+v: want final at once, kept until the acquire's expiry %v, done %d", what, o, stamped, done)
		}
		if left := time.Until(o.Until); left < hold-heartbeat/2 {
			t.Errorf("%s: the lock holds %v more: want at least the hold less half a heartbeat", what, left)
		}
		st, err := store.Inspect(ctx, "ctl")
		if err != nil || !st.Locked || st.Done != 0 {
			t.Fatalf("%s: the lease is %+v (%v): want held, nothing recorded yet", what, st, err)
		}
		if pttl, err := rc.PTTL(ctx, lockKey).Result(); err != nil || pttl <= hold {
			t.Fatalf("%s: the lock expires in %v (%v): want the acquire's TTL still running, more than the hold", what, pttl, err)
		}
	}

	batch(1, 2)
	deferred("first batch", 2)
	// Twice half a heartbeat after the acquire: a rule of "within half a
	// heartbeat of the last keep" would call the store now.
	waitTill(expires.Add(-ttl + heartbeat))
	batch(3, 4)
	deferred("second batch, a heartbeat after the acquire", 4)
	if s := p.Stats(); s.Kept != 2 || s.Deferred != 2 {
		t.Errorf("stats %+v: want 2 kept, both deferred", s)
	}

	// Less than the hold less half a heartbeat left: the keep goes to the
	// store, which records done and sets the lock a hold ahead.
	waitTill(expires.Add(-(hold - heartbeat)))
	keepStart := time.Now()
	batch(5)
	if _, o := waitBatch(t, outcomes); !o.Released || !o.Kept || !o.Until.IsZero() || o.Done != 5 {
		t.Fatalf("third batch: outcome %+v: want kept by a store call (no Until), done 5", o)
	}
	st, err := store.Inspect(ctx, "ctl")
	if err != nil || !st.Locked || st.Done != 5 {
		t.Fatalf("after the keep the lease is %+v (%v): want held, done 5", st, err)
	}
	pttl, err := rc.PTTL(ctx, lockKey).Result()
	if err != nil || pttl > hold || time.Now().Add(pttl).Before(keepStart.Add(hold-time.Second)) {
		t.Fatalf("after the keep the lock expires in %v (%v): want about a hold", pttl, err)
	}
	if s := p.Stats(); s.Kept != 3 || s.Deferred != 2 || s.Messages != 5 {
		t.Errorf("stats %+v: want 3 kept, 2 of them deferred, 5 messages", s)
	}
}
