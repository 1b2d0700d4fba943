package socket

import (
	"context"
	"encoding/json"
	"errors"
	"slices"
	"strings"
	"sync/atomic"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/edgegate/edgegate/coord"
	"github.com/edgegate/edgegate/egp"
	"github.com/edgegate/edgegate/lease"
)

// pool is a parser pool as announced on edgegate.ready. free is an
// estimate: the announced count minus the assignments this socket picked
// it for and has not heard back about (unseen), which the announcement
// may not count yet; an outcome adds one. Its counters are atomics: the
// hot path reads and changes them under a shard lock, announcements under
// Server.mu.
type pool struct {
	id, appliance, subject string
	workers                atomic.Int64
	free                   atomic.Int64
	unseen                 atomic.Int64
	seen                   time.Time   // guarded by Server.mu
	gone                   atomic.Bool // dropped from the pool table
	local                  bool
	direct                 LocalPool // the pool of this process: batches go to it without NATS
}

// maxPools bounds the pool table, which every dispatch scans: far more
// pools than any cluster has, and no flood of announcements (which only
// the coordination account carries) grows it further.
const maxPools = 1024

// onReady records a parser pool's announcement.
func (s *Server) onReady(m *nats.Msg) {
	var r coord.Ready
	if err := json.Unmarshal(m.Data, &r); err != nil || r.Pool == "" || r.Subject == "" {
		s.log.Warn("socket: malformed ready announcement", "err", err)
		return
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	p := s.pools[r.Pool]
	if p == nil {
		if len(s.pools) >= maxPools {
			if s.stats.poolsIgnored.Add(1) == 1 {
				s.log.Warn("socket: parser pool table full, new pools are ignored until known ones expire", "max", maxPools, "pool", r.Pool, "pool_appliance", r.Appliance)
			}
			return
		}
		p = &pool{id: r.Pool, appliance: r.Appliance, subject: r.Subject, local: r.Appliance == s.cfg.Name}
		if l := s.cfg.Local; l != nil && l.ID() == r.Pool {
			p.direct, p.local = l, true
		}
		s.pools[r.Pool] = p
		s.log.Info("socket: parser pool seen", "pool", r.Pool, "pool_appliance", r.Appliance, "workers", r.Workers)
	}
	p.workers.Store(int64(r.Workers))
	p.free.Store(max(0, int64(r.Free)-p.unseen.Load()))
	p.seen = time.Now()
	if r.Free > 0 {
		s.runCond.Broadcast()
	}
}

// available is how many more batches p can take as far as this socket
// knows: for the pool of this process its idle workers less the batches
// picked for it and not yet offered, for others the estimate.
func (p *pool) available() int {
	if p.direct != nil {
		return p.direct.Free() - int(p.unseen.Load())
	}
	return int(p.free.Load())
}

// reserve takes one of p's available workers for a batch about to be
// sent, if it has one (see available); the batch's controller then counts
// as unseen by p until p answers (heardLocked).
func (p *pool) reserve() bool {
	if p.direct != nil {
		for {
			u := p.unseen.Load()
			if int64(p.direct.Free())-u <= 0 {
				return false
			}
			if p.unseen.CompareAndSwap(u, u+1) {
				p.free.Add(-1)
				return true
			}
		}
	}
	for {
		f := p.free.Load()
		if f <= 0 {
			return false
		}
		if p.free.CompareAndSwap(f, f-1) {
			p.unseen.Add(1)
			return true
		}
	}
}

// giveBack returns a worker to p's free count, up to its workers; false
// if none was missing.
func (p *pool) giveBack() bool {
	for {
		f := p.free.Load()
		if f >= p.workers.Load() {
			return false
		}
		if p.free.CompareAndSwap(f, f+1) {
			return true
		}
	}
}

// forgetPoolLocked drops p from the pool table (Server.mu held).
func (s *Server) forgetPoolLocked(p *pool) {
	if s.pools[p.id] == p {
		delete(s.pools, p.id)
		p.gone.Store(true)
	}
}

// pickPoolLocked returns a pool with a free worker, local ones first, then
// the one with the most free workers; nil if none.
func (s *Server) pickPoolLocked() *pool {
	var best *pool
	bestFree := 0
	for _, p := range s.pools {
		free := p.available()
		if free <= 0 {
			continue
		}
		if best == nil || p.local && !best.local || p.local == best.local && free > bestFree {
			best, bestFree = p, free
		}
	}
	return best
}

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

// dispatch acquires c's lease for p and sends it the batch. Called without
// the lock; c is in stDispatching, so nobody else touches its batch.
func (s *Server) dispatch(ctx context.Context, c *controller, p *pool, hold time.Duration, batch []*msg) {
	start := time.Now()
	actx, cancel := context.WithTimeout(ctx, s.cfg.TTL)
	g, err := s.store.Acquire(actx, c.id, p.id, s.cfg.TTL, batch[0].sess.lease)
	cancel()
	sh := c.sh
	if errors.Is(err, lease.ErrSuperseded) {
		// A newer session of the controller was opened elsewhere, and
		// its announcement did not reach this socket: the store says so.
		sh.mu.Lock()
		c.state, c.n = stIdle, 0
		s.unpickLocked(c)
		s.stats.takeovers.Add(1)
		s.log.Info("socket: session taken over by a newer one (found at acquire)", "controller", c.id)
		s.closeSessionLocked(batch[0].sess, egp.CodeTakenOver, errTakenOver.Error())
		s.makeRunnableLocked(c)
		sh.mu.Unlock()
		return
	}
	if err != nil {
		sh.mu.Lock()
		c.state, c.n = stWaiting, 0
		s.unpickLocked(c)
		if errors.Is(err, lease.ErrHeld) && s.watch != nil && !c.watched {
			c.watched = true
			s.watch.Add(c.id) // its release wakes us before the next check
		}
		sh.mu.Unlock()
		if errors.Is(err, lease.ErrHeld) {
			s.stats.leaseHeld.Add(1)
		} else {
			s.stats.storeErrors.Add(1)
			s.logStoreError("acquire", c.id, err)
		}
		return
	}
	s.stats.acquired.Add(1)
	if g.Fresh {
		// A fresh fence is a new controller, or a store that lost its data
		// (a restart): then other parsers may still work under leases the
		// store forgot, and the check loop may not have noticed the new
		// run_id yet. Check it now (pausing when it changed) rather than
		// dispatch into that window: with the epoch the store read with
		// the grant, or else a read begun after it.
		if g.Epoch != "" {
			s.sawEpoch(g.Epoch, start)
		} else {
			s.checkEpoch(ctx, time.Now())
		}
	}
	sh.mu.Lock()
	lostData := g.Fresh && c.granted
	// A fresh grant during a pause (the epoch check above may just have
	// started one) waits for the pause to end like the rest.
	inPause := !lostData && g.Fresh && s.isPaused(time.Now())
	c.granted = true
	if c.watched {
		c.watched = false
		s.watch.Remove(c.id)
	}
	if lostData {
		// This socket was granted the controller's lease before, yet the
		// store has no record of it: the store lost its data, and with it
		// every lease. Old parsers may still run until their next
		// heartbeat fails; wait a lease before dispatching anything.
		s.pause("the lease store lost its data (a fresh fence for a known controller)")
		c.state, c.n = stWaiting, 0
		s.unpickLocked(c)
	}
	sh.mu.Unlock()
	if lostData {
		s.forgetGrants()
		s.abandon(c.id, g.Token)
		return
	}
	if !inPause && !g.EpochStart.IsZero() {
		// The store's epoch began less than a lease ago (a restart, a
		// failover, a rollback): a holder of a lease it forgot may still
		// run until a TTL after that, whether or not this socket ever saw
		// the epoch before.
		if until := g.EpochStart.Add(s.cfg.TTL); time.Now().Before(until) {
			s.pauseUntil(until, "the lease store began a new epoch (restart, failover or rollback)")
			inPause = true
		}
	}
	if inPause {
		s.abandon(c.id, g.Token)
		sh.mu.Lock()
		s.unpickLocked(c)
		c.state, c.n = stIdle, 0
		s.makeRunnableLocked(c) // dispatched when the pause ends
		sh.mu.Unlock()
		return
	}
	s.assign(c, p, g, start, s.cfg.TTL, hold, batch)
}

// assign sends batch to p under g's lease, surely held until from + valid,
// asking the parser to keep it for hold afterwards (0: release it). Called
// without the lock, c in stDispatching.
func (s *Server) assign(c *controller, p *pool, g lease.Grant, from time.Time, valid, hold time.Duration, batch []*msg) {
	// A device that keeps its seq across sessions gets its duplicates (seqs
	// the done record covers) acknowledged without the handler.
	if dups := duplicates(batch, g.Done); dups > 0 {
		c.sh.mu.Lock()
		s.ackLocked(c, dups, nil)
		s.stats.suppressed.Add(uint64(dups))
		batch = batch[dups:]
		c.n -= dups
		c.sh.mu.Unlock()
		if len(batch) == 0 {
			s.handBack(c, p, g.Token, true)
			return
		}
	}
	a := s.assignment(c, g, from, valid, hold, batch)
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
func (s *Server) assignment(c *controller, g lease.Grant, from time.Time, valid, hold time.Duration, batch []*msg) coord.Assign {
	a := coord.Assign{Controller: c.id, Token: g.Token, Valid: valid - time.Since(from), Hold: hold, Gen: batch[0].sess.lease.Gen,
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
	c.state, c.tok, c.grantDone, c.sentAt, c.released = stAssigned, g.Token, g.Done, sent, time.Time{}
	s.inflight.Add(1)
	if p.direct != nil {
		c.state = stRunning
	}
	if c.unseen.Load() != 0 {
		c.unseen.Store(sent.UnixNano())
	}
	return sent
}

// send hands a, c's batch started at sent (startLocked), to p. Called
// without the lock.
func (s *Server) send(c *controller, p *pool, g lease.Grant, a *coord.Assign, sent time.Time, batch []*msg) {
	if p.direct != nil {
		if p.direct.Offer(a, s.onOutcome) {
			s.heard(c, p, sent)
			s.stats.direct.Add(1)
			s.countBatch(batch)
			return
		}
		c.sh.mu.Lock()
		if c.sentAt == sent { // not yet another batch of c (after this one's outcome)
			s.heardLocked(c)
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
			c.state = stReleasing
		}
		c.sh.mu.Unlock()
		if ok {
			s.handBack(c, p, g.Token, true)
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

// heardLocked records that c's pool answered (or will never answer) the
// assignment c was picked for.
func (s *Server) heardLocked(c *controller) {
	if c.unseen.Swap(0) != 0 {
		c.pool.unseen.Add(-1)
	}
}

// heard records, without the lock, that p took c's batch sent at sent,
// unless that was recorded already (by its outcome, which may come first).
func (s *Server) heard(c *controller, p *pool, sent time.Time) {
	if c.unseen.CompareAndSwap(sent.UnixNano(), 0) {
		p.unseen.Add(-1)
	}
}

// unpickLocked gives back the worker c was picked for before anything was
// sent.
func (s *Server) unpickLocked(c *controller) {
	s.heardLocked(c)
	c.pool.giveBack()
	s.signalRun()
}

// pause stops dispatching for one lease TTL: every parser that might
// still work under a lost lease has stopped by then (it cancels its batch
// when it cannot confirm a heartbeat for a lease). It takes no lock; its
// caller then calls forgetGrants, holding none.
func (s *Server) pause(why string) { s.pauseUntil(time.Now().Add(s.cfg.TTL), why) }

// pauseUntil stops dispatching until until (see pause).
func (s *Server) pauseUntil(untilT time.Time, why string) {
	now := time.Now()
	until := untilT.UnixNano()
	for {
		old := s.paused.Load()
		if until <= old {
			return
		}
		if !s.paused.CompareAndSwap(old, until) {
			continue
		}
		if old <= now.UnixNano() {
			s.log.Warn("socket: dispatch paused for one lease", "why", why, "for", untilT.Sub(now).Round(time.Millisecond))
			s.stats.pauses.Add(1)
		}
		time.AfterFunc(untilT.Sub(now), func() {
			s.mu.Lock()
			s.runCond.Broadcast()
			s.mu.Unlock()
		})
		return
	}
}

// forgetGrants forgets, after a pause, every controller as granted
// before, so that a fresh fence after the pause is no sign of another
// loss, and every held lease: held leases may be among the lost ones, and
// are forgotten, not released (they expire by themselves).
func (s *Server) forgetGrants() {
	s.eachShard(func(sh *shard) {
		for _, c := range sh.ctrls {
			c.granted, c.held = false, false
			s.forgetIfIdleLocked(c)
		}
	})
}

// abandon releases a grant nobody works under, logging a store error.
func (s *Server) abandon(id string, tok lease.Token) {
	ctx, cancel := context.WithTimeout(context.Background(), s.cfg.TTL)
	defer cancel()
	if err := s.store.Abandon(ctx, id, tok); err != nil && !errors.Is(err, lease.ErrLost) {
		s.logStoreError("release", id, err)
	}
}

// wake is called by the lease store's notifications when id's lock was
// deleted or expired: retry a waiting controller now, check an in-flight
// one now.
func (s *Server) wake(id string) {
	c, sh := s.lookup(id)
	if c == nil {
		sh.mu.Unlock()
		return
	}
	switch {
	case c.state == stWaiting:
		c.state = stIdle
		s.makeRunnableLocked(c)
		sh.mu.Unlock()
	case c.inFlight():
		it := checkItem{c: c, tok: c.tok}
		sh.mu.Unlock()
		go s.checkOne(context.Background(), it)
	default:
		sh.mu.Unlock()
	}
}

// handBack releases a lease nobody works under (no parser got the batch)
// and makes the controller runnable again.
func (s *Server) handBack(c *controller, p *pool, tok lease.Token, poolFree bool) {
	ctx, cancel := context.WithTimeout(context.Background(), s.cfg.TTL)
	err := s.store.Abandon(ctx, c.id, tok)
	cancel()
	if err != nil && !errors.Is(err, lease.ErrLost) {
		s.logStoreError("release", c.id, err)
	}
	c.sh.mu.Lock()
	defer c.sh.mu.Unlock()
	if poolFree {
		s.unpickLocked(c)
	}
	c.n = 0
	if err != nil && !errors.Is(err, lease.ErrLost) {
		c.state = stWaiting // the lease expires by itself; the check loop retries
		return
	}
	c.state = stIdle
	s.makeRunnableLocked(c)
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

// onReply handles answers and outcomes of assignments; the subject's last
// token is the controller.
func (s *Server) onReply(m *nats.Msg) {
	id := m.Subject[strings.LastIndexByte(m.Subject, '.')+1:]
	switch coord.Kind(m.Data) {
	case coord.KindAnswer:
		a, err := coord.DecodeAnswer(m.Data)
		if err != nil {
			s.log.Warn("socket: malformed answer", "err", err)
			return
		}
		s.onAnswer(a)
	case coord.KindOutcome:
		o, err := coord.DecodeOutcome(m.Data)
		if err != nil {
			s.log.Warn("socket: malformed outcome", "err", err)
			return
		}
		s.onRemoteOutcome(o)
	default:
		if len(m.Data) == 0 && m.Header.Get("Status") == "503" {
			s.onNoResponders(id)
			return
		}
		s.log.Warn("socket: unexpected reply", "subject", m.Subject, "bytes", len(m.Data))
	}
}

// onAnswer takes a pool's answer to an assignment sent over NATS.
func (s *Server) onAnswer(a coord.Answer) {
	c, sh := s.lookup(a.Controller)
	defer sh.mu.Unlock()
	if c == nil || c.tok.Fence != a.Fence || c.state != stAssigned || !remoteFrom(c, a.Pool) {
		return
	}
	s.heardLocked(c)
	if a.Accepted {
		c.state = stRunning
		return
	}
	s.busyLocked(c)
}

// busyLocked handles the answer busy to c's assignment: nobody works under
// the lease; give it back, try elsewhere.
func (s *Server) busyLocked(c *controller) {
	s.stats.busy.Add(1)
	p, tok := c.pool, c.tok
	p.free.Store(0)
	c.state = stReleasing
	s.endFlight()
	go s.handBack(c, p, tok, false)
}

// onNoResponders handles an assignment sent to a pool that is gone.
func (s *Server) onNoResponders(id string) {
	c, sh := s.lookup(id)
	if c == nil || c.state != stAssigned {
		sh.mu.Unlock()
		return
	}
	s.heardLocked(c)
	p, tok := c.pool, c.tok
	s.mu.Lock()
	if !p.gone.Load() {
		s.forgetPoolLocked(p)
		s.log.Info("socket: parser pool gone", "pool", p.id, "pool_appliance", p.appliance)
	}
	s.mu.Unlock()
	c.state = stReleasing
	s.endFlight()
	sh.mu.Unlock()
	go s.handBack(c, p, tok, false)
}

// remoteFrom reports whether c's batch went over NATS to the pool pool:
// an answer or outcome counts only from there (DESIGN §4, trust). A batch
// of the pool of this process never takes one from NATS: its outcomes
// come as calls.
func remoteFrom(c *controller, pool string) bool {
	return c.pool != nil && c.pool.direct == nil && c.pool.id == pool
}

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
		s.continueHeld(next)
	}
}

// onOutcome takes a batch's outcome from its pool: the callback of the
// pool of this process, or decoded from NATS (onRemoteOutcome). A next
// batch of the same controller may go out from here (continueLocked).
func (s *Server) onOutcome(o coord.Outcome) {
	c, sh := s.lookup(o.Controller)
	next, ok := s.outcomeLocked(c, o)
	sh.mu.Unlock()
	if ok {
		s.continueHeld(next)
	}
}

// outcomeLocked is onOutcome for c (nil if unknown) under its shard lock;
// the batch it may return is sent after.
func (s *Server) outcomeLocked(c *controller, o coord.Outcome) (next handOff, ok bool) {
	if c == nil || c.tok.Fence != o.Fence || !c.inFlight() {
		s.stats.staleOutcomes.Add(1)
		return handOff{}, false
	}
	if o.Early {
		// The statuses of a batch its pool (this process's) is still
		// keeping or releasing the lease of: acknowledged now; the
		// outcome proper follows.
		if k := len(o.Statuses); k > 0 && k <= c.n {
			s.metrics.ackLatency.Observe(time.Since(c.q[0].recv).Seconds())
			s.ackLocked(c, k, o.Statuses)
			c.n -= k
		}
		return handOff{}, false
	}
	s.endFlight()
	s.heardLocked(c)
	freed := !c.pool.gone.Load() && c.pool.giveBack()
	final := o.Released && len(o.Statuses) <= c.n
	switch {
	case final:
		if len(o.Statuses) > 0 {
			s.metrics.ackLatency.Observe(time.Since(c.q[0].recv).Seconds())
		}
		s.ackLocked(c, len(o.Statuses), o.Statuses)
	case c.n > 0: // not when every message went ahead (Early)
		s.stats.redispatched.Add(1)
	}
	c.n, c.state, c.lastEnd = 0, stIdle, time.Now()
	if o.Kept {
		// The pool may have left the done record to this socket (a pool of
		// this process, see coord.Outcome.Until): it is written when the
		// lease goes, unless a seq reset came since the batch was taken.
		c.grantDone = o.Done
		switch {
		case final && !s.stopping.Load() && c.sess != nil && c.sess == c.leaseSess && c.sentResets == c.resets:
			c.held, c.holdUntil, c.unrecorded = true, o.Until, !o.Until.IsZero()
			if !c.unrecorded {
				c.holdUntil = c.sentAt.Add(s.cfg.Hold) // the keep began after the batch was sent
			}
		default:
			s.releaseLocked(c, final)
		}
	}
	if next, ok = s.continueLocked(c); ok {
		return next, true // the worker freed goes to c's next batch
	}
	if freed && s.runqLen.Load() > 0 {
		s.signalRun() // a controller waits for a worker
	}
	s.makeRunnableLocked(c)
	return handOff{}, false
}

// releaseLocked releases c's kept lease (c.tok) on its own goroutine,
// recording c.grantDone when setDone and no seq reset came since its batch
// was taken.
func (s *Server) releaseLocked(c *controller, setDone bool) {
	id, tok, done := c.id, c.tok, c.grantDone
	setDone = setDone && c.sentResets == c.resets
	s.releases.Go(func() { s.release(id, tok, done, setDone) })
}

// releaseHeldLocked releases c's held lease, if any.
func (s *Server) releaseHeldLocked(c *controller) {
	if c.held {
		c.held = false
		s.releaseLocked(c, true)
	}
}

// release releases a kept lease, recording done when setDone (its pool
// may have left that to this socket), logging a store error.
func (s *Server) release(id string, tok lease.Token, done uint64, setDone bool) {
	if !setDone {
		s.abandon(id, tok)
		return
	}
	ctx, cancel := context.WithTimeout(context.Background(), s.cfg.TTL)
	defer cancel()
	if err := s.store.Release(ctx, id, tok, done); err != nil && !errors.Is(err, lease.ErrLost) {
		s.logStoreError("release", id, err)
	}
}

// requeueLocked puts c's batch back at the head of its queue after its
// parser was found dead (or its outcome lost).
func (s *Server) requeueLocked(c *controller, why string) {
	s.log.Warn("socket: parser presumed dead, batch dispatched again", "controller", c.id,
		"fence", c.tok.Fence, "pool", c.pool.id, "why", why, "in_flight_for", time.Since(c.sentAt).Round(time.Millisecond))
	s.stats.redispatched.Add(1)
	s.endFlight()
	s.heardLocked(c)
	c.n, c.state = 0, stIdle
	s.makeRunnableLocked(c)
}

func (s *Server) logStoreError(op, id string, err error) {
	if s.stats.storeErrors.Load()%1000 == 1 {
		s.log.Warn("socket: lease store "+op+" failed; nothing is unlocked on an error, retrying", "controller", id, "err", err)
	}
}
