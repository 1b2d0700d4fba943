package socket

import (
	"context"
	"errors"
	"io"
	"log/slog"
	"net"
	"slices"
	"time"

	"github.com/edgegate/edgegate/egp"
)

// readBufSize is the size of a device connection's read buffer.
const readBufSize = 4096

// connLog is a connection's logger, built on first use (two With calls
// per connection add up with 10,000 devices).
type connLog struct {
	base *slog.Logger
	conn net.Conn
	id   string // the controller, once known
	l    *slog.Logger
}

func (c *connLog) get() *slog.Logger {
	if c.l == nil {
		c.l = c.base.With("remote", c.conn.RemoteAddr().String())
		if c.id != "" {
			c.l = c.l.With("controller", c.id)
		}
	}
	return c.l
}

// connection is an accepted device connection.
type connection struct {
	conn  net.Conn
	lines bool
	lean  bool   // read with a lent buffer, and waited on by a fresh goroutine (see waitLean)
	done  func() // called when the connection is served
	sess  *session
	er    *egp.Reader     // EGP/1
	lr    *egp.LineReader // lines
	log   *connLog
}

// serveConn runs one device connection: HELLO, WELCOME, then messages.
func (s *Server) serveConn(ctx context.Context, c *connection) {
	if isTeltonika(c.conn) {
		s.serveTeltonika(ctx, c)
		return
	}
	// The handshake has a frame of its own, not kept on the stack while
	// the reader waits for frames (see openLean).
	sess, er, lr, log := s.greet(ctx, c.conn, c.lines, c.lean)
	if sess == nil {
		c.done()
		return
	}
	c.sess, c.er, c.lr, c.log = sess, er, lr, log
	var err error
	if c.lines {
		err = sess.readLines(lr, c.lean)
	} else {
		err = sess.readFrames(er, c.lean)
	}
	s.served(ctx, c, err)
}

// errWait is readFrames's answer when its buffer is drained and the
// connection is lean (see waitLean).
var errWait = errors.New("socket: waiting for the device")

// served ends c after its reader returned err, or waits for the device on
// a goroutine of its own when err is errWait.
func (s *Server) served(ctx context.Context, c *connection, err error) {
	if err == errWait {
		s.sessWG.Go(func() { s.waitLean(ctx, c) })
		return
	}
	if c.er != nil {
		c.er.Release()
	} else {
		c.lr.Release()
	}
	var pe *egp.Error
	if errors.As(err, &pe) {
		s.stats.protoError(pe.Code)
		c.log.get().Info("socket: protocol error, closing", "code", pe.Code, "err", pe.Reason)
	} else if err != nil && !isEOF(err) && !errors.Is(err, net.ErrClosed) {
		c.log.get().Debug("socket: connection error", "err", err)
	}
	if pe != nil {
		s.closeSession(c.sess, pe.Code, pe.Reason)
	} else {
		if isEOF(err) {
			s.linger(c.sess)
		}
		s.closeSession(c.sess, 0, "")
	}
	<-c.sess.written
	c.done()
}

// halfCloseLinger bounds how long a session whose device closed its
// sending side stays open for the ACKs of what it sent.
const halfCloseLinger = 30 * time.Second

// linger keeps sess open after its device closed the sending side (a
// half-close: `nc` does it right after writing) until every message it
// sent is acknowledged: the device may still read, and closing at once
// would drop what is queued. It ends early when the session is closed
// (taken over, the appliance stopping), and after halfCloseLinger.
func (s *Server) linger(sess *session) {
	sh := sess.sh
	deadline := time.Now().Add(halfCloseLinger)
	t := time.AfterFunc(halfCloseLinger, func() {
		sh.mu.Lock()
		if c := sess.ctrl; c != nil {
			c.space.Broadcast()
		}
		sh.mu.Unlock()
	})
	defer t.Stop()
	sh.mu.Lock()
	defer sh.mu.Unlock()
	for !sess.closed && time.Now().Before(deadline) && !s.stopping.Load() {
		c := sess.ctrl
		if c == nil || !slices.ContainsFunc(c.q, func(m *msg) bool { return m.sess == sess }) {
			return
		}
		c.space.Wait()
	}
}

// waitLean waits for c's device on a fresh goroutine, then reads what
// came, and leaves the next wait to another fresh goroutine. A goroutine
// waiting for a device that has read frames before keeps the stack they
// needed (4 KiB or more: the runtime shrinks a stack only when a quarter
// of it is enough, and a read waiting for the network uses more than
// that); a fresh one waiting in a shallow Wait, with no read buffer held
// (egp.NewPooledReader), keeps 2 KiB. A silent device so costs no read
// buffer and the smallest stack, for the start of a goroutine and one more
// read call each time its stream runs dry.
func (s *Server) waitLean(ctx context.Context, c *connection) {
	var err error
	if c.lines {
		if err = c.lr.Wait(); err == nil {
			err = c.sess.readLines(c.lr, true)
		}
	} else if err = c.er.Wait(); err == nil {
		err = c.sess.readFrames(c.er, true)
	}
	s.served(ctx, c, err)
}

func isEOF(err error) bool {
	return errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF)
}
