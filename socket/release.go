package socket

import (
	"context"
	"errors"

	"github.com/edgegate/edgegate/lease"
)

// abandonLease gives up a grant nobody worked under, leaving the done
// record as it is. A store error is counted, logged and returned; a lease
// gone already (ErrLost) is none.
func (s *Server) abandonLease(id string, tok lease.Token) error {
	ctx, cancel := context.WithTimeout(context.Background(), s.cfg.TTL)
	defer cancel()
	err := s.store.Abandon(ctx, id, tok)
	if err != nil && !errors.Is(err, lease.ErrLost) {
		s.storeError("abandon", id, err)
		return err
	}
	return nil
}

// abandonBatch abandons the lease of c's batch, which no parser got, and
// makes the controller runnable again, or, when the store fails, leaves
// it waiting for the lease to expire; with returnWorker its pool's worker
// is counted free again too.
func (s *Server) abandonBatch(c *controller, tok lease.Token, returnWorker bool) {
	err := s.abandonLease(c.id, tok)
	c.sh.mu.Lock()
	defer c.sh.mu.Unlock()
	if returnWorker {
		s.returnWorkerLocked(c)
	}
	if err != nil {
		c.leaseUnavailable() // the check loop retries
		return
	}
	c.abandoned()
	s.makeRunnableLocked(c)
}

// releaseAsyncLocked releases c's kept lease (c.tok) on a goroutine of
// its own, recording c.grantDone when recordDone and no seq reset came
// since its batch was taken.
func (s *Server) releaseAsyncLocked(c *controller, recordDone bool) {
	id, tok, done := c.id, c.tok, c.grantDone
	recordDone = recordDone && c.sentResets == c.resets
	s.bg.Go(func() { s.releaseLease(id, tok, done, recordDone) })
}

// releaseKeptLocked releases c's kept lease, if any.
func (s *Server) releaseKeptLocked(c *controller) {
	if c.kept {
		c.kept = false
		s.releaseAsyncLocked(c, true)
	}
}

// releaseLease releases a kept lease, recording done when recordDone (its
// pool may have left that to this socket), else abandons it; it logs a
// store error.
func (s *Server) releaseLease(id string, tok lease.Token, done uint64, recordDone bool) {
	if !recordDone {
		s.abandonLease(id, tok)
		return
	}
	ctx, cancel := context.WithTimeout(context.Background(), s.cfg.TTL)
	defer cancel()
	if err := s.store.Release(ctx, id, tok, done); err != nil && !errors.Is(err, lease.ErrLost) {
		s.storeError("release", id, err)
	}
}

// storeError counts a lease store error of op for controller id and logs
// the first of every thousand: an outage fails every call, and each would
// log otherwise.
func (s *Server) storeError(op, id string, err error) {
	if s.stats.storeErrors.Add(1)%1000 == 1 {
		s.log.Warn("socket: lease store "+op+" failed; nothing is unlocked on an error, retrying", "controller", id, "err", err)
	}
}
