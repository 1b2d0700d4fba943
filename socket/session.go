package socket

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/edgegate/edgegate/coord"
	"github.com/edgegate/edgegate/egp"
	"github.com/edgegate/edgegate/lease"
)

var errStopping = errors.New("the appliance is stopping")

// errTakenOver: a newer session of the controller was opened meanwhile.
var errTakenOver = errors.New("a newer session for this controller exists")

// writeTimeout bounds one write to a device.
const writeTimeout = 30 * time.Second

// leanAfter is Config.LeanAfter's default: beyond that many open
// connections, new ones are served lean (see waitApart). Fewer
// devices keep their own buffer and goroutine and save the read call.
const leanAfter = 1000

// readBufSize is the size of a device connection's read buffer.
const readBufSize = 4096

// maxRefusing is the most refused connections answered at once (see
// refuse); beyond it a refused connection is closed without an answer.
const maxRefusing = 64

// writeBacklog is how many bytes may wait to be written to a device
// (ACKs, PONGs, ERRORs) before its reader stops reading: a device that
// does not take what it is sent then holds at most this and one answer
// (a PONG of up to max_frame), and TCP backpressure holds it back.
const writeBacklog = 64 << 10

// rejectTimeout bounds the answer to a refused connection, a TLS
// handshake included.
const rejectTimeout = 2 * time.Second

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

	heard atomic.Bool // a frame arrived since the idle loop last looked

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
		// A box with many devices serves them lean (see waitApart):
		// 10,000 connections × 4 KiB is 40 MiB, and most of them wait.
		pooled := s.cfg.LeanAfter < 0 || s.conns > s.cfg.LeanAfter
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
		c := &connection{conn: conn, lines: lines, pooled: pooled, done: func() {
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

// connection is an accepted device connection.
type connection struct {
	conn   net.Conn
	lines  bool
	pooled bool   // read with a lent buffer, and waited on apart (see waitApart)
	done   func() // called when the connection is served
	sess   *session
	er     *egp.Reader     // EGP/1
	lr     *egp.LineReader // lines
	log    *connLog
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

// serveConn runs one device connection: HELLO, WELCOME, then messages.
func (s *Server) serveConn(ctx context.Context, c *connection) {
	if isTeltonika(c.conn) {
		s.serveTeltonika(ctx, c)
		return
	}
	// The handshake has a frame of its own, not kept on the stack while
	// the reader waits for frames (see openApart).
	sess, er, lr, log := s.greet(ctx, c.conn, c.lines, c.pooled)
	if sess == nil {
		c.done()
		return
	}
	c.sess, c.er, c.lr, c.log = sess, er, lr, log
	var err error
	if c.lines {
		err = sess.readLines(lr, c.pooled)
	} else {
		err = sess.readFrames(er, c.pooled)
	}
	s.served(ctx, c, err)
}

// errWait is readFrames's answer when its buffer is drained and the
// connection is waited on apart.
var errWait = errors.New("socket: waiting for the device")

// served ends c after its reader returned err, or waits for the device on
// a goroutine of its own when err is errWait.
func (s *Server) served(ctx context.Context, c *connection, err error) {
	if err == errWait {
		s.sessWG.Go(func() { s.waitApart(ctx, c) })
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

// waitApart waits for c's device on a fresh goroutine, then reads what
// came, and leaves the next wait to another fresh goroutine. A goroutine
// waiting for a device that has read frames before keeps the stack they
// needed (4 KiB or more: the runtime shrinks a stack only when a quarter
// of it is enough, and a read waiting for the network uses more than
// that); a fresh one waiting in a shallow Wait, with no read buffer held
// (egp.NewPooledReader), keeps 2 KiB. With 10,000 devices that is about
// 20 MiB of stacks and 40 MiB of read buffers fewer, for the start of a
// goroutine and one more read call each time a device's stream runs dry.
func (s *Server) waitApart(ctx context.Context, c *connection) {
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

// greet reads the HELLO on conn, opens its session and sends the WELCOME.
// A nil session means the device was refused (and conn closed).
//
//go:noinline
func (s *Server) greet(ctx context.Context, conn net.Conn, lines, pooled bool) (*session, *egp.Reader, *egp.LineReader, *connLog) {
	log := &connLog{base: s.log, conn: conn} // built when it logs: most connections never do
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
	var (
		er    *egp.Reader
		lr    *egp.LineReader
		hello egp.Hello
		err   error
	)
	if lines {
		if pooled {
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
		if pooled {
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
		rejectConn(conn, lines, egp.CodeShuttingDown, "the appliance is stopping")
		return nil, nil, nil, nil
	}
	if err != nil {
		code := egp.ErrorCode(err)
		if errors.Is(err, os.ErrDeadlineExceeded) {
			code, err = egp.CodeHelloTimeout, errors.New("no HELLO within devices.hello_timeout")
		} else if isEOF(err) {
			conn.Close()
			return nil, nil, nil, nil
		}
		s.stats.protoError(code)
		log.get().Info("socket: device refused before HELLO", "code", code, "err", err)
		rejectConn(conn, lines, code, err.Error())
		return nil, nil, nil, nil
	}
	if t := s.tokens.Load(); t != nil && !t.check(hello.ID, hello.Token) {
		s.stats.protoError(egp.CodeAuth)
		log.get().Info("socket: device refused: wrong token", "controller", hello.ID)
		rejectConn(conn, lines, egp.CodeAuth, "token refused for controller "+hello.ID)
		return nil, nil, nil, nil
	}
	if s.cfg.CertIDs && !certNames(conn, hello.ID) {
		s.stats.protoError(egp.CodeAuth)
		log.get().Info("socket: device refused: its certificate does not name the controller", "controller", hello.ID)
		rejectConn(conn, lines, egp.CodeAuth, "the device certificate does not name controller "+hello.ID)
		return nil, nil, nil, nil
	}
	conn.SetDeadline(time.Time{})
	sess := &session{
		s: s, sh: s.shardOf(hello.ID), conn: conn, lines: lines, id: hello.ID, opened: time.Now(),
		persistent: !lines && hello.Flags&egp.FlagPersistentSeq != 0,
		written:    make(chan struct{}),
	}
	log.id = sess.id
	lastSeq, err := s.openApart(ctx, sess, hello.Flags&egp.FlagSeqReset != 0)
	if err != nil {
		// Stopping, or the lease store cannot tell the done record: the
		// device retries later (WELCOME without a true last_seq could make
		// a persistent-seq device reuse seqs that are done).
		code := egp.CodeBusy
		switch {
		case errors.Is(err, errStopping):
			code = egp.CodeShuttingDown
		case errors.Is(err, errTakenOver):
			code = egp.CodeTakenOver
		}
		s.stats.protoError(code)
		log.get().Warn("socket: session refused", "code", code, "err", err)
		rejectConn(conn, lines, code, err.Error())
		return nil, nil, nil, nil
	}
	sess.welcomed = lastSeq
	if lines {
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
	sess.wmu.Lock()
	sess.unlockAndWrite() // the WELCOME
	if s.log.Enabled(ctx, slog.LevelDebug) {
		log.get().Debug("socket: session opened", "persistent", sess.persistent, "last_seq", lastSeq)
	}
	return sess, er, lr, log
}

// remoteHost is the source address of conn without its port.
func remoteHost(conn net.Conn) string {
	host, _, err := net.SplitHostPort(conn.RemoteAddr().String())
	if err != nil {
		return conn.RemoteAddr().String()
	}
	return host
}

func readHello(r *egp.Reader) (egp.Hello, error) {
	h, body, err := r.ReadFrame()
	if err != nil {
		return egp.Hello{}, err
	}
	if h.Type != egp.TypeHello {
		return egp.Hello{}, &egp.Error{Code: egp.CodeProtocol, Reason: h.Type.String() + " before HELLO"}
	}
	hello, err := egp.ParseHello(body)
	if err != nil {
		return hello, err
	}
	hello.Token = append([]byte(nil), hello.Token...)
	return hello, egp.ValidID(hello.ID)
}

func isEOF(err error) bool {
	return errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF)
}

// openApart runs open on a goroutine of its own and waits for it. The
// lease store's client (the done record's read) calls deep, and the
// reader goroutine, once its stack had grown for that, would keep 8 KiB of
// stack while it waits for frames: the runtime shrinks a stack only when a
// quarter of it is enough. Apart, 10,000 idle devices cost about 40 MB
// less (VmHWM 231–254 → 209 MB with Redis).
func (s *Server) openApart(ctx context.Context, sess *session, reset bool) (lastSeq uint64, err error) {
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
		s.stats.takeovers.Add(1)
		s.log.Info("socket: session taken over by a newer one", "controller", sess.id,
			"old", old.conn.RemoteAddr().String(), "new", sess.conn.RemoteAddr().String())
		s.closeSessionLocked(old, egp.CodeTakenOver, "a newer session for this controller exists")
		// Closing the old session may have forgotten an idle controller.
		c = s.controllerLocked(sh, sess.id)
	}
	c.sess, sess.ctrl = sess, c
	if reset {
		// The seqs start again: no batch goes under a lease that a batch
		// taken before had (its done seq is the old session's).
		c.resets++
		s.releaseHeldLocked(c)
	}
	sh.mu.Unlock()
	// A session of this controller on another appliance is older: take it
	// over (onSession there). Only a speed-up: the store's session record
	// below takes it over even when this message is lost.
	if err := s.nc.Publish(coord.SessionSubject(sess.id), []byte(s.id)); err != nil {
		s.log.Warn("socket: announce session", "controller", sess.id, "err", err)
	}

	cctx, cancel := context.WithTimeout(ctx, s.cfg.TTL)
	defer cancel()
	continues := sess.persistent && !reset
	ls, err := s.store.Open(cctx, sess.id, continues)
	if err != nil {
		s.closeSession(sess, 0, "")
		return 0, fmt.Errorf("lease store unavailable, try again: %w", err)
	}
	sess.lease = ls
	if !continues {
		// Its seqs start a generation of their own: nothing to suppress,
		// and no done record of an earlier session to wait for.
		return 0, nil
	}
	done, err := s.welcome(ctx, sess)
	if err != nil {
		s.closeSession(sess, 0, "")
		return 0, err
	}
	return done, nil
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

// onSession takes over a local session when another socket announces a
// newer session of the same controller.
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
			// then needs the lease): release a held one now.
			s.releaseHeldLocked(c)
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

// readFrames reads DATA, PING and PONG frames until an error, or with
// apart until r has nothing buffered (errWait).
//
// The DATA frames of one read are queued under one hold of the shard
// lock, and their controller offered for dispatch once (flush): when
// nothing more is buffered, before anything that could block on the
// connection, and after a batch's worth.
func (sess *session) readFrames(r *egp.Reader, apart bool) error {
	s := sess.s
	var b burst
	// The clock is read once per read from the connection, not per
	// message: the messages of one read were received together. recv is
	// stale when the frame needed a read, or waited for queue space.
	var recv time.Time
	defer sess.flush()
	// Idleness is judged by the idle loop (idleLoop), not by read
	// deadlines: a deadline per frame costs a timer update and two clock
	// reads per message.
	for {
		if apart && r.Buffered() == 0 {
			return errWait
		}
		if sess.wover.Load() {
			// Nothing more is read before the device takes what it
			// was sent (PONGs of its PINGs, its ACKs).
			sess.flush()
			sess.waitWritten()
			recv = time.Time{} // what is buffered was received before the wait
		}
		stale := r.Buffered() < egp.HeaderSize
		if stale {
			sess.flush() // Next reads from the connection
		}
		h, err := r.Next()
		if err != nil {
			return err
		}
		if h.Type != egp.TypeData {
			sess.flush() // rare frames are read and answered unlocked
		}
		switch h.Type {
		case egp.TypeData:
			if h.Len < 8 {
				return &egp.Error{Code: egp.CodeProtocol, Reason: "DATA body shorter than its seq"}
			}
			size := int64(h.Len-8) + msgOverhead
			sess.lock()
			sess.waiting = true
			ok, waited := s.reserveLocked(sess, size)
			sess.waiting = false
			stale = stale || waited
			if !ok {
				return net.ErrClosed
			}
			sess.heard.Store(true) // the wait for queue space does not count
			buffered := r.Buffered()
			if buffered < int(h.Len) {
				stale = true
				sess.flush() // BodyInto reads from the connection
			}
			body := b.body(int(h.Len), buffered)
			if err := r.BodyInto(body); err != nil {
				sess.lock()
				s.unreserveLocked(sess.ctrl, size)
				return err
			}
			if stale || recv.IsZero() {
				recv = time.Now()
			}
			seq, payload, _ := egp.ParseData(body)
			if err := sess.follows(seq); err != nil {
				sess.lock()
				s.unreserveLocked(sess.ctrl, size)
				return err
			}
			sess.lock()
			sess.receiveLocked(b.msg(buffered/(egp.HeaderSize+int(h.Len))+1), seq, payload, size, recv)
			sess.heard.Store(true)
			if r.Buffered() == 0 {
				b.end()
			}
			if sess.pending >= s.cfg.Batch {
				sess.flush()
			}
		case egp.TypePing:
			b, err := r.Scratch(h)
			if err != nil {
				return err
			}
			sess.write(func(w []byte) []byte { return egp.AppendPong(w, b) })
			sess.heard.Store(true)
		case egp.TypePong:
			if _, err := r.Scratch(h); err != nil {
				return err
			}
			sess.heard.Store(true)
		default:
			return &egp.Error{Code: egp.CodeProtocol, Reason: h.Type.String() + " is not expected from a device after HELLO"}
		}
	}
}

// seqAhead is how far beyond the WELCOME's last_seq a persistent-seq
// session of a controller with a done record may start. It is not
// last_seq + 1, where such a device resends from: the record may trail
// the ACKs the device had (a deferred keep, a release the lease store
// failed), with ack mode none what it sent, and a lease store that lost
// or rolled back its records (the in-process one forgets them at a
// restart) may be far behind. Far enough to never refuse those, it still
// keeps a seq near 2^64 (a corrupt counter; a rogue where devices.auth is
// open) off the done record, where every later message of the device
// would be taken for a duplicate.
const seqAhead = 1 << 32

// follows checks a DATA's seq (reader goroutine only): the first of a
// session is at least 1 and, for a persistent-seq device whose
// controller has a done record, at most seqAhead past it; every later
// one is the previous + 1.
func (sess *session) follows(seq uint64) error {
	var why string
	switch {
	case sess.lastSeq != 0:
		if seq != sess.lastSeq+1 {
			why = fmt.Sprintf("DATA seq %d after %d: the seqs of a session follow each other", seq, sess.lastSeq)
		}
	case seq == 0:
		why = "DATA seq 0: seqs start at 1"
	case sess.persistent && sess.welcomed > 0 && seq > sess.welcomed && seq-sess.welcomed > seqAhead:
		why = fmt.Sprintf("DATA seq %d: a persistent-seq session starts at most %d past last_seq %d", seq, uint64(seqAhead), sess.welcomed)
	}
	if why != "" {
		return &egp.Error{Code: egp.CodeProtocol, Reason: why}
	}
	return nil
}

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

// sessionsLocked lists the open sessions (Server.mu held), to be visited
// under their shard locks after it is let go.
func (s *Server) sessionsLocked() []*session {
	sessions := make([]*session, 0, len(s.sessions))
	for sess := range s.sessions {
		sessions = append(sessions, sess)
	}
	return sessions
}

func (s *Server) sweepIdle() {
	s.mu.Lock()
	sessions := s.sessionsLocked()
	s.mu.Unlock()
	for _, sess := range sessions {
		sess.sh.mu.Lock()
		switch {
		case sess.lines || sess.tel || sess.closed: // no PING in their protocols
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

// readLines reads one message per line, its seq the line number, until
// an error, or with apart until r has nothing buffered (errWait).
func (sess *session) readLines(r *egp.LineReader, apart bool) error {
	s := sess.s
	defer sess.flush()
	for {
		if apart && r.Buffered() == 0 {
			return errWait
		}
		if sess.wover.Load() {
			sess.waitWritten() // no lock held: every line is flushed
		}
		line, err := r.ReadLine()
		if err != nil {
			return err
		}
		size := int64(len(line)) + msgOverhead
		sess.lock()
		if ok, _ := s.reserveLocked(sess, size); !ok {
			return net.ErrClosed
		}
		sess.line++ // a line's seq is its number in the connection
		sess.receiveLocked(new(msg), sess.line, line, size, time.Now())
		sess.flush()
	}
}

// receiveLocked queues a message whose slot is reserved, in m, received
// at recv; the reader's next flush offers its controller for dispatch.
func (sess *session) receiveLocked(m *msg, seq uint64, payload []byte, size int64, recv time.Time) {
	s := sess.s
	s.stats.received.Add(1)
	c := sess.ctrl
	sess.lastSeq = seq // follows checked it
	if sess.closed {
		s.unreserveLocked(c, size)
		return
	}
	*m = msg{seq: seq, payload: payload, recv: recv, sess: sess}
	c.q = append(c.q, m)
	sess.pending++
}

// lock takes the shard lock for the reader, unless it holds it.
func (sess *session) lock() {
	if !sess.locked {
		sess.sh.mu.Lock()
		sess.locked = true
	}
}

// flush offers the controller of the messages the reader queued since the
// last flush for dispatch, and gives up the reader's hold of the shard
// lock. A held lease of the pool of this process takes the next batch
// from here when no other controller waits (continueLocked): the reader
// hands it out itself instead of waking a dispatcher, as the outcome of a
// batch does.
func (sess *session) flush() {
	s := sess.s
	var next handOff
	ok := false
	if sess.pending > 0 {
		sess.pending = 0
		sess.lock()
		if c := sess.ctrl; !sess.closed && c.state == stIdle {
			if next, ok = s.continueLocked(c); !ok {
				s.makeRunnableLocked(c)
			}
		}
	}
	if sess.locked {
		sess.locked = false
		sess.sh.mu.Unlock()
	}
	if ok {
		s.continueHeld(next)
	}
}

// write appends to the session's output and wakes its writer.
func (sess *session) write(f func([]byte) []byte) {
	sess.wmu.Lock()
	if sess.wclose {
		sess.wmu.Unlock()
		return
	}
	sess.wbuf = f(sess.wbuf)
	sess.unlockAndWrite()
}

// unlockAndWrite releases wmu, held by the caller after appending to wbuf
// or setting wclose, and starts a writer unless one runs.
func (sess *session) unlockAndWrite() {
	if n := len(sess.wbuf) - sess.wcounted; n != 0 {
		sess.wcounted = len(sess.wbuf)
		sess.account(n)
	}
	start := !sess.writing
	sess.writing = true
	sess.wmu.Unlock()
	if start {
		go sess.writeLoop()
	}
}

// writeLoop writes what accumulated in wbuf, one write per round, until
// wbuf is empty; then it exits, so that an idle session has no writer
// goroutine (unlockAndWrite starts one again). Once wclose is set and everything
// is written, it closes the connection and stays the last writer.
func (sess *session) writeLoop() {
	for {
		sess.wmu.Lock()
		buf := sess.wbuf
		sess.wbuf, sess.spare = sess.spare[:0], nil
		sess.wcounted = 0 // buf stays counted until it is written
		closing := sess.wclose
		if len(buf) == 0 {
			if !closing {
				sess.writing = false // idle: no goroutine, no buffers kept
				sess.wbuf = nil
				sess.wmu.Unlock()
				return
			}
			sess.wmu.Unlock()
			sess.conn.Close()
			close(sess.written)
			return
		}
		sess.wmu.Unlock()
		// A device that does not read its ACKs for writeTimeout is
		// dropped: its unread ACKs would pile up here.
		deadline := time.Now().Add(writeTimeout)
		if closing {
			deadline = time.Now().Add(time.Second)
		}
		sess.conn.SetWriteDeadline(deadline)
		if _, err := sess.conn.Write(buf); err != nil {
			sess.s.closeSession(sess, 0, "")
			sess.wmu.Lock()
			sess.account(-len(buf) - sess.wcounted)
			sess.wbuf, sess.wcounted = nil, 0 // nothing more can be written
			sess.wmu.Unlock()
			continue // closing now: the next round closes
		}
		sess.wmu.Lock()
		sess.account(-len(buf))
		if cap(buf) <= 64<<10 {
			sess.spare = buf[:0]
		}
		sess.wmu.Unlock()
	}
}

// account adds n bytes (negative: written or dropped) to what is queued
// for writing to the device; wmu held.
func (sess *session) account(n int) {
	sess.wqueued += n
	sess.s.wqueued.Add(int64(n))
	over := sess.wqueued > writeBacklog
	if over != sess.wover.Load() {
		sess.wover.Store(over)
	}
	if !over && sess.drained != nil {
		close(sess.drained)
		sess.drained = nil
	}
}

// waitWritten waits, for the reader, while more than writeBacklog bytes
// are queued for the device. The writer takes them off as the device
// reads them, or drops them when a write fails (a device that reads
// nothing for writeTimeout), so the wait ends either way.
func (sess *session) waitWritten() {
	sess.wmu.Lock()
	if sess.wqueued <= writeBacklog {
		sess.wmu.Unlock()
		return
	}
	if sess.drained == nil {
		sess.drained = make(chan struct{})
	}
	ch := sess.drained
	sess.wmu.Unlock()
	sess.s.stats.writeWaits.Add(1)
	<-ch
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
