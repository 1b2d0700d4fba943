package socket

import (
	"context"
	"time"

	"github.com/edgegate/edgegate/lease"
)

// isPaused reports whether dispatch is paused at now, a reading of
// time.Now (see pause).
func (s *Server) isPaused(now time.Time) bool { return int64(now.Sub(s.born)) < s.paused.Load() }

// pause stops dispatching for one lease TTL: every parser that might
// still work under a lost lease has stopped by then (it cancels its batch
// when it cannot confirm a heartbeat for a lease). It takes no lock; its
// caller then calls forgetGrants, holding none.
func (s *Server) pause(why string) { s.pauseUntil(time.Now().Add(s.cfg.TTL), why) }

// pauseUntil stops dispatching until untilT (see pause). The pause runs
// on the monotonic clock: a step of the wall clock (NTP setting it at
// boot, on a box without a clock of its own) must neither end it while
// parsers under forgotten leases may still run nor stretch it. A time
// from the lease store's clock (an epoch's start) counts as the time left
// until it by the wall clock now.
func (s *Server) pauseUntil(untilT time.Time, why string) {
	now := time.Now()
	left := untilT.Sub(now)
	at := int64(now.Sub(s.born))
	until := at + int64(left)
	for {
		old := s.paused.Load()
		if until <= old {
			return
		}
		if !s.paused.CompareAndSwap(old, until) {
			continue
		}
		if old <= at {
			s.log.Warn("socket: dispatch paused for one lease", "why", why, "for", left.Round(time.Millisecond))
			s.stats.pauses.Add(1)
		}
		time.AfterFunc(left, func() {
			s.mu.Lock()
			s.runCond.Broadcast()
			s.mu.Unlock()
		})
		return
	}
}

// forgetGrants forgets, after a pause, every controller as granted
// before, so that a fresh fence after the pause is no sign of another
// loss, and every kept lease: kept leases may be among the lost ones, and
// are forgotten, not released (they expire by themselves).
func (s *Server) forgetGrants() {
	s.eachShard(func(sh *shard) {
		for _, c := range sh.ctrls {
			c.granted, c.kept = false, false
			s.forgetIfIdleLocked(c)
		}
	})
}

// epochRead is a read of the lease store's epoch under way: callers that
// need one begun after a moment wait for it rather than start their own.
type epochRead struct {
	start time.Time
	done  chan struct{}
}

// checkEpoch pauses dispatch when the lease store's epoch changed (a Redis
// restart or failover): leases may have been lost. It reads the epoch
// unless a read begun at or after since already did or is doing it: when
// thousands of devices connect at once, their first grants (each fresh, so
// each wants a check, see acquire) share a few reads instead of making an
// INFO call each.
func (s *Server) checkEpoch(ctx context.Context, since time.Time) {
	e, ok := s.store.(lease.Epoch)
	if !ok {
		return
	}
	for {
		s.mu.Lock()
		if !s.epochAt.Before(since) {
			s.mu.Unlock()
			return
		}
		r := s.epochRead
		if r == nil {
			r = &epochRead{start: time.Now(), done: make(chan struct{})}
			s.epochRead = r
			s.mu.Unlock()
			s.readEpoch(ctx, e, r)
			return
		}
		s.mu.Unlock()
		select {
		case <-r.done:
		case <-ctx.Done():
			return
		}
		if !r.start.Before(since) {
			return // it began late enough; if it failed, so would ours
		}
	}
}

// readEpoch reads the store's epoch for r, pausing dispatch when it
// changed.
func (s *Server) readEpoch(ctx context.Context, e lease.Epoch, r *epochRead) {
	defer close(r.done)
	cctx, cancel := context.WithTimeout(ctx, s.cfg.CheckInterval)
	epoch, err := e.Epoch(cctx)
	cancel()
	s.mu.Lock()
	s.epochRead = nil
	s.mu.Unlock()
	if err != nil {
		s.storeError("epoch", "", err)
		return
	}
	s.sawEpoch(epoch, r.start)
}

// sawEpoch takes in epoch, read no earlier than start, pausing dispatch
// when it changed.
func (s *Server) sawEpoch(epoch string, start time.Time) {
	s.mu.Lock()
	changed := s.epoch != "" && epoch != s.epoch
	if changed {
		s.pause("the lease store restarted or failed over (new run_id " + epoch + ")")
	}
	s.epoch = epoch
	if start.After(s.epochAt) {
		s.epochAt = start
	}
	s.mu.Unlock()
	if changed {
		s.forgetGrants()
	}
}
