package socket

import (
	"errors"
	"net"
	"sync"
	"sync/atomic"
	"time"

	"github.com/edgegate/edgegate/egp"
	"github.com/edgegate/edgegate/lease"
)

var errStopping = errors.New("the appliance is stopping")

// errTakenOver: a newer session of the controller was opened meanwhile.
var errTakenOver = errors.New("a newer session for this controller exists")

// session is one device connection after its HELLO.
type session struct {
	s          *Server
	sh         *shard // its controller's
	conn       net.Conn
	lines      bool
	tel        bool // a Teltonika device: no EGP/1 frames, record counts for ACKs (teltonika.go)
	id         string
	persistent bool // HELLO flag bit1: duplicates of done seqs are suppressed
	opened     time.Time
	// lease is the session in the lease store (Open): its batches are
	// acquired for it, and its messages' output IDs carry its generation.
	// Set before the WELCOME, read-only after.
	lease lease.Session
	line  uint64 // lines: the last line's number; the reader's alone

	// Guarded by sh.mu.
	ctrl    *controller
	closed  bool
	waiting bool // the reader waits for queue space (backpressure is not idleness)
	pinged  bool // the idle loop sent a PING that nothing answered yet

	gone bool // closed; guarded by Server.mu (a reader out of memory waits under it)

	heard   atomic.Bool // a frame arrived since the idle loop last looked
	greeted atomic.Bool // the WELCOME is queued: frames may follow it

	lastSeq  uint64 // reader goroutine only
	welcomed uint64 // the WELCOME's last_seq; reader goroutine only
	// Reader goroutine only: the messages it queued since their
	// controller was last offered for dispatch, and whether it holds its
	// shard's lock (see flush).
	pending int
	locked  bool

	wmu      sync.Mutex
	wbuf     []byte
	spare    []byte        // the other buffer while a writer runs
	wclose   bool          // close after writing wbuf
	writing  bool          // a writer goroutine runs (or has closed the connection)
	written  chan struct{} // closed when the connection is closed
	wqueued  int           // bytes of wbuf and of the write under way (see account)
	wcounted int           // bytes of wbuf counted in wqueued
	drained  chan struct{} // made by a reader waiting for wqueued to fall to writeBacklog, closed then
	wover    atomic.Bool   // wqueued is above writeBacklog
}

// closeSession ends sess (see closeSessionLocked).
func (s *Server) closeSession(sess *session, code egp.Code, reason string) {
	sess.sh.mu.Lock()
	s.closeSessionLocked(sess, code, reason)
	sess.sh.mu.Unlock()
}

// closeSessionLocked ends sess, under its shard lock: with a code the
// device gets ERROR first. Its messages not handed out are dropped (the
// device resends them) and its reader is woken if it waits for queue
// space or memory.
func (s *Server) closeSessionLocked(sess *session, code egp.Code, reason string) {
	if sess.closed {
		return
	}
	sess.closed = true
	s.mu.Lock()
	delete(s.sessions, sess)
	sess.gone = true
	s.memCond.Broadcast()
	s.mu.Unlock()
	c := sess.ctrl
	if c != nil {
		if c.sess == sess {
			c.sess = nil
		}
		s.pruneLocked(c)
		c.space.Broadcast()
		if c.sess == nil && c.state == stIdle {
			// The device is gone (perhaps to another appliance, which
			// then needs the lease): release a kept one now.
			s.releaseKeptLocked(c)
		}
		s.forgetIfIdleLocked(c)
	}
	sess.wmu.Lock()
	if code != 0 && !sess.tel { // a Teltonika device has no error message
		if sess.lines {
			sess.wbuf = egp.AppendLinesError(sess.wbuf, code, reason)
		} else {
			sess.wbuf = egp.AppendError(sess.wbuf, code, reason)
		}
	}
	sess.wclose = true
	sess.unlockAndWrite()
}

// sessionsLocked lists the open sessions (Server.mu held), to be visited
// under their shard locks after it is let go.
func (s *Server) sessionsLocked() []*session {
	sessions := make([]*session, 0, len(s.sessions))
	for sess := range s.sessions {
		sessions = append(sessions, sess)
	}
	return sessions
}
