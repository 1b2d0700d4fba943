// Package parser runs the parse logic: a pool of workers that take batches
// of one controller's messages under a lease, run the Handler on each in
// order, heartbeat the lease while they work, release it with the last seq
// handled and report the outcome to the socket that assigned the batch.
package parser

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nuid"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/edgegate/edgegate/coord"
	"github.com/edgegate/edgegate/egp"
	"github.com/edgegate/edgegate/lease"
)

// Config configures a parser pool.
type Config struct {
	// Name is the appliance name, carried in ready announcements. Empty means
	// "edgegate".
	Name string
	// Workers is the number of workers, each running one batch at a time.
	// Zero is refused by New.
	Workers int
	// Handler is the parse logic. Nil is refused by New.
	Handler Handler
	// DeadLetter stores a message the handler refused Attempts times. Nil
	// means the message is dropped with a log line (and still acknowledged
	// with status dead-lettered).
	DeadLetter func(ctx context.Context, m *Message, cause error) error
	// Attempts is how often a message with a permanent error is tried before
	// it is dead-lettered. Zero means 3.
	Attempts int
	// TTL is the lease time. Zero means 5s.
	TTL time.Duration
	// Heartbeat is how often a worker extends its lease. Zero means 1s.
	Heartbeat time.Duration
	// Announce is how often the pool announces free workers while it has
	// some. Zero means 1s.
	Announce time.Duration
	// Drain is how long Run waits for running batches after its context is
	// done before it cancels them. Zero means TTL.
	Drain time.Duration
	// RetryMin and RetryMax bound the backoff between retries of a failed
	// message. Zero means 20ms and 2s.
	RetryMin, RetryMax time.Duration
	// Timeout is how long one attempt at a message may take: the deadline
	// of the handler's context. An attempt that runs out is a transient
	// error, retried: heartbeats keep the lease of a hung handler alive,
	// and without it the controller and a worker would wait forever.
	// Zero means 30s.
	Timeout time.Duration
	// Clock, shared with the sockets of the same process, lets the pool
	// skip the confirming heartbeat of their assignments (see coord.Clock).
	// Nil means every assignment is confirmed.
	Clock *coord.Clock
	// Logger receives the logs. Nil means discard.
	Logger *slog.Logger
}

// DefaultConfig returns the defaults (without a Handler).
func DefaultConfig() Config {
	return Config{
		Name:      "edgegate",
		Workers:   16,
		Attempts:  3,
		TTL:       5 * time.Second,
		Heartbeat: time.Second,
		Announce:  time.Second,
		RetryMin:  20 * time.Millisecond,
		RetryMax:  2 * time.Second,
		Timeout:   30 * time.Second,
	}
}

// Pool is a parser pool.
type Pool struct {
	cfg   Config
	nc    *nats.Conn
	store lease.Store
	log   *slog.Logger
	id    string

	work     chan job
	announce chan struct{}
	tails    sync.WaitGroup // batches releasing and reporting (finish)

	mu      sync.Mutex
	free    int
	stopped bool
	// idle is free, or 0 once stopped, for Free to read without mu (a
	// socket asks under its own lock, for every batch it picks a pool
	// for). Written under mu.
	idle atomic.Int32
	// exhausted is set when the last free worker was taken since the last
	// ready announcement: the next one goes out at once, not coalesced.
	exhausted bool
	kept      map[string]keptLease // leases kept after a batch (Assign.Hold), by controller
	// revoked are kept leases released for a new session on another
	// socket, by controller, until their lock would have expired: a batch
	// still sent under one must confirm it, whatever its sender's clock
	// says (see onSession).
	revoked map[string]keptLease

	stats          Stats
	handlerSeconds prometheus.Histogram
	announced      atomic.Int64 // unix nanos of the last ready announcement
}

