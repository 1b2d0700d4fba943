package socket

import (
	"context"
	"time"

	"github.com/edgegate/edgegate/egp"
)

// idleLoop closes EGP/1 sessions that send nothing for IdleTimeout: every
// half of it, a session that sent no frame since the last look gets a
// PING, and one that did not answer that either is closed. A device thus
// gets its PING after a half to a whole IdleTimeout of silence and is
// closed after one to one and a half. A frame once begun must be complete
// by then too; a reader waiting for queue space is never idle.
func (s *Server) idleLoop(ctx context.Context) {
	t := time.NewTicker(s.cfg.IdleTimeout / 2)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		s.sweepIdle()
	}
}

func (s *Server) sweepIdle() {
	s.mu.Lock()
	sessions := s.sessionsLocked()
	s.mu.Unlock()
	for _, sess := range sessions {
		sess.sh.mu.Lock()
		switch {
		case sess.lines || sess.tel || sess.closed: // no PING in their protocols
		case !sess.greeted.Load():
			// Its WELCOME waits for the lease store (an older session's
			// batch), within a deadline of its own; a PING would come first.
		case sess.heard.Swap(false) || sess.waiting:
			sess.pinged = false
		case !sess.pinged:
			sess.pinged = true
			sess.write(func(w []byte) []byte { return egp.AppendPing(w, []byte("edgegate")) })
		default:
			s.stats.idleClosed.Add(1)
			sess.conn.SetReadDeadline(time.Now()) // its reader fails now and closes the session
		}
		sess.sh.mu.Unlock()
	}
}
