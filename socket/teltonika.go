package socket

import (
	"bufio"
	"bytes"
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"net"
	"os"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/edgegate/edgegate/coord"
	"github.com/edgegate/edgegate/teltonika"
)

// The Teltonika listener (Config.TeltonikaListen) serves GPS trackers in
// their own protocol (package teltonika): an IMEI handshake, then AVL
// packets. The controller is the IMEI. Each packet whose frame checks
// out (CRC, record counts, an AVL codec) is one message of the
// controller, numbered per connection like the lines listener's lines,
// whose payload is the packet's data field; it goes through the same
// queue, lease and parser pipeline as any message, and the packet's ACK,
// its record count, goes out once the message is done (ackLocked).
//
// Connections are accepted by the accept loop of the other listeners,
// under the same limits; teltonikaConn marks them, so that serveConn and
// rejectConn know which protocol they speak.

// teltonikaState is the Teltonika listener, its allowlist and counters.
type teltonikaState struct {
	ln    net.Listener
	imeis atomic.Pointer[imeiList]

	imeiRefused, badHandshakes, badPackets, skipped atomic.Uint64
}

// TeltonikaStats counts what the Teltonika listener refused.
type TeltonikaStats struct {
	IMEIRefused   uint64 // handshakes answered 0x00: the IMEI is not on the allowlist
	BadHandshakes uint64 // connections closed for a malformed or missing IMEI handshake
	BadPackets    uint64 // packets refused by the frame check (CRC, record counts, length): no ACK, nothing stored
	Skipped       uint64 // packets of codecs that carry no AVL records (GPRS command responses): no ACK, nothing stored
}

func (t *teltonikaState) stats() TeltonikaStats {
	return TeltonikaStats{
		IMEIRefused: t.imeiRefused.Load(), BadHandshakes: t.badHandshakes.Load(),
		BadPackets: t.badPackets.Load(), Skipped: t.skipped.Load(),
	}
}

// teltonikaListener marks the connections it accepts as Teltonika ones.
type teltonikaListener struct{ net.Listener }

func (l teltonikaListener) Accept() (net.Conn, error) {
	c, err := l.Listener.Accept()
	if err != nil {
		return nil, err
	}
	return teltonikaConn{c}, nil
}

// teltonikaConn is a connection of the Teltonika listener.
type teltonikaConn struct{ net.Conn }

func isTeltonika(c net.Conn) bool {
	_, ok := c.(teltonikaConn)
	return ok
}

// listenTeltonika binds the Teltonika listener and loads its allowlist
// (New).
func (s *Server) listenTeltonika() error {
	cfg := s.cfg
	if cfg.TeltonikaListen == "" {
		return nil
	}
	if cfg.NoAck {
		// A device keeps an unacknowledged packet and sends it again, and
		// no later one before it: it would send its first forever.
		return errors.New("socket: the Teltonika listener needs ACKs (devices.ack processed)")
	}
	if cfg.TeltonikaIMEIs != "" && !cfg.TeltonikaOpen {
		if err := s.loadIMEIs(); err != nil {
			return err
		}
	}
	ln, err := net.Listen("tcp", cfg.TeltonikaListen)
	if err != nil {
		return fmt.Errorf("socket: listen devices.teltonika_listen %s: %w", cfg.TeltonikaListen, err)
	}
	if cfg.TeltonikaTLS != nil {
		ln = tls.NewListener(ln, cfg.TeltonikaTLS)
	}
	s.tel.ln = teltonikaListener{ln}
	return nil
}

// TeltonikaAddr returns the Teltonika listener's address, nil when
// disabled.
func (s *Server) TeltonikaAddr() net.Addr {
	if s.tel.ln == nil {
		return nil
	}
	return s.tel.ln.Addr()
}

// runTeltonika starts the Teltonika listener's accept loop and the
// reloads of its allowlist on wg, until ctx is done (Run).
func (s *Server) runTeltonika(ctx context.Context, wg *sync.WaitGroup) {
	if s.tel.ln == nil {
		return
	}
	wg.Go(func() { s.acceptLoop(ctx, s.tel.ln, false) })
	switch {
	case s.cfg.TeltonikaOpen:
	case s.cfg.TeltonikaIMEIs != "":
		// Devices connected are not checked again: a removed IMEI is
		// refused at its next connection.
		wg.Go(func() { s.watchFile(ctx.Done(), 2*time.Second, s.cfg.TeltonikaIMEIs, "IMEI", s.loadIMEIs) })
	default:
		s.log.Warn("socket: devices.teltonika_imeis is not set: every Teltonika device is refused")
	}
	s.log.Info("socket: Teltonika listener started", "teltonika_listen", s.TeltonikaAddr())
}