// keptLease is a lease the pool kept after a batch: surely held until
// p.heldUntil(k) (a margin before expires), whoever sends the next batch
// under it and however late that arrives.
type keptLease struct {
	fence  uint64
	socket string // the socket that sent the batch
	// expires is when the last store call for the lease that set its lock
	// (a keep, or the acquire) set it to expire, at the soonest: that
	// call's start plus the time it asked for. A batch's own heartbeats
	// extend the lock further without moving expires. The same call set
	// hb, so hb is no older than TTL until expires (an acquire asks for
	// TTL, a keep for Hold, which the appliance's sockets ask as TTL/2),
	// and a batch, valid only until p.heldUntil(k) unless it heartbeats,
	// never runs with an hb the socket's check loop takes for a dead
	// parser's.
	expires time.Time
	// done is the last seq handled under the lease; recorded tells whether
	// the store has it (a keep skipped for a socket of this process leaves
	// it to that socket, see keepLater).
	done     uint64
	recorded bool
}

type job struct {
	a     *coord.Assign
	reply string              // NATS subject of the outcome
	out   func(coord.Outcome) // or, for an in-process assignment (Offer), its callback
	recv  time.Time
}

// New validates cfg and returns a pool that uses nc for NATS and store for
// leases. Run starts it.
func New(cfg Config, nc *nats.Conn, store lease.Store) (*Pool, error) {
	d := DefaultConfig()
	if cfg.Name == "" {
		cfg.Name = d.Name
	}
	if cfg.Workers <= 0 {
		return nil, errors.New("parser: workers must be at least 1")
	}
	if cfg.Handler == nil {
		return nil, errors.New("parser: no handler")
	}
	if cfg.Attempts <= 0 {
		cfg.Attempts = d.Attempts
	}
	if cfg.TTL <= 0 {
		cfg.TTL = d.TTL
	}
	if cfg.Heartbeat <= 0 {
		cfg.Heartbeat = d.Heartbeat
	}
	if cfg.Announce <= 0 {
		cfg.Announce = d.Announce
	}
	if cfg.Drain <= 0 {
		cfg.Drain = cfg.TTL
	}
	if cfg.RetryMin <= 0 {
		cfg.RetryMin = d.RetryMin
	}
	if cfg.RetryMax <= 0 {
		cfg.RetryMax = d.RetryMax
	}
	if cfg.Timeout <= 0 {
		cfg.Timeout = d.Timeout
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	p := &Pool{
		cfg:      cfg,
		nc:       nc,
		store:    store,
		id:       nuid.Next(),
		work:     make(chan job, cfg.Workers),
		announce: make(chan struct{}, 1),
		free:     cfg.Workers,
		kept:     make(map[string]keptLease),
		revoked:  make(map[string]keptLease),

		handlerSeconds: newHandlerHistogram(),
	}
	p.idle.Store(int32(cfg.Workers))
	p.log = cfg.Logger.With("pool", p.id)
	return p, nil
}

// ID returns the pool's instance ID, the owner in the lease tokens it holds.
func (p *Pool) ID() string { return p.id }

// Run serves assignments until ctx is done, then stops taking new ones,
// lets running batches finish for up to Drain and cancels what is left.
func (p *Pool) Run(ctx context.Context) error {
	sub, err := p.nc.Subscribe(coord.PoolSubject(p.id), p.onAssign)
	if err != nil {
		return fmt.Errorf("parser: subscribe: %w", err)
	}
	sub.SetPendingLimits(-1, -1) // assignments are bounded by the workers; never drop one
	stsub, err := p.nc.Subscribe(coord.SubjectStatus, p.onStatus)
	if err != nil {
		sub.Unsubscribe()
		return fmt.Errorf("parser: subscribe: %w", err)
	}
	defer stsub.Unsubscribe()
	// A new device session of a controller means its old socket may be
	// gone: a lease kept for it (no batch running) is released, so that the
	// new session's socket need not wait for it to expire. Should the old
	// socket still send under it, the batch fails its confirmation and is
	// fenced.
	ssub, err := p.nc.Subscribe(coord.SessionSubject("*"), p.onSession)
	if err != nil {
		sub.Unsubscribe()
		return fmt.Errorf("parser: subscribe: %w", err)
	}
	defer ssub.Unsubscribe()
	qsub, err := p.nc.Subscribe(coord.SubjectReadyQuery, func(*nats.Msg) {
		select {
		case p.announce <- struct{}{}:
		default:
		}
	})
	if err != nil {
		sub.Unsubscribe()
		return fmt.Errorf("parser: subscribe: %w", err)
	}
	// The subscriptions are in place at the server before the pool counts
	// as started: a session announced by another connection after that
	// reaches it.
	if err := p.nc.FlushTimeout(p.cfg.TTL); err != nil {
		sub.Unsubscribe()
		qsub.Unsubscribe()
		return fmt.Errorf("parser: subscribe: %w", err)
	}
	p.log.Info("parser pool started", "workers", p.cfg.Workers)

	// Handlers run under hctx: cancelled only after the drain period, so
	// that batches running at shutdown can finish and release their leases.
	hctx, hcancel := context.WithCancel(context.WithoutCancel(ctx))
	defer hcancel()
	var wg sync.WaitGroup
	for i := 0; i < p.cfg.Workers; i++ {
		wg.Go(func() { p.workerLoop(hctx) })
	}
	actx, acancel := context.WithCancel(ctx)
	wg.Go(func() { p.announceLoop(actx) })

	<-ctx.Done()
	p.mu.Lock()
	p.stopped = true
	p.idle.Store(0)
	close(p.work)
	p.mu.Unlock()
	_ = sub.Unsubscribe()
	_ = qsub.Unsubscribe()
	acancel()
	p.publishReady() // free 0: sockets stop sending here
	done := make(chan struct{})
	go func() { wg.Wait(); close(done) }()
	select {
	case <-done:
	case <-time.After(p.cfg.Drain):
		p.log.Warn("parser pool: batches still running after the drain period, cancelling them", "drain", p.cfg.Drain)
		hcancel()
		<-done
	}
	p.tails.Wait() // releases and outcomes of the last batches
	p.log.Info("parser pool stopped")
	return nil
}

// onAssign answers an assignment at once: accepted when a worker is free,
// busy otherwise. It runs on the subscription's goroutine.
func (p *Pool) onAssign(msg *nats.Msg) {
	recv := time.Now()
	a, err := coord.DecodeAssign(msg.Data)
	if err != nil {
		p.stats.malformed.Add(1)
		p.log.Warn("parser: malformed assignment dropped", "err", err, "reply", msg.Reply)
		return
	}
	a.Socket = coord.SocketOf(msg.Reply)
	ok := p.take(job{a: a, reply: msg.Reply, recv: recv})
	ans := coord.Answer{Controller: a.Controller, Fence: a.Token.Fence, Accepted: ok, Pool: p.id}
	if msg.Reply != "" {
		if err := p.nc.Publish(msg.Reply, coord.AppendAnswer(nil, &ans)); err != nil {
			p.log.Warn("parser: answer", "controller", a.Controller, "err", err)
		}
	}
}

// Offer takes an assignment from a socket of the same process directly,
// without NATS (socket.Config.Local): the same protocol with the answer as
// the result and the outcome as a call. True means a worker took it, and
// outcome is then called once, on another goroutine, when the batch is
// over, and before that, once its messages are handled, with their
// statuses (coord.Outcome.Early); false means busy (every worker is, or
// the pool is stopping). The payloads in a are read, never changed, until
// the first call.
func (p *Pool) Offer(a *coord.Assign, outcome func(coord.Outcome)) bool {
	p.stats.direct.Add(1)
	return p.take(job{a: a, out: outcome, recv: time.Now()})
}

// Free returns how many workers are idle (0 once the pool stops).
func (p *Pool) Free() int { return int(p.idle.Load()) }

// take queues j for a worker if one is free.
func (p *Pool) take(j job) bool {
	// The send never blocks: every job in the channel or running holds one
	// of the free slots, and the channel has room for all of them. It is
	// done under mu so that Run cannot close the channel meanwhile.
	p.mu.Lock()
	ok := !p.stopped && p.free > 0
	if ok {
		p.free--
		p.idle.Store(int32(p.free))
		p.work <- j
		if p.free == 0 {
			p.exhausted = true
		}
	}
	p.mu.Unlock()
	if !ok {
		p.stats.busy.Add(1)
	}
	return ok
}

func (p *Pool) workerLoop(ctx context.Context) {
	for j := range p.work {
		then := p.runBatch(ctx, j)
		p.mu.Lock()
		p.free++
		if !p.stopped {
			p.idle.Store(int32(p.free))
		}
		p.mu.Unlock()
		select {
		case p.announce <- struct{}{}:
		default:
		}
		// The batch's outcome goes out once this worker counts as free:
		// a socket that gets it offers the controller's next batch at
		// once, and must not find the pool busy.
		then()
	}
}

// announceGap is the least time between two ready announcements made
// because workers freed up, unless every worker was busy in between:
// sockets count the workers they took and got back themselves, and an
// announcement per batch costs every socket a JSON decode.
const announceGap = 5 * time.Millisecond

// announceLoop publishes ready announcements when a worker frees up (at
// once after all were busy, else at most every announceGap) and every
// Announce period.
func (p *Pool) announceLoop(ctx context.Context) {
	t := time.NewTicker(p.cfg.Announce)
	defer t.Stop()
	p.publishReady()
	last := time.Now()
	var soon <-chan time.Time // a coalesced announcement is due then
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
			p.pruneKept()
		case <-p.announce:
			if soon != nil {
				continue
			}
			p.mu.Lock()
			exhausted := p.exhausted
			p.mu.Unlock()
			if wait := announceGap - time.Since(last); wait > 0 && !exhausted {
				soon = time.After(wait)
				continue
			}
		case <-soon:
		}
		soon = nil
		p.publishReady()
		last = time.Now()
	}
}

