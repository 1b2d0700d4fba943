package socket

import (
	"context"
	"errors"
	"net"
	"time"

	"github.com/edgegate/edgegate/egp"
)

// leanAfter is Config.LeanAfter's default: beyond that many open
// connections, new ones are served lean (see waitLean). Fewer
// devices keep their own buffer and goroutine and save the read call.
const leanAfter = 1000

// maxRefusing is the most refused connections answered at once (see
// refuse); beyond it a refused connection is closed without an answer.
const maxRefusing = 64

// rejectTimeout bounds the answer to a refused connection, a TLS
// handshake included.
const rejectTimeout = 2 * time.Second

// acceptLoop accepts device connections until the listener is closed.
func (s *Server) acceptLoop(ctx context.Context, ln net.Listener, lines bool) {
	var backoff time.Duration
	for {
		conn, err := ln.Accept()
		if err != nil {
			if ctx.Err() != nil || errors.Is(err, net.ErrClosed) {
				return
			}
			// Too many open files and the like: back off and go on.
			backoff = min(max(2*backoff, 5*time.Millisecond), time.Second)
			s.log.Warn("socket: accept", "err", err, "retry_in", backoff)
			if !sleepCtx(ctx, backoff) {
				return
			}
			continue
		}
		backoff = 0
		host := remoteHost(conn)
		s.mu.Lock()
		full := s.cfg.MaxConnections > 0 && s.conns >= s.cfg.MaxConnections
		fullIP := s.cfg.MaxPerIP > 0 && s.perIP[host] >= s.cfg.MaxPerIP
		stopping := s.stopping.Load()
		if !full && !fullIP && !stopping {
			s.conns++
			s.perIP[host]++
		}
		// A box with many devices serves them lean (see waitLean): a
		// read buffer per connection adds up, and most of them wait.
		lean := s.cfg.LeanAfter < 0 || s.conns > s.cfg.LeanAfter
		s.mu.Unlock()
		if full || fullIP || stopping {
			code, why := egp.CodeBusy, "connection limit reached"
			switch {
			case stopping:
				code, why = egp.CodeShuttingDown, "the appliance is stopping"
			case fullIP:
				why = "connection limit of this source address reached"
			}
			s.stats.refused.Add(1)
			s.refuse(conn, lines, code, why)
			continue
		}
		s.stats.connections.Add(1)
		c := &connection{conn: conn, lines: lines, lean: lean, done: func() {
			s.mu.Lock()
			s.conns--
			if s.perIP[host]--; s.perIP[host] <= 0 {
				delete(s.perIP, host)
			}
			s.mu.Unlock()
			s.stats.connections.Add(-1)
		}}
		s.sessWG.Go(func() { s.serveConn(ctx, c) })
	}
}

// refuse answers a connection refused at accept on a goroutine of its
// own: a device that does not take the answer, or over TLS never
// finishes its handshake, then holds up no other accept. Beyond
// maxRefusing answers under way the connection is closed without one.
func (s *Server) refuse(conn net.Conn, lines bool, code egp.Code, why string) {
	select {
	case s.refusing <- struct{}{}:
	default:
		conn.Close()
		return
	}
	s.sessWG.Go(func() {
		defer func() { <-s.refusing }()
		rejectConn(conn, lines, code, why)
	})
}

// rejectConn answers ERROR and closes, within rejectTimeout: over TLS the
// write runs the handshake, which reads from the device.
func rejectConn(conn net.Conn, lines bool, code egp.Code, why string) {
	if isTeltonika(conn) {
		conn.Close() // its protocol has no word for it before the IMEI
		return
	}
	conn.SetDeadline(time.Now().Add(rejectTimeout))
	if lines {
		conn.Write(egp.AppendLinesError(nil, code, why))
	} else {
		conn.Write(egp.AppendError(nil, code, why))
	}
	conn.Close()
}

// remoteHost is the source address of conn without its port.
func remoteHost(conn net.Conn) string {
	host, _, err := net.SplitHostPort(conn.RemoteAddr().String())
	if err != nil {
		return conn.RemoteAddr().String()
	}
	return host
}

func sleepCtx(ctx context.Context, d time.Duration) bool {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return false
	case <-t.C:
		return true
	}
}
