package socket

import (
	"strings"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/edgegate/edgegate/coord"
	"github.com/edgegate/edgegate/egp"
)

// onSession takes over a session of this socket when another socket
// announces a newer session of the same controller.
func (s *Server) onSession(m *nats.Msg) {
	from, n, numbered := coord.ParseSessionAnnouncement(m.Data)
	if from == s.id {
		return
	}
	at := time.Now()
	id := m.Subject[strings.LastIndexByte(m.Subject, '.')+1:]
	c, sh := s.lookup(id)
	defer sh.mu.Unlock()
	if c == nil || c.sess == nil || !c.sess.opened.Before(at) {
		return
	}
	if numbered && (c.sess.lease.No == 0 || c.sess.lease.No >= n) {
		// Not older than the announced one (an announcement that came
		// late), or not known yet: the store decides.
		return
	}
	s.takeOverLocked(c.sess, "on another appliance", "old", c.sess.conn.RemoteAddr().String())
}

// takeOverLocked closes old, replaced by a newer session of its
// controller, with ERROR taken over; where says where the newer one was
// found, attrs are logged with it. There are three ways to find one: a
// HELLO on this socket (open), another socket's announcement (onSession),
// and the store refusing an acquire for old (acquire), which holds even
// when the announcement was lost.
func (s *Server) takeOverLocked(old *session, where string, attrs ...any) {
	s.stats.takeovers.Add(1)
	s.log.Info("socket: session taken over by a newer one "+where, append([]any{"controller", old.id}, attrs...)...)
	s.closeSessionLocked(old, egp.CodeTakenOver, errTakenOver.Error())
}
