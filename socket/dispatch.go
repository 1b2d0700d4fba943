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
		c.emptied()
		if c.sess == nil {
			s.releaseKeptLocked(c)
		}
		s.forgetIfIdleLocked(c)
		sh.mu.Unlock()
		return
	}
	// A lease its pool kept goes on there when that pool has a free
	// worker and the keep has not run out; otherwise it is released
	// and the batch goes elsewhere.
	if c.kept && s.keptUsableLocked(c, time.Now()) {
		if h, ok := s.takeKeptLocked(c); ok {
			sh.mu.Unlock()
			s.sendKept(h)
			return
		}
	}
	if !p.takeWorker() {
		// Another controller took p's last worker since the pick: c
		// waits at the head of the run queue.
		s.mu.Lock()
		s.runq.pushFront(c)
		s.runqLen.Store(int32(s.runq.len()))
		s.mu.Unlock()
		sh.mu.Unlock()
		return
	}
	drop := c.kept // released before the acquire, which would find it held
	c.kept = false
	tok, done := c.tok, c.grantDone
	recordDone := c.sentResets == c.resets // done may be recorded under tok
	batch, keepFor := s.takeBatchLocked(c, p)
	sh.mu.Unlock()
	if drop {
		s.releaseLease(c.id, tok, done, recordDone)
	}
	s.acquire(ctx, c, p, keepFor, batch)
}

// minBatchBytes is the least BatchBytes when the NATS connection does
// not say how large a message may be (not connected yet).
const minBatchBytes = 1 << 20

// batchLen is how many of the queued messages q a batch takes: up to
// Batch, and no more payload than BatchBytes unless the first message
// alone is more (it then goes alone).
func (s *Server) batchLen(q []*msg) int {
	n := min(len(q), s.cfg.Batch)
	size := 0
	for i := 0; i < n; i++ {
		if size += len(q[i].payload); size > s.cfg.BatchBytes && i > 0 {
			return i
		}
	}
	return n
}

// takeBatchLocked takes c's next batch for p, whose worker the caller
// took (c goes to stDispatching), and how long to ask the parser to keep
// the lease after it.
func (s *Server) takeBatchLocked(c *controller, p *pool) (batch []*msg, keepFor time.Duration) {
	c.unansweredSince.Store(pickedUnsent)
	c.taken()
	c.pool, c.batchLen, c.sentResets = p, s.batchLen(c.q), c.resets
	c.leaseSess = c.q[0].sess
	batch = make([]*msg, c.batchLen)
	copy(batch, c.q)
	// Ask the parser to keep the lease when more messages are queued, the
	// controller's last batch ended a moment ago (a steady stream) or this
	// is its first batch (a device that just connected mostly has more to
	// send): its next batch then needs no acquire. A sparse device's
	// batches are released at once.
	if s.cfg.Hold > 0 && (len(c.q) > c.batchLen || c.lastEnd.IsZero() || time.Since(c.lastEnd) < s.cfg.Hold) {
		keepFor = s.cfg.Hold
	}
	return batch, keepFor
}
