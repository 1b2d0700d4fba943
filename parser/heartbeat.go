package parser

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"time"

	"github.com/edgegate/edgegate/coord"
	"github.com/edgegate/edgegate/lease"
)

// errLeaseLost is the cancellation cause of a batch whose lease is lost.
var errLeaseLost = errors.New("parser: lease lost")

// heartbeat keeps a batch's lease alive. When it cannot confirm the lease
// until the validity deadline, or the store says the lease is gone, it
// cancels the batch: whatever the handler produces after that is fenced.
//
// Most batches end before their first heartbeat is due: until then a
// heartbeat is a timer, and only when it fires does a goroutine run the
// heartbeats (loop).
type heartbeat struct {
	p      *Pool
	a      *coord.Assign
	cancel context.CancelCauseFunc
	first  *time.Timer

	mu      sync.Mutex
	valid   time.Time // the lease is ours until then
	lost    bool
	stopped bool
	quit    chan struct{} // made when the loop starts
	exited  chan struct{}
}

func newHeartbeat(p *Pool, a *coord.Assign, valid time.Time, cancel context.CancelCauseFunc) *heartbeat {
	return &heartbeat{p: p, a: a, valid: valid, cancel: cancel}
}

// start arms the first heartbeat; from then on they run until stop.
func (h *heartbeat) start(ctx context.Context) {
	h.first = time.AfterFunc(h.next(), func() {
		h.mu.Lock()
		if h.stopped {
			h.mu.Unlock()
			return
		}
		h.quit, h.exited = make(chan struct{}), make(chan struct{})
		h.mu.Unlock()
		h.loop(ctx)
	})
}

// confirm heartbeats once, synchronously, retrying errors until the
// assignment's own validity runs out. On success the lease is valid for a
// TTL from the start of the call.
func (h *heartbeat) confirm(ctx context.Context) error {
	margin := h.p.cfg.TTL / 10
	for backoff := 10 * time.Millisecond; ; backoff = min(2*backoff, 200*time.Millisecond) {
		start := time.Now()
		cctx, cancel := context.WithTimeout(ctx, h.p.cfg.Heartbeat)
		err := h.p.store.Heartbeat(cctx, h.a.Controller, h.a.Token, h.p.cfg.TTL)
		cancel()
		if err == nil {
			h.mu.Lock()
			h.valid = start.Add(h.p.cfg.TTL - margin)
			h.mu.Unlock()
			return nil
		}
		if errors.Is(err, lease.ErrLost) {
			return err
		}
		h.mu.Lock()
		expired := time.Now().Add(backoff).After(h.valid)
		h.mu.Unlock()
		if expired || !sleep(ctx, backoff) {
			return fmt.Errorf("%w: no heartbeat confirmed: %v", lease.ErrLost, err)
		}
	}
}

// next is the wait before the next heartbeat: a Heartbeat period, or half
// of what is left of the lease when that is less (a batch under a kept
// lease may start with little of it left).
func (h *heartbeat) next() time.Duration {
	h.mu.Lock()
	left := time.Until(h.valid)
	h.mu.Unlock()
	return max(min(h.p.cfg.Heartbeat, left/2), time.Millisecond)
}

// loop heartbeats at once and then every next(), until quit or ctx is
// done, or the lease is lost.
func (h *heartbeat) loop(ctx context.Context) {
	defer close(h.exited)
	tick := time.NewTimer(0)
	defer tick.Stop()
	h.mu.Lock()
	deadline := time.NewTimer(time.Until(h.valid))
	h.mu.Unlock()
	defer deadline.Stop()
	margin := h.p.cfg.TTL / 10
	failures := 0
	for {
		select {
		case <-h.quit:
			return
		case <-ctx.Done():
			return
		case <-deadline.C:
			h.lose("no heartbeat confirmed within the lease")
			return
		case <-tick.C:
		}
		start := time.Now()
		cctx, ccancel := context.WithTimeout(ctx, h.p.cfg.Heartbeat)
		err := h.p.store.Heartbeat(cctx, h.a.Controller, h.a.Token, h.p.cfg.TTL)
		ccancel()
		switch {
		case err == nil:
			failures = 0
			h.mu.Lock()
			h.valid = start.Add(h.p.cfg.TTL - margin)
			deadline.Reset(time.Until(h.valid))
			h.mu.Unlock()
		case errors.Is(err, lease.ErrLost):
			h.lose("the store says the lease is gone")
			return
		default:
			// Unknown: keep working until the deadline, trying again.
			failures++
			if failures == 1 {
				h.p.log.Warn("parser: heartbeat failed, retrying until the lease runs out",
					"controller", h.a.Controller, "err", err)
			}
		}
		tick.Reset(h.next())
	}
}

func (h *heartbeat) lose(why string) {
	h.mu.Lock()
	h.lost = true
	h.mu.Unlock()
	h.p.log.Warn("parser: lease lost, stopping the batch", "controller", h.a.Controller,
		"fence", h.a.Token.Fence, "why", why)
	h.cancel(errLeaseLost)
}

// stop ends the heartbeats and reports whether the lease was lost. When it
// returns false the lease was still confirmed valid: it is safe to release.
func (h *heartbeat) stop() (lost bool) {
	h.first.Stop()
	h.mu.Lock()
	h.stopped = true
	quit, exited := h.quit, h.exited
	h.mu.Unlock()
	if quit != nil {
		close(quit)
		<-exited
	}
	h.mu.Lock()
	defer h.mu.Unlock()
	if !h.lost && time.Now().After(h.valid) {
		h.lost = true
	}
	return h.lost
}

// leaseContext is the context handlers run under: besides being cancelled
// when the lease is lost, its Err reports the loss as soon as the lease's
// validity has passed by the clock, even before the heartbeat goroutine
// noticed (a process resumed after SIGSTOP runs its handler and its
// heartbeat timer in any order). The publisher checks Err right before it
// writes output, so work done after the lease ran out is not published.
// A batch makes one and passes the pointer to every Handle call (a value
// would be boxed into the interface once per message).
//
// It has no Deadline: the validity moves on with every heartbeat and Done
// does not close when it passes, so a deadline derived from it would be
// neither fixed nor kept. A context.WithTimeout under a deadline sooner
// than its own arms no timer, and a publish whose acknowledgement was lost
// would then wait for as long as the lease lives.
type leaseContext struct {
	context.Context
	hb *heartbeat
}

func (c *leaseContext) Err() error { return c.errAt(time.Now()) }

// errAt is Err with the clock read by the caller.
func (c *leaseContext) errAt(now time.Time) error {
	if err := c.Context.Err(); err != nil {
		return err
	}
	c.hb.mu.Lock()
	defer c.hb.mu.Unlock()
	if now.After(c.hb.valid) {
		return context.DeadlineExceeded
	}
	return nil
}
