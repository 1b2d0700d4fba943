package socket

import (
	"strings"

	"github.com/nats-io/nats.go"

	"github.com/edgegate/edgegate/coord"
)

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
	s.answeredLocked(c)
	if a.Accepted {
		c.accepted()
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
	c.handedBack()
	s.endFlight()
	s.bg.Go(func() { s.abandonBatch(c, tok, false) })
}

// onNoResponders handles an assignment sent to a pool that is gone.
func (s *Server) onNoResponders(id string) {
	c, sh := s.lookup(id)
	if c == nil || c.state != stAssigned {
		sh.mu.Unlock()
		return
	}
	s.answeredLocked(c)
	p, tok := c.pool, c.tok
	s.mu.Lock()
	if !p.gone.Load() {
		s.forgetPoolLocked(p)
		s.log.Info("socket: parser pool gone", "pool", p.id, "pool_appliance", p.appliance)
	}
	s.mu.Unlock()
	c.handedBack()
	s.endFlight()
	sh.mu.Unlock()
	s.bg.Go(func() { s.abandonBatch(c, tok, false) })
}

// remoteFrom reports whether c's batch went over NATS to the pool pool:
// an answer or outcome counts only from there (docs/design.md, "Trust and
// overlapping faults": coordination is private). A batch of the pool of
// this process never takes one from NATS: its outcomes come as calls.
func remoteFrom(c *controller, pool string) bool {
	return c.pool != nil && c.pool.ownProcess == nil && c.pool.id == pool
}
