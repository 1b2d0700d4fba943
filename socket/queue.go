package socket

import (
	"sync/atomic"
	"time"
)

// msgOverhead is the memory accounted per queued message beyond its payload.
const msgOverhead = 64

// msg is a message received from a device and not yet acknowledged.
type msg struct {
	seq     uint64
	payload []byte
	recv    time.Time
	sess    *session // the session it arrived on; its ACK goes there
}

func (m *msg) size() int64 { return int64(len(m.payload)) + msgOverhead }

// keepQueue is the largest backing array an emptied queue keeps: a busy
// controller's queue empties after every batch at moderate load, and
// regrowing it from nothing would cost several allocations per batch.
const keepQueue = 64

// popLocked removes the first k messages of c's queue, moving the rest to
// the front of its backing array.
func (s *Server) popLocked(c *controller, k int) {
	for i := 0; i < k; i++ {
		s.unreserveLocked(c, c.q[i].size())
	}
	n := copy(c.q, c.q[k:])
	clear(c.q[n:])
	c.q = c.q[:n]
	if n == 0 && cap(c.q) > keepQueue {
		c.q = nil // let a large backing array go
	}
}

// pruneLocked drops messages that will never be acknowledged: those of a
// closed session beyond the handed-out prefix (the device resends them to
// its new session). With NoAck nothing is dropped: nobody would resend.
func (s *Server) pruneLocked(c *controller) {
	if s.cfg.NoAck {
		return
	}
	keep := c.q[:c.batchLen]
	for _, m := range c.q[c.batchLen:] {
		if m.sess.closed {
			s.unreserveLocked(c, m.size())
			s.stats.dropped.Add(1)
			continue
		}
		keep = append(keep, m)
	}
	for i := len(keep); i < len(c.q); i++ {
		c.q[i] = nil
	}
	c.q = keep
}

// reserveLocked waits until c has a free queue slot and size bytes of
// memory are free, then reserves them. ok is false when the session
// closed meanwhile; waited tells whether it had to wait. The caller holds
// the shard lock, which a wait for memory gives up meanwhile.
func (s *Server) reserveLocked(sess *session, size int64) (ok, waited bool) {
	c := sess.ctrl
	for !sess.closed {
		full := c.slots >= s.cfg.Queue
		if !full && take(&s.mem, size, s.cfg.Memory) {
			c.slots++
			return true, waited
		}
		if sess.pending > 0 {
			// What the reader queued must go out before it waits for space.
			sess.pending = 0
			s.makeRunnableLocked(c)
		}
		waited = true
		if full {
			c.space.Wait()
		} else {
			s.waitMemory(sess, size)
		}
	}
	return false, waited
}

// fits reports whether size more bytes fit within limit when m are
// taken (or when nothing is: one message always fits).
func fits(m, size, limit int64) bool { return m == 0 || m+size <= limit }

// take reserves size bytes of the budget v, within limit, if they fit.
func take(v *atomic.Int64, size, limit int64) bool {
	for {
		m := v.Load()
		if !fits(m, size, limit) {
			return false
		}
		if v.CompareAndSwap(m, m+size) {
			return true
		}
	}
}

// give returns size bytes to the budget v and wakes the readers waiting
// for room (waitRoom).
func (s *Server) give(v *atomic.Int64, size int64) {
	v.Add(-size)
	if s.memWait.Load() > 0 {
		s.mu.Lock()
		s.memCond.Broadcast()
		s.mu.Unlock()
	}
}

// waitRoom waits until size bytes may fit in the budget v within limit,
// or sess is gone (or a moment that looks like it); it reports whether
// sess is gone. Dekker with give: it lowers v, then looks at memWait.
func (s *Server) waitRoom(sess *session, v *atomic.Int64, size, limit int64) (gone bool) {
	s.mu.Lock()
	s.memWait.Add(1)
	if !sess.gone && !fits(v.Load(), size, limit) {
		s.memCond.Wait()
	}
	s.memWait.Add(-1)
	gone = sess.gone
	s.mu.Unlock()
	return gone
}

// waitMemory waits, without sess's shard lock, until memory was freed or
// sess closed (or a moment that looks like it).
func (s *Server) waitMemory(sess *session, size int64) {
	sess.sh.mu.Unlock()
	s.waitRoom(sess, &s.mem, size, s.cfg.Memory)
	sess.sh.mu.Lock()
}

// reserveTransit reserves size bytes for a DATA body still to be read,
// within an eighth of devices.memory (or alone), waiting until they are
// free; false when sess closed meanwhile. give returns them.
func (s *Server) reserveTransit(sess *session, size int64) bool {
	limit := s.cfg.Memory / 8
	for !take(&s.transit, size, limit) {
		if s.waitRoom(sess, &s.transit, size, limit) {
			return false
		}
	}
	return true
}

// unreserveLocked gives back a queue slot and size bytes of memory.
func (s *Server) unreserveLocked(c *controller, size int64) {
	c.slots--
	c.space.Broadcast() // the reader, or a session lingering after a half-close
	s.give(&s.mem, size)
}
