package socket

import (
	"strings"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/edgegate/edgegate/egp"
)

// onSession takes over a session of this socket when another socket
// announces a newer session of the same controller.
func (s *Server) onSession(m *nats.Msg) {
	if string(m.Data) == s.id {
		return
	}
	at := time.Now()
	id := m.Subject[strings.LastIndexByte(m.Subject, '.')+1:]
	c, sh := s.lookup(id)
	defer sh.mu.Unlock()
	if c == nil || c.sess == nil || !c.sess.opened.Before(at) {
		return
	}
	s.stats.takeovers.Add(1)
	s.log.Info("socket: session taken over by a newer one on another appliance", "controller", id,
		"old", c.sess.conn.RemoteAddr().String())
	s.closeSessionLocked(c.sess, egp.CodeTakenOver, "a newer session for this controller exists")
}
