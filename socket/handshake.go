package socket

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"os"
	"time"

	"github.com/edgegate/edgegate/coord"
	"github.com/edgegate/edgegate/egp"
	"github.com/edgegate/edgegate/lease"
)

// greet reads the HELLO on conn, opens its session and sends the WELCOME.
// A nil session means the device was refused (and conn closed).
//
//go:noinline
func (s *Server) greet(ctx context.Context, conn net.Conn, lines, lean bool) (*session, *egp.Reader, *egp.LineReader, *connLog) {
	log := &connLog{base: s.log, conn: conn} // built when it logs: most connections never do
	er, lr, hello, err := s.readHelloOn(conn, lines, lean)
	if err != nil {
		s.refuseHello(conn, lines, err, log)
		return nil, nil, nil, nil
	}
	if !s.authorized(conn, lines, hello, log) {
		return nil, nil, nil, nil
	}
	if buffered(er, lr) == 0 && peerGone(conn) {
		// Nothing after the HELLO but the end of the stream: the device
		// gave this connection up (and may have a session elsewhere).
		log.get().Info("socket: device gone before its WELCOME, no session opened", "controller", hello.ID)
		conn.Close()
		return nil, nil, nil, nil
	}
	conn.SetDeadline(time.Time{})
	sess := &session{
		s: s, sh: s.shardOf(hello.ID), conn: conn, lines: lines, id: hello.ID, opened: time.Now(),
		persistent: !lines && hello.Flags&egp.FlagPersistentSeq != 0,
		written:    make(chan struct{}),
	}
	log.id = sess.id
	lastSeq, err := s.openLean(ctx, sess, hello.Flags&egp.FlagSeqReset != 0)
	if err != nil {
		// Stopping, or the lease store cannot tell the done record: the
		// device retries later (WELCOME without a true last_seq could make
		// a persistent-seq device reuse seqs that are done).
		code := refusal(err)
		s.stats.protoError(code)
		log.get().Warn("socket: session refused", "code", code, "err", err)
		if sess.ctrl == nil {
			// Refused before it was registered; else open closed it, and
			// its writer sends the ERROR (a write here could come after
			// the writer closed the connection).
			rejectConn(conn, lines, code, err.Error())
		}
		return nil, nil, nil, nil
	}
	sess.sendWelcome(lastSeq)
	if s.log.Enabled(ctx, slog.LevelDebug) {
		log.get().Debug("socket: session opened", "persistent", sess.persistent, "last_seq", lastSeq)
	}
	return sess, er, lr, log
}

// buffered returns how many bytes the connection's reader holds.
func buffered(er *egp.Reader, lr *egp.LineReader) int {
	if lr != nil {
		return lr.Buffered()
	}
	return er.Buffered()
}

// readHelloOn reads the HELLO on conn within HelloTimeout, with the reader
// the connection keeps (a lean one reads with lent buffers). When the
// appliance stops meanwhile, an error is errStopping.
func (s *Server) readHelloOn(conn net.Conn, lines, lean bool) (er *egp.Reader, lr *egp.LineReader, hello egp.Hello, err error) {
	s.mu.Lock()
	s.greeting[conn] = struct{}{}
	stopping := s.stopping.Load()
	s.mu.Unlock()
	// Over TLS the read of the HELLO runs the handshake, which writes
	// too: both are bounded.
	conn.SetDeadline(time.Now().Add(s.cfg.HelloTimeout))
	if stopping {
		conn.SetReadDeadline(time.Now())
	}
	if lines {
		if lean {
			lr = egp.NewPooledLineReader(conn, s.cfg.MaxFrame, s.readBufs)
		} else {
			lr = egp.NewLineReader(conn, s.cfg.MaxFrame)
		}
		var line []byte
		if line, err = lr.ReadLine(); err == nil {
			hello.Version = egp.Version
			hello.ID, hello.Token, err = egp.ParseLinesHello(line)
		}
	} else {
		if lean {
			er = egp.NewPooledReader(conn, uint32(s.cfg.MaxFrame), s.readBufs)
		} else {
			er = egp.NewReader(conn, uint32(s.cfg.MaxFrame), readBufSize)
		}
		hello, err = readHello(er)
	}
	s.mu.Lock()
	delete(s.greeting, conn)
	stopping = s.stopping.Load()
	s.mu.Unlock()
	if err != nil && stopping {
		err = errStopping
	}
	return er, lr, hello, err
}

