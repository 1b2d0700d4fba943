// Package parser runs the parse logic: a pool of workers that take batches
// of one controller's messages under a lease, run the Handler on each in
// order, heartbeat the lease while they work, then keep or release it with
// the last seq handled and report the outcome to the socket that assigned
// the batch.
package parser

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"sync/atomic"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nuid"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/edgegate/edgegate/coord"
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
	// superseded are kept leases released for a new session on another
	// socket, by controller, until their lock would have expired: a batch
	// still sent under one is fenced unstarted, whatever its sender's
	// clock says (see onSession and runBatch).
	superseded map[string]keptLease

	stats          Stats
	handlerSeconds prometheus.Histogram
	announced      atomic.Int64 // unix nanos of the last ready announcement

	// afterTake, set by tests before Run, runs when a worker took an
	// assignment that came over NATS: the worker may finish it meanwhile.
	afterTake func()
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
		cfg:        cfg,
		nc:         nc,
		store:      store,
		id:         nuid.Next(),
		work:       make(chan job, cfg.Workers),
		announce:   make(chan struct{}, 1),
		free:       cfg.Workers,
		kept:       make(map[string]keptLease),
		superseded: make(map[string]keptLease),

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
