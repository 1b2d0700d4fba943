package socket

import (
	"time"

	"github.com/nats-io/nats.go"

	"github.com/edgegate/edgegate/coord"
	"github.com/edgegate/edgegate/lease"
)

// assign sends batch to p under g's lease, surely held until from + valid,
// asking the parser to keep it for keepFor afterwards (0: release it). Called
// without the lock, c in stDispatching.
func (s *Server) assign(c *controller, p *pool, g lease.Grant, from time.Time, valid, keepFor time.Duration, batch []*msg) {
	// A device that keeps its seq across sessions gets its duplicates (seqs
	// the done record covers) acknowledged without the handler.
	if dups := duplicates(batch, g.Done); dups > 0 {
		c.sh.mu.Lock()
		s.ackLocked(c, dups, nil)
		s.stats.suppressed.Add(uint64(dups))
		batch = batch[dups:]
		c.batchLen -= dups
		c.sh.mu.Unlock()
		if len(batch) == 0 {
			s.abandonBatch(c, g.Token, true)
			return
		}
	}
	a := s.assignment(c, g, from, valid, keepFor, batch)
	c.sh.mu.Lock()
	sent := s.startLocked(c, p, g)
	c.sh.mu.Unlock()
	s.send(c, p, g, &a, sent, batch)
}

// duplicates counts the messages that lead batch and that the done record
// done covers, of devices that keep their seqs across sessions.
func duplicates(batch []*msg, done uint64) int {
	n := 0
	for _, m := range batch {
		if !m.sess.persistent || m.seq > done {
			break
		}
		n++
	}
	return n
}

// assignment is the assignment of batch under g (see assign).
func (s *Server) assignment(c *controller, g lease.Grant, from time.Time, valid, keepFor time.Duration, batch []*msg) coord.Assign {
	a := coord.Assign{Controller: c.id, Token: g.Token, Valid: valid - time.Since(from), Hold: keepFor, Gen: batch[0].sess.lease.Gen,
		Msgs: make([]coord.Msg, len(batch)), Socket: s.id}
	// Every message of a batch came in one session (a controller has one
	// open at a time, and dispatch prunes the closed ones' first).
	a.Proto = batch[0].sess.proto()
	if s.cfg.Clock != nil {
		// The lock expires no sooner than a TTL after the acquire began
		// (or a hold after the previous batch under it was sent).
		a.Clock, a.Deadline = s.cfg.Clock.ID(), s.cfg.Clock.At(from.Add(valid))
	}
	for i, m := range batch {
		a.Msgs[i] = coord.Msg{Seq: m.seq, Received: m.recv, Payload: m.payload}
	}
	return a
}

// startLocked records c's batch as sent to p under g now, and returns
// when: assigned, or for the pool of this process running at once (its
// outcome may come before Offer returns).
func (s *Server) startLocked(c *controller, p *pool, g lease.Grant) (sent time.Time) {
	sent = time.Now()
	c.tok, c.grantDone, c.sentAt, c.releaseSeen = g.Token, g.Done, sent, time.Time{}
	s.inflight.Add(1)
	if p.ownProcess != nil {
		c.started()
	} else {
		c.sent()
	}
	if c.unansweredSince.Load() != 0 {
		c.unansweredSince.Store(sent.UnixNano())
	}
	return sent
}

// send hands a, c's batch started at sent (startLocked), to p. Called
// without the lock.
func (s *Server) send(c *controller, p *pool, g lease.Grant, a *coord.Assign, sent time.Time, batch []*msg) {
	if p.ownProcess != nil {
		if p.ownProcess.Offer(a, s.onOutcome) {
			s.answered(c, p, sent)
			s.stats.direct.Add(1)
			s.countBatch(batch)
			return
		}
		c.sh.mu.Lock()
		// Unless this batch ended meanwhile (the check loop took its parser
		// for dead) and perhaps another one started.
		if c.sentAt == sent && c.state == stRunning {
			s.answeredLocked(c)
			s.busyLocked(c)
		}
		c.sh.mu.Unlock()
		return
	}
	err := s.nc.PublishMsg(&nats.Msg{Subject: p.subject, Reply: s.inbox + "." + c.id, Data: coord.AppendAssign(nil, a)})
	if err != nil {
		s.log.Warn("socket: send assignment", "controller", c.id, "err", err)
		c.sh.mu.Lock()
		ok := c.state == stAssigned && c.tok == g.Token
		if ok {
			s.endFlight()
			c.handedBack()
		}
		c.sh.mu.Unlock()
		if ok {
			s.abandonBatch(c, g.Token, true)
		}
		return
	}
	s.countBatch(batch)
}

// countBatch counts a batch a pool took.
func (s *Server) countBatch(batch []*msg) {
	s.stats.batches.Add(1)
	s.stats.batchMsgs.Add(uint64(len(batch)))
	s.metrics.batchSize.Observe(float64(len(batch)))
	s.metrics.queueWait.Observe(time.Since(batch[0].recv).Seconds())
}
