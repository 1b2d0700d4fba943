package socket

import (
	"time"

	"github.com/edgegate/edgegate/lease"
)

// keptUsableUntil is when c's kept lease is too old to send under: two
// margins before it expires are left for the next batch to arrive and
// start without confirmation.
func (s *Server) keptUsableUntil(c *controller) time.Time {
	return c.keptUntil.Add(-s.cfg.TTL / 5)
}

// unrecordedMargin is how much earlier than keptUsableUntil the check
// loop releases c's kept lease: a check interval when the lease's done seq
// is not recorded yet (see controller.unrecorded), else nothing.
func (s *Server) unrecordedMargin(c *controller) time.Duration {
	if c.unrecorded {
		return s.cfg.CheckInterval
	}
	return 0
}

// keptUsableLocked reports whether c's kept lease can carry its next
// batch at now: its pool is still known and the keep has not run out.
// Whether that pool has a worker for it, takeKeptLocked finds out when it
// takes one.
func (s *Server) keptUsableLocked(c *controller, now time.Time) bool {
	return !c.pool.gone.Load() && now.Before(s.keptUsableUntil(c))
}

// keptBatch is a batch taken under a kept lease (takeKeptLocked), to be
// sent without the lock (sendKept).
type keptBatch struct {
	c       *controller
	p       *pool
	g       lease.Grant
	from    time.Time     // the lease is valid for Hold from then
	keepFor time.Duration // how long to ask the pool to keep the lease after it
	batch   []*msg
	sent    time.Time // started already (startLocked); zero: not yet
}

// takeKeptLocked takes c's next batch for the pool that kept its lease,
// if that pool still has a worker for it. For the pool of this process
// the batch starts at once, before the shard lock is let go (unless
// duplicates lead it, which assign acknowledges first).
func (s *Server) takeKeptLocked(c *controller) (keptBatch, bool) {
	if c.q[0].sess != c.leaseSess {
		// The lease was granted for an older session: the store records
		// done per session, and the new one waits for its own grant.
		return keptBatch{}, false
	}
	if !c.pool.takeWorker() {
		return keptBatch{}, false
	}
	c.kept = false
	h := keptBatch{c: c, p: c.pool, g: lease.Grant{Token: c.tok, Done: c.grantDone}, from: c.keptUntil.Add(-s.cfg.Hold)}
	h.batch, h.keepFor = s.takeBatchLocked(c, c.pool)
	if h.p.ownProcess != nil && duplicates(h.batch, h.g.Done) == 0 {
		h.sent = s.startLocked(c, h.p, h.g)
	}
	return h, true
}

// sendKept sends h's batch under its kept lease: no acquire, and the
// pool needs no confirmation.
func (s *Server) sendKept(h keptBatch) {
	s.stats.continued.Add(1)
	if h.sent.IsZero() {
		s.assign(h.c, h.p, h.g, h.from, s.cfg.Hold, h.keepFor, h.batch)
		return
	}
	a := s.assignment(h.c, h.g, h.from, s.cfg.Hold, h.keepFor, h.batch)
	s.send(h.c, h.p, h.g, &a, h.sent, h.batch)
}

// takeKeptInlineLocked takes c's next batch for the pool of this process
// that kept its lease, for the goroutine that brought the outcome (or read
// the messages) to send, when no other controller waits for a dispatcher:
// what a dispatcher would do next, without waking one (on a busy box
// every goroutine woken queues for a CPU). False means c goes to the run
// queue.
func (s *Server) takeKeptInlineLocked(c *controller) (keptBatch, bool) {
	p := c.pool
	now := time.Now()
	if !c.kept || p.ownProcess == nil || c.state != stIdle || s.stopping.Load() || s.runqLen.Load() > 0 ||
		s.isPaused(now) || !s.keptUsableLocked(c, now) {
		return keptBatch{}, false
	}
	if s.pruneLocked(c); len(c.q) == 0 {
		return keptBatch{}, false
	}
	return s.takeKeptLocked(c)
}