// pruneKept forgets kept leases that ran out (the socket released them,
// or sent no more).
func (p *Pool) pruneKept() {
	now := time.Now()
	p.mu.Lock()
	defer p.mu.Unlock()
	for id, k := range p.kept {
		if now.After(p.heldUntil(k)) {
			delete(p.kept, id)
		}
	}
	for id, k := range p.revoked {
		if now.After(k.expires) {
			delete(p.revoked, id)
		}
	}
}

// onSession releases the lease kept for a controller that opened a new
// device session on another socket. A new session on the socket the lease
// was kept for is that socket's own business: it goes on under the lease,
// or releases it when the device goes (and its announcement of the
// session may arrive after the batch that kept the lease, which it sent to
// this pool directly, not over NATS).
func (p *Pool) onSession(m *nats.Msg) {
	id := m.Subject[strings.LastIndexByte(m.Subject, '.')+1:]
	p.mu.Lock()
	k, ok := p.kept[id]
	if ok && k.socket != "" && k.socket == string(m.Data) {
		ok = false
	} else if ok {
		delete(p.kept, id)
		// The socket it was kept for, if of this process, may already
		// have taken the next batch and stamped it as surely held.
		p.revoked[id] = k
	}
	p.mu.Unlock()
	if !ok || time.Now().After(p.heldUntil(k)) {
		return
	}
	p.tails.Go(func() {
		ctx, cancel := context.WithTimeout(context.Background(), p.cfg.Heartbeat)
		defer cancel()
		tok := lease.Token{Fence: k.fence, Owner: p.id}
		var err error
		if k.recorded {
			err = p.store.Abandon(ctx, id, tok)
		} else {
			err = p.store.Release(ctx, id, tok, k.done)
		}
		if err != nil && !errors.Is(err, lease.ErrLost) {
			p.log.Warn("parser: releasing a kept lease for a new session failed; it expires by itself", "controller", id, "err", err)
		}
	})
}

