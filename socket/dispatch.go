package socket

import (
	"context"
	"time"
)

// dispatchLoop hands runnable controllers to parser pools: pick a pool,
// acquire the lease, send up to Batch queued messages.
func (s *Server) dispatchLoop(ctx context.Context) {
	for {
		s.mu.Lock()
		var p *pool
		for {
			if s.stopping.Load() || ctx.Err() != nil {
				s.mu.Unlock()
				return
			}
			if s.runq.len() > 0 && !s.isPaused(time.Now()) {
				if p = s.pickPoolLocked(); p != nil {
					break
				}
			}
			s.runCond.Wait()
		}
		c := s.runq.pop()
		s.runqLen.Store(int32(s.runq.len()))
		s.mu.Unlock()
		s.dispatchOne(ctx, c, p)
	}
}

// dispatchOne hands c, just taken from the run queue, to p, or to the
// pool that kept its lease.
func (s *Server) dispatchOne(ctx context.Context, c *controller, p *pool) {
	sh := c.sh
	sh.mu.Lock()
	s.pruneLocked(c)
	if len(c.q) == 0 {
		c.state = stIdle
		if c.sess == nil {
			s.releaseHeldLocked(c)
		}
		s.forgetIfIdleLocked(c)
		sh.mu.Unlock()
		return
	}
	// A lease its pool kept goes on there when that pool has a free
	// worker and the hold has not run out; otherwise it is released
	// and the batch goes elsewhere.
	if c.held && s.heldUsableLocked(c, time.Now()) {
		if h, ok := s.takeHeldLocked(c); ok {
			sh.mu.Unlock()
			s.continueHeld(h)
			return
		}
	}
	if !p.reserve() {
		// Another controller took p's last worker since the pick: c
		// waits at the head of the run queue.
		s.mu.Lock()
		s.runq.pushFront(c)
		s.runqLen.Store(int32(s.runq.len()))
		s.mu.Unlock()
		sh.mu.Unlock()
		return
	}
	drop := c.held // released before the acquire, which would find it held
	c.held = false
	tok, done := c.tok, c.grantDone
	keptDone := c.sentResets == c.resets // done may be recorded under tok
	batch, hold := s.takeBatchLocked(c, p)
	sh.mu.Unlock()
	if drop {
		s.release(c.id, tok, done, keptDone)
	}
	s.dispatch(ctx, c, p, hold, batch)
}

// takeBatchLocked picks c's next batch for p, whose worker the caller
// reserved (c goes to stDispatching), and the hold to ask the parser for.
func (s *Server) takeBatchLocked(c *controller, p *pool) (batch []*msg, hold time.Duration) {
	c.unseen.Store(-1)
	c.state, c.pool, c.n, c.sentResets = stDispatching, p, min(len(c.q), s.cfg.Batch), c.resets
	c.leaseSess = c.q[0].sess
	batch = make([]*msg, c.n)
	copy(batch, c.q)
	// Ask the parser to keep the lease when more messages are queued, the
	// controller's last batch ended a moment ago (a steady stream) or this
	// is its first batch (a device that just connected mostly has more to
	// send): its next batch then needs no acquire. A sparse device's
	// batches are released at once.
	if s.cfg.Hold > 0 && (len(c.q) > c.n || c.lastEnd.IsZero() || time.Since(c.lastEnd) < s.cfg.Hold) {
		hold = s.cfg.Hold
	}
	return batch, hold
}
