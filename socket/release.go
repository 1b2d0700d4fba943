package socket

import (
	"context"
	"errors"

	"github.com/edgegate/edgegate/lease"
)

// abandon releases a grant nobody works under, logging a store error.
func (s *Server) abandon(id string, tok lease.Token) {
	ctx, cancel := context.WithTimeout(context.Background(), s.cfg.TTL)
	defer cancel()
	if err := s.store.Abandon(ctx, id, tok); err != nil && !errors.Is(err, lease.ErrLost) {
		s.logStoreError("release", id, err)
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

func (s *Server) logStoreError(op, id string, err error) {
	if s.stats.storeErrors.Load()%1000 == 1 {
		s.log.Warn("socket: lease store "+op+" failed; nothing is unlocked on an error, retrying", "controller", id, "err", err)
	}
}
