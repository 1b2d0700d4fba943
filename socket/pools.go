package socket

import (
	"encoding/json"
	"sync/atomic"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/edgegate/edgegate/coord"
)

// pool is a parser pool as announced on edgegate.ready. free is an
// estimate: the announced count minus the batches this socket picked it
// for that it has not answered yet (unanswered), which the announcement
// may not count yet; an outcome adds one. Its counters are atomics: the
// hot path reads and changes them under a shard lock, announcements under
// Server.mu.
type pool struct {
	id, appliance, subject string
	workers                atomic.Int64
	free                   atomic.Int64
	unanswered             atomic.Int64 // batches picked for it and not answered yet
	seen                   time.Time    // guarded by Server.mu
	gone                   atomic.Bool  // dropped from the pool table
	ownAppliance           bool         // announced by this appliance: preferred
	ownProcess             LocalPool    // the pool of this process: batches go to it by a call, without NATS
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
		p = &pool{id: r.Pool, appliance: r.Appliance, subject: r.Subject, ownAppliance: r.Appliance == s.cfg.Name}
		if l := s.cfg.Local; l != nil && l.ID() == r.Pool {
			p.ownProcess, p.ownAppliance = l, true
		}
		s.pools[r.Pool] = p
		s.log.Info("socket: parser pool seen", "pool", r.Pool, "pool_appliance", r.Appliance, "workers", r.Workers)
	}
	p.workers.Store(int64(r.Workers))
	p.free.Store(max(0, int64(r.Free)-p.unanswered.Load()))
	p.seen = time.Now()
	if r.Free > 0 {
		s.runCond.Broadcast()
	}
}

// available is how many more batches p can take as far as this socket
// knows: for the pool of this process its idle workers less the batches
// picked for it and not yet offered, for others the estimate.
func (p *pool) available() int {
	if p.ownProcess != nil {
		return p.ownProcess.Free() - int(p.unanswered.Load())
	}
	return int(p.free.Load())
}

// takeWorker takes one of p's available workers for a batch about to be
// sent, if it has one (see available); the batch then counts as
// unanswered by p until p answers (answeredLocked).
func (p *pool) takeWorker() bool {
	if p.ownProcess != nil {
		for {
			u := p.unanswered.Load()
			if int64(p.ownProcess.Free())-u <= 0 {
				return false
			}
			if p.unanswered.CompareAndSwap(u, u+1) {
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
			p.unanswered.Add(1)
			return true
		}
	}
}

// returnWorker adds a worker back to p's free count, up to its workers;
// false if none was missing.
func (p *pool) returnWorker() bool {
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

// pickPoolLocked returns a pool with a free worker, those of this
// appliance first, then the one with the most free workers; nil if none.
func (s *Server) pickPoolLocked() *pool {
	var best *pool
	bestFree := 0
	for _, p := range s.pools {
		free := p.available()
		if free <= 0 {
			continue
		}
		if best == nil || p.ownAppliance && !best.ownAppliance || p.ownAppliance == best.ownAppliance && free > bestFree {
			best, bestFree = p, free
		}
	}
	return best
}

// answeredLocked records that c's pool answered (or will never answer)
// the batch c was picked for.
func (s *Server) answeredLocked(c *controller) {
	if c.unansweredSince.Swap(0) != 0 {
		c.pool.unanswered.Add(-1)
	}
}

// answered records, without the lock, that p took c's batch sent at
// sent, unless that was recorded already (by its outcome, which may come
// first).
func (s *Server) answered(c *controller, p *pool, sent time.Time) {
	if c.unansweredSince.CompareAndSwap(sent.UnixNano(), 0) {
		p.unanswered.Add(-1)
	}
}

// returnWorkerLocked returns the worker c's batch was picked for, when
// no parser got the batch.
func (s *Server) returnWorkerLocked(c *controller) {
	s.answeredLocked(c)
	c.pool.returnWorker()
	s.signalRun()
}