// refuseHello answers a connection whose HELLO did not come (err) with
// ERROR and closes it; a device that closed gets no answer.
func (s *Server) refuseHello(conn net.Conn, lines bool, err error, log *connLog) {
	code := egp.ErrorCode(err)
	switch {
	case errors.Is(err, errStopping):
		rejectConn(conn, lines, egp.CodeShuttingDown, err.Error())
		return
	case errors.Is(err, os.ErrDeadlineExceeded):
		code, err = egp.CodeHelloTimeout, errors.New("no HELLO within devices.hello_timeout")
	case isEOF(err):
		conn.Close()
		return
	}
	s.stats.protoError(code)
	log.get().Info("socket: device refused before HELLO", "code", code, "err", err)
	rejectConn(conn, lines, code, err.Error())
}

// authorized reports whether hello may open its controller's session: its
// token, and with CertIDs the device's certificate, name the controller.
// A device that may not is answered ERROR auth and closed.
func (s *Server) authorized(conn net.Conn, lines bool, hello egp.Hello, log *connLog) bool {
	if t := s.tokens.Load(); t != nil && !t.check(hello.ID, hello.Token) {
		s.stats.protoError(egp.CodeAuth)
		log.get().Info("socket: device refused: wrong token", "controller", hello.ID)
		rejectConn(conn, lines, egp.CodeAuth, "token refused for controller "+hello.ID)
		return false
	}
	if s.cfg.CertIDs && !certNames(conn, hello.ID) {
		s.stats.protoError(egp.CodeAuth)
		log.get().Info("socket: device refused: its certificate does not name the controller", "controller", hello.ID)
		rejectConn(conn, lines, egp.CodeAuth, "the device certificate does not name controller "+hello.ID)
		return false
	}
	return true
}

// sendWelcome queues the WELCOME, reporting lastSeq, and starts the
// session's writer. The session was registered before (open), so others
// may write to it already: a takeover or a drain its ERROR, which closes
// it, and the idle loop its PINGs once it is greeted.
func (sess *session) sendWelcome(lastSeq uint64) {
	s := sess.s
	sess.welcomed = lastSeq
	sess.wmu.Lock()
	if sess.wclose {
		sess.wmu.Unlock()
		return
	}
	if sess.lines {
		sess.wbuf = egp.AppendLinesWelcome(sess.wbuf, lastSeq)
	} else {
		ack := egp.AckProcessed
		if s.cfg.NoAck {
			ack = egp.AckNone
		}
		sess.wbuf = egp.AppendWelcome(sess.wbuf, egp.Welcome{
			Version: egp.Version, AckMode: ack, MaxFrame: uint32(s.cfg.MaxFrame), LastSeq: lastSeq,
		})
	}
	sess.greeted.Store(true)
	sess.unlockAndWrite()
}

func readHello(r *egp.Reader) (egp.Hello, error) {
	h, err := r.Next()
	if err != nil {
		return egp.Hello{}, err
	}
	if h.Type != egp.TypeHello {
		return egp.Hello{}, &egp.Error{Code: egp.CodeProtocol, Reason: h.Type.String() + " before HELLO"}
	}
	if h.Len > egp.MaxHelloLen {
		// Refused before its body is read: a buffer the size it
		// announces would be allocated for anyone who can connect.
		return egp.Hello{}, &egp.Error{Code: egp.CodeProtocol, Reason: fmt.Sprintf("HELLO body of %d bytes, at most %d", h.Len, egp.MaxHelloLen)}
	}
	body, err := r.Scratch(h)
	if err != nil {
		return egp.Hello{}, err
	}
	hello, err := egp.ParseHello(body)
	if err != nil {
		return hello, err
	}
	hello.Token = append([]byte(nil), hello.Token...)
	return hello, egp.ValidID(hello.ID)
}

// openLean runs open on a goroutine of its own and waits for it, so that
// every connection's reader stays lean: the lease store's client (the done
// record's read) calls deep, and the reader goroutine, once its stack had
// grown for that, would keep the grown stack while it waits for frames
// (the runtime shrinks a stack only when a quarter of it is enough).
func (s *Server) openLean(ctx context.Context, sess *session, reset bool) (lastSeq uint64, err error) {
	opened := make(chan struct{})
	go func() {
		defer close(opened)
		lastSeq, err = s.open(ctx, sess, reset)
	}()
	<-opened
	return lastSeq, err
}