// serveTeltonika runs one Teltonika connection: the IMEI, then packets.
func (s *Server) serveTeltonika(ctx context.Context, c *connection) {
	defer c.done()
	log := &connLog{base: s.log, conn: c.conn}
	sess, r := s.greetTeltonika(ctx, c.conn, log)
	if sess == nil {
		return
	}
	err := sess.readPackets(r, log)
	if isEOF(err) {
		// The device closed, perhaps right after its last packet: that
		// packet is still handled (and its ACK tried), so that the device's
		// resend finds it stored.
		s.linger(sess)
	}
	switch {
	case errors.Is(err, os.ErrDeadlineExceeded):
		s.stats.idleClosed.Add(1)
		log.get().Debug("socket: Teltonika device silent for devices.idle_timeout, closing")
	case errors.Is(err, teltonika.ErrPreamble), errors.Is(err, teltonika.ErrTooLarge):
		s.tel.badPackets.Add(1)
		log.get().Info("socket: Teltonika stream cannot be cut into packets, closing", "err", err)
	case err != nil && !isEOF(err) && !errors.Is(err, net.ErrClosed):
		log.get().Debug("socket: connection error", "err", err)
	}
	s.closeSession(sess, 0, "")
	<-sess.written
}

// greetTeltonika reads the IMEI on conn within HelloTimeout, answers it
// and opens its session; nil means the device was refused (and conn
// closed). The reader returned holds what the device sent after it.
func (s *Server) greetTeltonika(ctx context.Context, conn net.Conn, log *connLog) (*session, *bufio.Reader) {
	s.mu.Lock()
	s.greeting[conn] = struct{}{} // the drain ends the wait for the IMEI
	stopping := s.stopping.Load()
	s.mu.Unlock()
	conn.SetReadDeadline(time.Now().Add(s.cfg.HelloTimeout))
	if stopping {
		conn.SetReadDeadline(time.Now())
	}
	r := bufio.NewReaderSize(conn, readBufSize)
	imei, err := teltonika.ReadIMEI(r)
	s.mu.Lock()
	delete(s.greeting, conn)
	stopping = s.stopping.Load()
	s.mu.Unlock()
	if err != nil {
		if !stopping && !isEOF(err) {
			s.tel.badHandshakes.Add(1)
			if errors.Is(err, os.ErrDeadlineExceeded) {
				err = errors.New("no IMEI within devices.hello_timeout")
			}
			log.get().Info("socket: Teltonika device refused before its IMEI", "err", err)
		}
		conn.Close()
		return nil, nil
	}
	if !s.imeiAllowed(imei) {
		s.tel.imeiRefused.Add(1)
		log.get().Info("socket: Teltonika device refused: IMEI not on devices.teltonika_imeis", "imei", imei)
		conn.SetWriteDeadline(time.Now().Add(time.Second))
		conn.Write([]byte{teltonika.IMEIRejected})
		conn.Close()
		return nil, nil
	}
	if r.Buffered() == 0 && peerGone(conn) {
		// As for a HELLO (greet): a stale IMEI opens no session.
		log.get().Info("socket: Teltonika device gone before its IMEI was accepted, no session opened", "imei", imei)
		conn.Close()
		return nil, nil
	}
	conn.SetReadDeadline(time.Time{})
	sess := &session{s: s, sh: s.shardOf(imei), conn: conn, tel: true, id: imei, opened: time.Now(), written: make(chan struct{})}
	log.id = imei
	// A session of its own generation (not continued): the packets of a
	// connection are numbered from 1, and a resent one is recognised by
	// its records' IDs, not by a seq.
	if _, err := s.openLean(ctx, sess, false); err != nil {
		// Stopping, or the lease store unavailable: no answer, so that
		// the device, which takes 0x00 for a refusal, tries again soon.
		log.get().Warn("socket: Teltonika session refused, closing", "err", err)
		conn.Close()
		return nil, nil
	}
	// Not if a newer connection of the IMEI took the session over
	// meanwhile: write drops what comes after the close.
	sess.write(func(w []byte) []byte { return append(w, teltonika.IMEIAccepted) })
	log.get().Debug("socket: Teltonika session opened")
	return sess, r
}