// heldUntil is until when k is surely held: a margin for clock rate
// differences before its lock expires.
func (p *Pool) heldUntil(k keptLease) time.Time { return k.expires.Add(-p.cfg.TTL / 10) }

// takeKept returns the lease this pool kept for a after the controller's
// previous batch (zero if none, or another), and forgets it: the batch's
// own end records it again. Revoked tells whether a is under a kept lease
// that onSession released.
func (p *Pool) takeKept(a *coord.Assign) (k keptLease, revoked bool) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if len(p.revoked) > 0 {
		r, ok := p.revoked[a.Controller]
		revoked = ok && r.fence == a.Token.Fence
	}
	k, ok := p.kept[a.Controller]
	if !ok {
		return keptLease{}, revoked
	}
	delete(p.kept, a.Controller)
	if k.fence != a.Token.Fence {
		return keptLease{}, revoked
	}
	return k, revoked
}

func (p *Pool) publishReady() {
	p.mu.Lock()
	free := p.free
	p.exhausted = false
	if p.stopped {
		free = 0
	}
	p.mu.Unlock()
	r := coord.Ready{
		Pool: p.id, Appliance: p.cfg.Name, Subject: coord.PoolSubject(p.id),
		Free: free, Workers: p.cfg.Workers, Busy: p.cfg.Workers - free,
	}
	p.announced.Store(time.Now().UnixNano())
	b, _ := marshalReady(&r)
	if err := p.nc.Publish(coord.SubjectReady, b); err != nil && !errors.Is(err, nats.ErrConnectionClosed) {
		p.log.Warn("parser: ready announcement", "err", err)
	}
}