// open registers sess as its controller's current session, taking over an
// older one, and returns the controller's done seq for the WELCOME.
func (s *Server) open(ctx context.Context, sess *session, reset bool) (uint64, error) {
	sh := sess.sh
	sh.mu.Lock()
	// Registered under Server.mu with the check: the drain, which sets
	// stopping under it, then closes every session registered before.
	s.mu.Lock()
	if s.stopping.Load() {
		s.mu.Unlock()
		sh.mu.Unlock()
		return 0, errStopping
	}
	s.sessions[sess] = struct{}{}
	s.mu.Unlock()
	c := s.controllerLocked(sh, sess.id)
	if old := c.sess; old != nil {
		s.takeOverLocked(old, "on this socket", "old", old.conn.RemoteAddr().String(), "new", sess.conn.RemoteAddr().String())
		// Closing the old session may have forgotten an idle controller.
		c = s.controllerLocked(sh, sess.id)
	}
	c.sess, sess.ctrl = sess, c
	if reset {
		// The seqs start again: no batch goes under a lease that a batch
		// taken before had (its done seq is the old session's).
		c.resets++
		s.releaseKeptLocked(c)
	}
	sh.mu.Unlock()

	cctx, cancel := context.WithTimeout(ctx, s.cfg.TTL)
	defer cancel()
	continues := sess.persistent && !reset
	ls, err := s.store.Open(cctx, sess.id, continues)
	if err != nil {
		err = fmt.Errorf("lease store unavailable, try again: %w", err)
		s.closeSession(sess, refusal(err), err.Error())
		return 0, err
	}
	sh.mu.Lock()
	sess.lease = ls
	sh.mu.Unlock()
	// A session of this controller on another appliance is older: take it
	// over (onSession there). Only a speed-up: the store's session record
	// takes it over even when this message is lost. It carries the
	// session's number, so that one that arrives late closes no newer
	// session there.
	if err := s.nc.Publish(coord.SessionSubject(sess.id), coord.SessionAnnouncement(s.id, ls.No)); err != nil {
		s.log.Warn("socket: announce session", "controller", sess.id, "err", err)
	}
	if !continues {
		// Its seqs start a generation of their own: nothing to suppress,
		// and no done record of an earlier session to wait for.
		return 0, nil
	}
	done, err := s.welcome(ctx, sess)
	if err != nil {
		s.closeSession(sess, refusal(err), err.Error())
		return 0, err
	}
	return done, nil
}

// refusal is the ERROR code of a session that open refused with err.
func refusal(err error) egp.Code {
	switch {
	case errors.Is(err, errStopping):
		return egp.CodeShuttingDown
	case errors.Is(err, errTakenOver):
		return egp.CodeTakenOver
	}
	return egp.CodeBusy
}

// welcome waits until no lease of sess's controller is held (a batch of an
// older session, here or on another appliance, may still run: its keep
// then lets the lease go) and returns the done record for the WELCOME,
// which so covers every message acknowledged before. A device that numbers
// its messages from the WELCOME's last_seq never reuses a seq that was
// handled.
func (s *Server) welcome(ctx context.Context, sess *session) (uint64, error) {
	// An older holder ends within a batch and a TTL (its lock expires
	// when it is cut off); a handler slower than that makes the device
	// retry.
	deadline := time.Now().Add(2*s.cfg.TTL + s.cfg.CheckInterval)
	wait := time.Millisecond
	for {
		cctx, cancel := context.WithTimeout(ctx, s.cfg.TTL)
		ls, done, err := s.store.Welcome(cctx, sess.id, sess.lease)
		cancel()
		switch {
		case err == nil:
			sess.lease = ls
			return done, nil
		case errors.Is(err, lease.ErrSuperseded):
			return 0, errTakenOver
		case !errors.Is(err, lease.ErrHeld):
			return 0, fmt.Errorf("lease store unavailable, try again: %w", err)
		}
		if time.Now().After(deadline) {
			return 0, errors.New("the controller's previous session is still being handled, try again")
		}
		if !sleepCtx(ctx, wait) {
			return 0, errStopping
		}
		wait = min(2*wait, s.cfg.CheckInterval/4)
	}
}