// readPackets reads packets until an error: each AVL packet whose frame
// checks out is queued as a message, in wire order. A packet refused by
// the frame check is counted and skipped (no ACK: the device sends it
// again), logged once per connection; so is one of a codec that carries
// no records. The idle timeout is a read deadline, which keep-alives
// push.
func (sess *session) readPackets(r *bufio.Reader, log *connLog) error {
	s := sess.s
	defer sess.flush()
	maxLen := min(s.cfg.MaxFrame, teltonika.DefaultMaxPacket)
	var seq uint64
	warnedBad, warnedCodec := false, false
	for {
		if s.cfg.IdleTimeout > 0 {
			sess.conn.SetReadDeadline(time.Now().Add(s.cfg.IdleTimeout))
		}
		// A fresh buffer per packet: the payload stays queued until its
		// ACK.
		data, err := teltonika.ReadPacket(r, nil, maxLen)
		switch {
		case err == nil && data == nil:
			continue // keep-alives
		case errors.Is(err, teltonika.ErrCRC), errors.Is(err, teltonika.ErrCount), errors.Is(err, teltonika.ErrMalformed):
			s.tel.badPackets.Add(1)
			if !warnedBad {
				warnedBad = true
				log.get().Warn("socket: Teltonika packet refused, not acknowledged (the device sends it again); more on this connection are only counted", "err", err)
			}
			continue
		case err != nil:
			return err
		}
		if c := data[0]; c != teltonika.Codec8 && c != teltonika.Codec8E && c != teltonika.Codec16 {
			s.tel.skipped.Add(1)
			if !warnedCodec {
				warnedCodec = true
				log.get().Info("socket: Teltonika packet of a codec without AVL records skipped, not acknowledged", "codec", fmt.Sprintf("0x%02x", c))
			}
			continue
		}
		size := int64(len(data)) + msgOverhead
		sess.lock()
		if ok, _ := s.reserveLocked(sess, size); !ok {
			return net.ErrClosed
		}
		seq++
		sess.receiveLocked(new(msg), seq, data, size, time.Now())
		sess.flush()
	}
}

// proto is what the payloads of sess's messages are (coord.Assign.Proto).
func (sess *session) proto() byte {
	if sess.tel {
		return coord.ProtoTeltonika
	}
	return coord.ProtoRaw
}

// appendTeltonikaAck appends the ACK of m, a Teltonika packet: its record
// count, read from the packet (its frame check made sure both counts
// agree). A dead-lettered packet is acknowledged too: it passed the frame
// check, so the device sent what it meant to, and it fails the same way
// every time; without an ACK the device would send it forever and nothing
// after it (it sends its oldest records first). Its bytes are kept in
// the dead-letter stream.
func appendTeltonikaAck(b []byte, m *msg) []byte {
	return teltonika.AppendAck(b, int(m.payload[1]))
}

// imeiList is a parsed IMEI allowlist.
type imeiList struct {
	any  bool
	imei map[string]struct{}
}

// parseIMEIs reads an allowlist: one IMEI a line (1 to 17 digits, as the
// handshake accepts), or "*" for every IMEI; blank lines and lines
// starting with '#' are skipped. Errors name the line.
func parseIMEIs(b []byte) (*imeiList, error) {
	l := &imeiList{imei: map[string]struct{}{}}
	sc := bufio.NewScanner(bytes.NewReader(b))
	for n := 1; sc.Scan(); n++ {
		line := strings.TrimSpace(sc.Text())
		switch {
		case line == "" || strings.HasPrefix(line, "#"):
			continue
		case line == "*":
			l.any = true
			continue
		}
		if len(line) > teltonika.MaxIMEILen || strings.Trim(line, "0123456789") != "" {
			return nil, fmt.Errorf("line %d: want an IMEI (1 to %d digits) or *, got %q", n, teltonika.MaxIMEILen, line)
		}
		l.imei[line] = struct{}{}
	}
	if err := sc.Err(); err != nil {
		return nil, err
	}
	return l, nil
}

// imeiAllowed reports whether imei is on the allowlist; with none
// loaded, no IMEI is, unless the listener is open.
func (s *Server) imeiAllowed(imei string) bool {
	if s.cfg.TeltonikaOpen {
		return true
	}
	l := s.tel.imeis.Load()
	if l == nil {
		return false
	}
	_, ok := l.imei[imei]
	return ok || l.any
}

func (s *Server) loadIMEIs() error {
	b, err := os.ReadFile(s.cfg.TeltonikaIMEIs)
	if err != nil {
		return fmt.Errorf("socket: devices.teltonika_imeis: %w", err)
	}
	l, err := parseIMEIs(b)
	if err != nil {
		return fmt.Errorf("socket: devices.teltonika_imeis %s: %w", s.cfg.TeltonikaIMEIs, err)
	}
	s.tel.imeis.Store(l)
	return nil
}