// runBatch runs one assignment: handle every message in order under the
// lease, heartbeating. It returns what remains once the worker is free
// again: reporting the outcome, or releasing the lease and then reporting.
func (p *Pool) runBatch(ctx context.Context, j job) (then func()) {
	a := j.a
	log := &batchLog{base: p.log, a: a}
	// The lease is valid until the socket's view of it minus a margin for
	// the transit of the assignment and clock rate differences.
	margin := p.cfg.TTL / 10
	valid := j.recv.Add(a.Valid - margin)

	bctx, cancel := context.WithCancelCause(ctx)
	defer cancel(nil)
	// Confirm the lease with the store before the first message: the
	// assignment may have been delayed (a stopped process, a slow network)
	// past the lease it was sent under, while another parser already got
	// the controller. The lease's validity then runs from this heartbeat.
	// A socket of this process says on the shared clock until when the
	// lease is surely held: with at least a heartbeat period left, no
	// confirmation is needed.
	// A batch under a lease this pool kept after the controller's previous
	// batch needs no confirmation either: the keep confirmed it.
	// A lease this pool kept and then released for a new session elsewhere
	// (onSession) carries no batch any more: its socket may have sent one
	// before it heard of the session, and a confirmation could land
	// before the release does, which would then delete the lock under a
	// running batch.
	confirm := true
	kept, revoked := p.takeKept(a)
	if revoked {
		p.stats.leaseLost.Add(1)
		log.get().Info("parser: batch under a lease released for a newer session, not started")
		return func() { p.reply(log, j, &coord.Outcome{Controller: a.Controller, Fence: a.Token.Fence}) }
	}
	var stamped time.Time // the lock expires no sooner, says a socket of this process
	// Only in a call (Offer): over NATS anyone could claim the clock.
	if c := p.cfg.Clock; c != nil && j.out != nil && a.Clock == c.ID() && !revoked {
		if held := c.Time(a.Deadline).Add(-margin); time.Until(held) > p.cfg.Heartbeat {
			valid, confirm, stamped = held, false, c.Time(a.Deadline)
			p.stats.unconfirmed.Add(1)
		}
	}
	// Its first heartbeat comes early enough (see heartbeat.loop).
	if kept.expires.IsZero() && !stamped.IsZero() {
		// A lease fresh from its acquire, which set the lock to expire a
		// TTL after it began: that counts as its last keep, so that the
		// batch's own keep may be deferred too (keepLater). The socket
		// stamps the acquire's start plus TTL, or, for a lease it
		// continues after a keep this pool no longer knows of, when that
		// keep set the lock to expire at the soonest (its Outcome.Until,
		// or a Hold after the batch before it was sent, which the keep
		// began after): either is no later than the lock's expiry, and
		// the store call that set it set hb too.
		kept = keptLease{fence: a.Token.Fence, socket: a.Socket, expires: stamped, recorded: true}
	}
	if held := p.heldUntil(kept); confirm && time.Until(held) > margin {
		valid, confirm = held, false
		p.stats.unconfirmed.Add(1)
	}
	hb := newHeartbeat(p, a, valid, cancel)
	if confirm {
		if err := hb.confirm(ctx); err != nil {
			p.stats.leaseLost.Add(1)
			log.get().Warn("parser: lease not confirmed, batch not started", "err", err)
			return func() { p.reply(log, j, &coord.Outcome{Controller: a.Controller, Fence: a.Token.Fence}) }
		}
	}
	hb.start(bctx)

	statuses := make([]byte, 0, len(a.Msgs))
	var done uint64
	lctx := newMsgContext(&leaseContext{bctx, hb}, p.cfg.Timeout)
	defer lctx.close()
	m := new(Message) // one per batch, refilled per message: valid only during Handle
	now := time.Now()
	first := 0 // messages a pipeline took care of (all, unless stopped)
	if pl := p.pipeline(); pl != nil {
		statuses, done, now = p.runPipelined(lctx, pl, now, log, a, statuses, func(h Handler, now time.Time, m *Message, cm *coord.Msg) (egp.Status, time.Time, bool) {
			return p.handle(lctx, h, now, log, a, m, cm)
		})
		first = len(statuses)
	}
	for i := first; i < len(a.Msgs); i++ {
		var st egp.Status
		var ok bool
		st, now, ok = p.handle(lctx, p.cfg.Handler, now, log, a, m, &a.Msgs[i])
		if !ok {
			break
		}
		statuses = append(statuses, byte(st))
		done = a.Msgs[i].Seq
	}
	lost := hb.stop()

	if j.out != nil && !lost && len(statuses) > 0 && a.Hold > 0 && p.keepLater(a, kept, done) {
		// Kept without a store call (see keepLater): the outcome is final
		// at once. Counted first, like every outcome: whoever reads the
		// stats after an ACK finds its batch in them.
		p.stats.kept.Add(1)
		p.stats.deferred.Add(1)
		p.count(len(statuses))
		return func() {
			j.out(coord.Outcome{Controller: a.Controller, Fence: a.Token.Fence, Released: true, Kept: true,
				Until: kept.expires, Done: done, Statuses: statuses})
		}
	}
	// The release and the outcome need Redis and NATS round trips but no
	// worker: they run on their own, and the worker takes the next batch
	// (of another controller: the socket dispatches this one again only
	// after the outcome, which follows the release).
	return func() { p.tails.Go(func() { p.finish(log, j, lost, done, statuses) }) }
}

