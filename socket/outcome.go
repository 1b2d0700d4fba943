package socket

import (
	"slices"
	"time"

	"github.com/edgegate/edgegate/coord"
	"github.com/edgegate/edgegate/egp"
)

// onRemoteOutcome takes an outcome decoded from NATS (onReply), from the
// pool c's batch went to (remoteFrom).
func (s *Server) onRemoteOutcome(o coord.Outcome) {
	c, sh := s.lookup(o.Controller)
	if c != nil && !remoteFrom(c, o.Pool) {
		sh.mu.Unlock()
		s.stats.staleOutcomes.Add(1)
		return
	}
	next, ok := s.outcomeLocked(c, o)
	sh.mu.Unlock()
	if ok {
		s.sendKept(next)
	}
}

// onOutcome takes a batch's outcome from its pool: the callback of the
// pool of this process, or decoded from NATS (onRemoteOutcome). A next
// batch of the same controller may go out from here (takeKeptInlineLocked).
func (s *Server) onOutcome(o coord.Outcome) {
	c, sh := s.lookup(o.Controller)
	next, ok := s.outcomeLocked(c, o)
	sh.mu.Unlock()
	if ok {
		s.sendKept(next)
	}
}

// outcomeLocked is onOutcome for c (nil if unknown) under its shard lock;
// the batch it may return is sent after.
func (s *Server) outcomeLocked(c *controller, o coord.Outcome) (next keptBatch, ok bool) {
	if c == nil || c.tok.Fence != o.Fence || !c.inFlight() {
		s.stats.staleOutcomes.Add(1)
		return keptBatch{}, false
	}
	if o.Early {
		// The statuses of a batch its pool (this process's) is still
		// keeping or releasing the lease of: acknowledged now; the
		// outcome proper follows.
		if k := len(o.Statuses); k > 0 && k <= c.batchLen {
			s.metrics.ackLatency.Observe(time.Since(c.q[0].recv).Seconds())
			s.ackLocked(c, k, o.Statuses)
			c.batchLen -= k
		}
		return keptBatch{}, false
	}
	s.endFlight()
	s.answeredLocked(c)
	freed := !c.pool.gone.Load() && c.pool.returnWorker()
	final := o.Released && len(o.Statuses) <= c.batchLen
	switch {
	case final:
		if len(o.Statuses) > 0 {
			s.metrics.ackLatency.Observe(time.Since(c.q[0].recv).Seconds())
		}
		s.ackLocked(c, len(o.Statuses), o.Statuses)
	case c.batchLen > 0: // not when every message went ahead (Early)
		s.stats.redispatched.Add(1)
	}
	c.ended()
	c.lastEnd = time.Now()
	if o.Kept {
		// The pool may have left the done record to this socket (a pool of
		// this process, see coord.Outcome.Until): it is written when the
		// lease goes, unless a seq reset came since the batch was taken.
		c.grantDone = o.Done
		switch {
		case final && !s.stopping.Load() && c.sess != nil && c.sess == c.leaseSess && c.sentResets == c.resets:
			c.kept, c.keptUntil, c.unrecorded = true, o.Until, !o.Until.IsZero()
			if !c.unrecorded {
				c.keptUntil = c.sentAt.Add(s.cfg.Hold) // the keep began after the batch was sent
			}
		default:
			s.releaseAsyncLocked(c, final)
		}
	}
	if next, ok = s.takeKeptInlineLocked(c); ok {
		return next, true // the worker freed goes to c's next batch
	}
	if freed && s.runqLen.Load() > 0 {
		s.signalRun() // a controller waits for a worker
	}
	s.makeRunnableLocked(c)
	return keptBatch{}, false
}

// ackLocked acknowledges and drops the first k queued messages of c, with
// statuses (nil: all processed).
func (s *Server) ackLocked(c *controller, k int, statuses []byte) {
	var last *session
	for i := 0; i < k; i++ {
		m := c.q[i]
		st := egp.StatusProcessed
		if statuses != nil {
			st = egp.Status(statuses[i])
		}
		if st == egp.StatusDeadLettered {
			s.stats.deadLettered.Add(1)
		}
		s.stats.acked.Add(1)
		if s.cfg.NoAck || m.sess.closed {
			continue
		}
		sess := m.sess
		if sess != last {
			if last != nil {
				last.unlockAndWrite()
			}
			sess.wmu.Lock()
			last = sess
			// Room for the rest of the batch at once: the writer hands
			// its buffer back between batches, so it grows from empty.
			sess.wbuf = slices.Grow(sess.wbuf, (k-i)*egp.AckSize)
		}
		if sess.wclose {
			continue
		}
		if sess.tel {
			sess.wbuf = appendTeltonikaAck(sess.wbuf, m)
			continue
		}
		if sess.lines {
			sess.wbuf = egp.AppendLinesAck(sess.wbuf, m.seq, st)
		} else {
			sess.wbuf = egp.AppendAck(sess.wbuf, m.seq, st)
		}
	}
	if last != nil {
		last.unlockAndWrite()
	}
	s.popLocked(c, k)
}

// requeueLocked puts c's batch back at the head of its queue after its
// parser was found dead (or its outcome lost).
func (s *Server) requeueLocked(c *controller, why string) {
	s.log.Warn("socket: parser presumed dead, batch dispatched again", "controller", c.id,
		"fence", c.tok.Fence, "pool", c.pool.id, "why", why, "in_flight_for", time.Since(c.sentAt).Round(time.Millisecond))
	s.stats.redispatched.Add(1)
	s.endFlight()
	s.answeredLocked(c)
	c.ended()
	s.makeRunnableLocked(c)
}
