package parser

import (
	"context"
	"fmt"
	"sync"
	"time"
)

// msgContext is the context of one attempt at a message: the batch's
// leaseContext, done also when the attempt's deadline (Config.Timeout)
// passes. A batch makes one and arms it per attempt (begin, end): a
// context and a timer per message would cost allocations on the hot path.
// Its one timer is not moved per attempt either: set for the first
// attempt's deadline, it finds later ones no sooner (they start later)
// and sets itself again for the running attempt's (expire).
type msgContext struct {
	*leaseContext
	timeout   time.Duration
	timer     *time.Timer // runs expire; made by the first begin
	stopLease func() bool // unregisters leaseDone from the batch's context

	mu       sync.Mutex
	deadline time.Time     // of the running attempt; zero between attempts
	armed    bool          // the timer is set, for no later than deadline
	done     chan struct{} // closed once err is set
	err      error
	expired  bool // done was closed by the attempt's deadline
	funcs    []afterFunc
	nextFunc uint64
}

type afterFunc struct {
	id uint64
	f  func()
}

func newMsgContext(lctx *leaseContext, timeout time.Duration) *msgContext {
	c := &msgContext{leaseContext: lctx, timeout: timeout, done: make(chan struct{})}
	c.stopLease = context.AfterFunc(lctx.Context, c.leaseDone)
	return c
}

// begin arms the deadline of an attempt starting at now (no later than
// the clock).
func (c *msgContext) begin(now time.Time) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.deadline = now.Add(c.timeout)
	switch {
	case c.armed:
	case c.timer == nil:
		c.timer = time.AfterFunc(c.timeout, c.expire)
	default:
		c.timer.Reset(c.timeout)
	}
	c.armed = true
}

// end disarms the deadline of the attempt that returned err at now, and
// returns err, saying so when the deadline had passed. After an expired
// attempt the context is live again for the retry (its backoff waits on
// Done), unless the lease's context is done too.
func (c *msgContext) end(now time.Time, err error) error {
	c.mu.Lock()
	expired := c.expired || !now.Before(c.deadline)
	c.deadline = time.Time{}
	if c.expired && c.leaseContext.Context.Err() == nil {
		c.done, c.err, c.expired = make(chan struct{}), nil, false
	}
	c.mu.Unlock()
	if expired && err != nil {
		return fmt.Errorf("not done within parser.timeout (%v): %w", c.timeout, err)
	}
	return err
}

// close releases what the batch's context holds for c.
func (c *msgContext) close() {
	c.stopLease()
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.timer != nil {
		c.timer.Stop()
	}
}

// expire closes done when the running attempt's deadline has passed, and
// sets the timer again for a running attempt's that has not.
func (c *msgContext) expire() {
	c.mu.Lock()
	if c.err != nil || c.deadline.IsZero() {
		c.armed = false // the next begin sets it
		c.mu.Unlock()
		return
	}
	if left := time.Until(c.deadline); left > 0 {
		c.timer.Reset(left)
		c.mu.Unlock()
		return
	}
	c.armed = false
	c.expired = true
	c.finish(context.DeadlineExceeded)
}

// leaseDone closes done when the batch's context is done (lease lost,
// appliance stopping).
func (c *msgContext) leaseDone() {
	c.mu.Lock()
	if c.err != nil {
		c.mu.Unlock()
		return
	}
	c.finish(c.leaseContext.Context.Err())
}

// finish closes done with err, with c.mu held (and released), and runs
// the functions registered by AfterFunc.
func (c *msgContext) finish(err error) {
	c.err = err
	close(c.done)
	funcs := c.funcs
	c.funcs = nil
	c.mu.Unlock()
	for _, a := range funcs {
		a.f()
	}
}

func (c *msgContext) Done() <-chan struct{} {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.done
}

// Err is the reason done is closed; like the leaseContext's, it reports
// a passed deadline by the clock even before the timer ran.
func (c *msgContext) Err() error {
	c.mu.Lock()
	err, deadline := c.err, c.deadline
	c.mu.Unlock()
	if err != nil {
		return err
	}
	now := time.Now()
	if !deadline.IsZero() && !now.Before(deadline) {
		return context.DeadlineExceeded
	}
	return c.leaseContext.errAt(now)
}

// Deadline is the running attempt's, none between attempts (see
// leaseContext on why the lease's validity is not one).
func (c *msgContext) Deadline() (time.Time, bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.deadline, !c.deadline.IsZero()
}

// AfterFunc lets a context a handler derives from c (publish's
// context.WithTimeout) follow it without a goroutine of its own: the
// context package uses this method of a parent that has one.
func (c *msgContext) AfterFunc(f func()) (stop func() bool) {
	c.mu.Lock()
	if c.err != nil {
		c.mu.Unlock()
		go f()
		return func() bool { return false }
	}
	c.nextFunc++
	id := c.nextFunc
	c.funcs = append(c.funcs, afterFunc{id, f})
	c.mu.Unlock()
	return func() bool {
		c.mu.Lock()
		defer c.mu.Unlock()
		for i, a := range c.funcs {
			if a.id == id {
				c.funcs = append(c.funcs[:i], c.funcs[i+1:]...)
				return true
			}
		}
		return false
	}
}
