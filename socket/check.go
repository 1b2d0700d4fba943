package socket

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"sync/atomic"
	"time"

	"github.com/edgegate/edgegate/lease"
)

// checkLoop is the failure detection (docs/design.md, "Failure
// detection"): every CheckInterval it reads the lease of every controller
// in flight. A lease that is gone (expired or abandoned) or whose
// heartbeat is older than TTL means the parser died: the batch goes back
// to the head of the queue. A store error means nothing: it is never
// taken as a dead parser.
func (s *Server) checkLoop(ctx context.Context) {
	t := time.NewTicker(s.cfg.CheckInterval)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		s.check(ctx)
		s.lastCheck.Store(time.Now().UnixNano())
	}
}

// Healthy reports whether the socket works: it serves, its failure
// detection loop ran within three check intervals, and its NATS connection
// is up.
func (s *Server) Healthy() error {
	if !s.Ready() {
		return errors.New("socket not serving")
	}
	if last := s.lastCheck.Load(); last != 0 {
		if age := time.Since(time.Unix(0, last)); age > 3*s.cfg.CheckInterval+time.Second {
			return fmt.Errorf("socket check loop silent for %v", age.Round(time.Millisecond))
		}
	}
	if !s.nc.IsConnected() {
		return errors.New("socket: NATS connection down")
	}
	return nil
}

type checkItem struct {
	c   *controller
	tok lease.Token
}

func (s *Server) check(ctx context.Context) {
	s.checkEpoch(ctx, time.Now())
	now := time.Now()
	var items []checkItem
	s.mu.Lock()
	for _, p := range s.pools {
		if now.Sub(p.seen) > s.cfg.PoolExpiry {
			s.forgetPoolLocked(p)
			s.log.Info("socket: parser pool silent, forgotten", "pool", p.id, "pool_appliance", p.appliance)
		}
	}
	s.mu.Unlock()
	s.eachShard(func(sh *shard) {
		for _, c := range sh.ctrls {
			s.checkLocked(c, now, &items)
		}
	})
	s.checkAll(ctx, items)
}

// checkParallel is how many leases a check round reads at once: they
// share the store's pipelines.
const checkParallel = 16

// checkAll reads the leases of items, several at a time, within one check
// interval: a store that stops answering must not stretch a round to a
// timeout per controller, and the loop's silence is what Healthy (and the
// watchdog) goes by. What the deadline cuts off is read next round.
func (s *Server) checkAll(ctx context.Context, items []checkItem) {
	rctx, cancel := context.WithTimeout(ctx, s.cfg.CheckInterval)
	defer cancel()
	var next atomic.Int64
	var wg sync.WaitGroup
	for range min(len(items), checkParallel) {
		wg.Go(func() {
			for rctx.Err() == nil {
				i := int(next.Add(1)) - 1
				if i >= len(items) {
					return
				}
				s.checkOne(rctx, items[i])
			}
		})
	}
	wg.Wait()
}

// checkLocked is check's look at c, under its shard lock: an in-flight
// controller's lease is read after (items).
func (s *Server) checkLocked(c *controller, now time.Time, items *[]checkItem) {
	switch {
	case c.inFlight():
		*items = append(*items, checkItem{c: c, tok: c.tok})
	case c.state == stWaiting:
		c.retry()
		s.makeRunnableLocked(c)
	case c.kept && c.state == stIdle && now.After(s.keptUsableUntil(c).Add(-s.unrecordedMargin(c))):
		// Nothing came in time. The lease would expire by itself a
		// moment later (Hold after the keep); released now, the
		// controller's next message need not wait for that. A lease
		// whose done seq is not recorded yet goes a round early, so
		// that the release (which records it) comes before it expires.
		s.releaseKeptLocked(c)
		s.forgetIfIdleLocked(c)
	}
}

// checkOne reads one in-flight controller's lease and judges it.
func (s *Server) checkOne(ctx context.Context, it checkItem) {
	cctx, cancel := context.WithTimeout(ctx, s.cfg.CheckInterval)
	st, err := s.store.Inspect(cctx, it.c.id)
	cancel()
	if err != nil {
		s.storeError("inspect", it.c.id, err)
		return
	}
	s.judge(it, st)
}

// judge decides on one in-flight controller from its lease state.
func (s *Server) judge(it checkItem, st lease.State) {
	c := it.c
	c.sh.mu.Lock()
	defer c.sh.mu.Unlock()
	if !c.inFlight() || c.tok != it.tok {
		return // the outcome came meanwhile
	}
	switch {
	case st.Locked && st.Token == it.tok && !st.Stale(s.cfg.TTL):
		c.releaseSeen = time.Time{}
	case !st.Locked && st.Released == it.tok.Fence:
		// The parser finished and released; its outcome should be on its
		// way. Give it a check interval, then take it as lost.
		if c.releaseSeen.IsZero() {
			c.releaseSeen = time.Now()
		} else if time.Since(c.releaseSeen) >= s.cfg.CheckInterval {
			s.requeueLocked(c, "released, but its outcome never arrived")
		}
	case !st.Locked:
		s.requeueLocked(c, "lease expired without release")
	case st.Token != it.tok:
		s.requeueLocked(c, "lease now held by another grant")
	default:
		s.requeueLocked(c, "heartbeat older than the lease")
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
		c.retry()
		s.makeRunnableLocked(c)
		sh.mu.Unlock()
	case c.inFlight():
		it := checkItem{c: c, tok: c.tok}
		sh.mu.Unlock()
		s.bg.Go(func() { s.checkOne(context.Background(), it) })
	default:
		sh.mu.Unlock()
	}
}
