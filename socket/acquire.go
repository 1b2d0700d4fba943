package socket

import (
	"context"
	"errors"
	"time"

	"github.com/edgegate/edgegate/lease"
)

// acquire acquires c's lease for p and sends it the batch. Called without
// the lock; c is in stDispatching, so nobody else touches its batch.
func (s *Server) acquire(ctx context.Context, c *controller, p *pool, keepFor time.Duration, batch []*msg) {
	start := time.Now()
	actx, cancel := context.WithTimeout(ctx, s.cfg.TTL)
	g, err := s.store.Acquire(actx, c.id, p.id, s.cfg.TTL, batch[0].sess.lease)
	cancel()
	if err != nil {
		s.notGranted(c, batch[0].sess, err)
		return
	}
	s.stats.acquired.Add(1)
	if s.grantUsable(ctx, c, g, start) {
		s.assign(c, p, g, start, s.cfg.TTL, keepFor, batch)
	}
}

// notGranted takes c, whose acquire for a batch of sess failed with err,
// out of dispatching: a newer session found by the store takes sess over,
// a lease held elsewhere or a store error leaves c waiting.
func (s *Server) notGranted(c *controller, sess *session, err error) {
	sh := c.sh
	if errors.Is(err, lease.ErrSuperseded) {
		// A newer session of the controller was opened elsewhere, and
		// its announcement did not reach this socket: the store says so.
		sh.mu.Lock()
		c.notSent()
		s.returnWorkerLocked(c)
		s.takeOverLocked(sess, "(found at acquire)")
		s.makeRunnableLocked(c)
		sh.mu.Unlock()
		return
	}
	sh.mu.Lock()
	c.leaseUnavailable()
	s.returnWorkerLocked(c)
	if errors.Is(err, lease.ErrHeld) && s.watch != nil && !c.watched {
		c.watched = true
		s.watch.Add(c.id) // its release wakes us before the next check
	}
	sh.mu.Unlock()
	if errors.Is(err, lease.ErrHeld) {
		s.stats.leaseHeld.Add(1)
	} else {
		s.storeError("acquire", c.id, err)
	}
}

// grantUsable checks g, granted for c's batch from start, against the
// store's epoch before anything is sent under it. False means nothing may
// be: the grant is abandoned, dispatch paused, and c waits (lost data) or
// is runnable again, to be dispatched when the pause ends.
func (s *Server) grantUsable(ctx context.Context, c *controller, g lease.Grant, start time.Time) bool {
	sh := c.sh
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
		c.leaseUnavailable()
		s.returnWorkerLocked(c)
	}
	sh.mu.Unlock()
	if lostData {
		s.forgetGrants()
		s.abandonLease(c.id, g.Token)
		return false
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
		s.abandonLease(c.id, g.Token)
		sh.mu.Lock()
		s.returnWorkerLocked(c)
		c.notSent()
		s.makeRunnableLocked(c) // dispatched when the pause ends
		sh.mu.Unlock()
		return false
	}
	return true
}
