package socket

import (
	"time"

	"github.com/edgegate/edgegate/lease"
)

// holdEnds is when c's held lease is too old to send under: two margins
// before it expires are left for the next batch to arrive and start
// without confirmation.
func (s *Server) holdEnds(c *controller) time.Time {
	return c.holdUntil.Add(-s.cfg.TTL / 5)
}

// unrecordedMargin is how much earlier than holdEnds the check loop
// releases c's held lease: a check interval when the lease's done seq is
// not recorded yet (see controller.unrecorded), else nothing.
func (s *Server) unrecordedMargin(c *controller) time.Duration {
	if c.unrecorded {
		return s.cfg.CheckInterval
	}
	return 0
}

// heldUsableLocked reports whether c's held lease can carry its next
// batch at now: its pool is still known and the hold has not run out.
// Whether that pool has a worker for it, takeHeldLocked finds out when it
// reserves one.
func (s *Server) heldUsableLocked(c *controller, now time.Time) bool {
	return !c.pool.gone.Load() && now.Before(s.holdEnds(c))
}

// handOff is a batch taken under a held lease (takeHeldLocked), to be
// sent without the lock (continueHeld).
type handOff struct {
	c     *controller
	p     *pool
	g     lease.Grant
	from  time.Time // the lease is valid for Hold from then
	hold  time.Duration
	batch []*msg
	sent  time.Time // started already (startLocked); zero: not yet
}

// takeHeldLocked takes c's next batch for the pool that holds its lease,
// if that pool still has a worker for it. For the pool of this process
// the batch starts at once, under the same hold of the lock (unless
// duplicates lead it, which assign acknowledges first).
func (s *Server) takeHeldLocked(c *controller) (handOff, bool) {
	if c.q[0].sess != c.leaseSess {
		// The lease was granted for an older session: the store records
		// done per session, and the new one waits for its own grant.
		return handOff{}, false
	}
	if !c.pool.reserve() {
		return handOff{}, false
	}
	c.held = false
	h := handOff{c: c, p: c.pool, g: lease.Grant{Token: c.tok, Done: c.grantDone}, from: c.holdUntil.Add(-s.cfg.Hold)}
	h.batch, h.hold = s.takeBatchLocked(c, c.pool)
	if h.p.direct != nil && duplicates(h.batch, h.g.Done) == 0 {
		h.sent = s.startLocked(c, h.p, h.g)
	}
	return h, true
}

// continueHeld sends h's batch under its held lease: no acquire, and the
// pool needs no confirmation.
func (s *Server) continueHeld(h handOff) {
	s.stats.continued.Add(1)
	if h.sent.IsZero() {
		s.assign(h.c, h.p, h.g, h.from, s.cfg.Hold, h.hold, h.batch)
		return
	}
	a := s.assignment(h.c, h.g, h.from, s.cfg.Hold, h.hold, h.batch)
	s.send(h.c, h.p, h.g, &a, h.sent, h.batch)
}

// continueLocked takes c's next batch for the pool of this process that
// kept its lease, for the goroutine that brought the outcome (or read the
// messages) to send, when no other controller waits for a dispatcher:
// what a dispatcher would do next, without waking one (on a busy box
// every goroutine woken queues for a CPU). False means c goes to the run
// queue.
func (s *Server) continueLocked(c *controller) (handOff, bool) {
	p := c.pool
	now := time.Now()
	if !c.held || p.direct == nil || c.state != stIdle || s.stopping.Load() || s.runqLen.Load() > 0 ||
		s.isPaused(now) || !s.heldUsableLocked(c, now) {
		return handOff{}, false
	}
	if s.pruneLocked(c); len(c.q) == 0 {
		return handOff{}, false
	}
	return s.takeHeldLocked(c)
}