// finish releases a batch's lease and reports its outcome to the socket.
func (p *Pool) finish(log *batchLog, j job, lost bool, done uint64, statuses []byte) {
	a := j.a
	o := coord.Outcome{Controller: a.Controller, Fence: a.Token.Fence}
	handled := len(statuses)
	if j.out != nil && !lost && handled > 0 {
		// A socket of this process acknowledges what was handled now: it
		// was handled under a lease surely held (heartbeat.stop says so),
		// and the keep or release below only decides what becomes of the
		// lease. Over NATS the statuses wait for it, as they always did.
		p.count(handled)
		j.out(coord.Outcome{Controller: a.Controller, Fence: a.Token.Fence, Released: true, Done: done, Statuses: statuses, Early: true})
		statuses = nil
	}
	switch {
	case lost:
		p.stats.leaseLost.Add(1)
		log.get().Warn("parser: lease lost, batch fenced", "handled", handled, "of", len(a.Msgs))
	case handled == 0:
		// Stopped before the first message finished: hand the batch back.
		o.Released = p.release(log, a, 0, false) == nil
	case a.Hold > 0 && p.keep(log, a, done, &o):
		o.Released, o.Done, o.Statuses = true, done, statuses
		if o.Kept {
			p.stats.kept.Add(1)
		}
		p.count(len(statuses))
	default:
		if err := p.release(log, a, done, true); err == nil {
			o.Released, o.Done, o.Statuses = true, done, statuses
			p.count(len(statuses))
		}
	}
	p.reply(log, j, &o)
}

// count counts a batch of n messages acknowledged to its socket (none:
// its statuses went ahead, see finish).
func (p *Pool) count(n int) {
	if n > 0 {
		p.stats.batches.Add(1)
		p.stats.messages.Add(uint64(n))
	}
}

// keepLater keeps a's lease for the controller's next batch without a
// store call when the lock, as its last keep (kept) or the acquire set it,
// still has at least a.Hold less half a heartbeat period left (and at
// least half of a.Hold): a keep would move its expiry little further, or
// nearer (it sets it a.Hold from its start). The outcome tells the socket
// exactly until when (Outcome.Until); the socket sends under the lease
// only until a margin before that. At least as much is left as the former
// rule (within half a heartbeat of the last keep) left, so the socket's
// release of a lease whose done seq is not recorded (a check round early)
// still comes before the lock expires. After an acquire (a TTL) the keeps
// of the first TTL - a.Hold + Heartbeat/2 (3 s by default) go without a
// call: a device's burst costs an acquire and a release even when its
// later batches queue behind thousands of other controllers'. A deferred
// keep writes no hb, and needs none: hb, written with the lock's expiry,
// stays younger than TTL while a batch runs (see keptLease.expires).
// done is not recorded: the socket, of this process, records it when it
// lets the lease go (see coord.Outcome.Until), and the next keep records
// it. Only a crash in between leaves the record behind what was
// acknowledged: by the messages of at most half a heartbeat period after
// a keep, of at most TTL - a.Hold + Heartbeat/2 after an acquire.
// Duplicates after a fault, not losses. A steadily busy controller so
// costs the store two calls a second, not one per batch. False means keep
// it with a store call.
func (p *Pool) keepLater(a *coord.Assign, kept keptLease, done uint64) bool {
	if kept.expires.IsZero() {
		return false
	}
	if left := time.Until(kept.expires); left < a.Hold-p.cfg.Heartbeat/2 || left < a.Hold/2 {
		return false
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.stopped {
		return false
	}
	kept.done, kept.recorded = done, false
	p.kept[a.Controller] = kept
	return true
}

// keep records done and keeps the lease for the controller's next batch,
// for a.Hold, when the pool is not stopping (o.Kept), or finds that a
// newer session of the controller exists, in which case the store
// recorded done and let the lease go. False means release instead; a
// lease found lost stays lost (release fails too).
func (p *Pool) keep(log *batchLog, a *coord.Assign, done uint64, o *coord.Outcome) bool {
	p.mu.Lock()
	stopped := p.stopped
	p.mu.Unlock()
	if stopped {
		return false
	}
	ctx, cancel := context.WithTimeout(context.Background(), p.cfg.Heartbeat)
	defer cancel()
	start := time.Now()
	if err := p.store.Keep(ctx, a.Controller, a.Token, a.Hold, done); errors.Is(err, lease.ErrSuperseded) {
		return true
	} else if err != nil {
		if !errors.Is(err, lease.ErrLost) {
			log.get().Warn("parser: keeping the lease failed, releasing it", "err", err)
		}
		return false
	}
	p.mu.Lock()
	p.kept[a.Controller] = keptLease{
		fence: a.Token.Fence, socket: a.Socket,
		expires: start.Add(a.Hold), done: done, recorded: true,
	}
	p.mu.Unlock()
	o.Kept = true
	return true
}

// reply reports a batch's outcome to the socket that assigned it.
func (p *Pool) reply(log *batchLog, j job, o *coord.Outcome) {
	if j.out != nil {
		j.out(*o)
		return
	}
	if j.reply == "" {
		return
	}
	o.Pool = p.id // the socket takes outcomes only from the pool it assigned
	if err := p.nc.Publish(j.reply, coord.AppendOutcome(nil, o)); err != nil {
		log.get().Warn("parser: outcome", "err", err)
	}
}

// release releases the lease, recording done when setDone; without setDone
// the record is left as the grant found it. Errors are logged here.
func (p *Pool) release(log *batchLog, a *coord.Assign, done uint64, setDone bool) error {
	ctx, cancel := context.WithTimeout(context.Background(), p.cfg.Heartbeat)
	defer cancel()
	var err error
	if setDone {
		err = p.store.Release(ctx, a.Controller, a.Token, done)
	} else {
		err = p.store.Abandon(ctx, a.Controller, a.Token)
	}
	if err != nil {
		p.stats.leaseLost.Add(1)
		log.get().Warn("parser: release failed; the batch is fenced unless its statuses went ahead (Early)", "err", err)
	}
	return err
}

// handle runs h (the pool's handler, or a pipeline's one-message
// adapter) on cm, filled into m, with retries, starting at
// now (the clock read once per message boundary: a batch of short
// messages is mostly clock reads otherwise). It returns the time it finished, and false when
// ctx was cancelled before the message was finished.
func (p *Pool) handle(ctx *msgContext, h Handler, now time.Time, log *batchLog, a *coord.Assign, m *Message, cm *coord.Msg) (egp.Status, time.Time, bool) {
	*m = Message{
		Controller: a.Controller, Seq: cm.Seq, Gen: a.Gen, Fence: a.Token.Fence,
		Received: cm.Received, Payload: cm.Payload, Proto: a.Proto,
	}
	backoff := p.cfg.RetryMin
	permanent := 0
	for attempt := 1; ; attempt++ {
		if ctx.errAt(now) != nil {
			return 0, now, false
		}
		m.Attempt = attempt
		ctx.begin(now)
		err := h.Handle(ctx, m)
		end := time.Now()
		err = ctx.end(end, err)
		p.handlerSeconds.Observe(end.Sub(now).Seconds())
		now = end
		if err == nil {
			return egp.StatusProcessed, now, true
		}
		if ctx.Err() != nil {
			return 0, now, false
		}
		if IsPermanent(err) {
			permanent++
			if permanent >= p.cfg.Attempts {
				st, ok := p.deadLetter(ctx, log, m, err)
				return st, time.Now(), ok
			}
		} else {
			p.stats.transient.Add(1)
			if attempt == 1 || attempt%50 == 0 {
				log.get().Warn("parser: handler failed, retrying", "seq", m.Seq, "attempt", attempt, "err", err)
			}
		}
		if !sleep(ctx, backoff) {
			return 0, now, false
		}
		now = time.Now()
		backoff = min(backoff*2, p.cfg.RetryMax)
	}
}

// deadLetter stores m as a dead letter, retrying store errors like a
// transient handler error.
func (p *Pool) deadLetter(ctx context.Context, log *batchLog, m *Message, cause error) (egp.Status, bool) {
	log.get().Warn("parser: message dead-lettered", "seq", m.Seq, "attempts", m.Attempt, "err", cause)
	p.stats.dead.Add(1)
	if p.cfg.DeadLetter == nil {
		return egp.StatusDeadLettered, true
	}
	backoff := p.cfg.RetryMin
	for {
		err := p.cfg.DeadLetter(ctx, m, cause)
		if err == nil {
			return egp.StatusDeadLettered, true
		}
		if ctx.Err() != nil {
			return 0, false
		}
		log.get().Warn("parser: dead letter failed, retrying", "seq", m.Seq, "err", err)
		if !sleep(ctx, backoff) {
			return 0, false
		}
		backoff = min(backoff*2, p.cfg.RetryMax)
	}
}

func sleep(ctx context.Context, d time.Duration) bool {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return false
	case <-t.C:
		return true
	}
}

// Healthy reports whether the pool works: its announcement loop ran within
// three announce periods (the loop is what sockets find the pool by).
func (p *Pool) Healthy() error {
	last := p.announced.Load()
	if last == 0 {
		return errors.New("parser pool not started")
	}
	if age := time.Since(time.Unix(0, last)); age > 3*p.cfg.Announce {
		return fmt.Errorf("parser pool silent for %v", age.Round(time.Millisecond))
	}
	return nil
}

// batchLog is a batch's logger, built on first use: most batches log
// nothing, and building it costs allocations per batch.
type batchLog struct {
	base *slog.Logger
	a    *coord.Assign
	l    *slog.Logger
}

func (b *batchLog) get() *slog.Logger {
	if b.l == nil {
		b.l = b.base.With("controller", b.a.Controller, "fence", b.a.Token.Fence)
	}
	return b.l
}
