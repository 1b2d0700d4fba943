// Package device is a Go implementation of the device side of EGP/1: it
// connects to an edgegate appliance, sends pipelined messages within a
// window, matches the in-order ACKs and, on connection loss, reconnects
// (to the next address) and resends every unacknowledged message.
package device

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"math"
	"math/rand/v2"
	"net"
	"sync"
	"sync/atomic"
	"time"

	"github.com/edgegate/edgegate/egp"
)

// Config configures a Client.
type Config struct {
	// Addrs are the gateway addresses (host:port); after a connection loss
	// the client goes on with the next one. At least one is required.
	Addrs []string
	// ID is the controller ID.
	ID string
	// Token is sent in HELLO. Nil means none.
	Token []byte
	// PersistentSeq sets HELLO flag bit1: the device keeps its seq across
	// sessions, so the gateway acknowledges duplicates of done seqs without
	// handling them again.
	PersistentSeq bool
	// ResetSeq sets HELLO flag bit0 in the first session: the gateway clears
	// the controller's done record.
	ResetSeq bool
	// Window is the most unacknowledged messages; Send blocks beyond it.
	// Zero means 256.
	Window int
	// StartSeq is the seq before the first message. Zero with PersistentSeq
	// means: go on after the WELCOME's last_seq.
	StartSeq uint64
	// DialTimeout bounds a connection attempt including HELLO/WELCOME. Zero
	// means 5s.
	DialTimeout time.Duration
	// Reconnect makes the client reconnect after a connection loss (and
	// after ERROR busy or shutting down) and resend what was not
	// acknowledged; Send and Flush do not fail then. False means the first
	// loss fails them.
	Reconnect bool
	// ReconnectWait is the first backoff between attempts, doubling to 2s
	// with jitter. Zero means 100ms.
	ReconnectWait time.Duration
	// KeepAlive detects a gateway that vanished without closing the
	// connection (power loss, a cable pulled): after KeepAlive with nothing
	// received the client sends PING, and after another KeepAlive without
	// an answer it takes the connection as lost (a gateway that holds back
	// the device's frames that long for backpressure looks the same; the
	// reconnect and resend are harmless). Zero means 15s; negative means
	// never.
	KeepAlive time.Duration
	// TLS, when set, dials with TLS.
	TLS *tls.Config
	// OnAck is called for every acknowledged message, in the order the
	// ACKs came (seq order, unless the gateway breaks the protocol: see
	// Stats.OrderErrors), from the client's reader goroutine. Nil means no
	// callback. The reader waits for it: it must not call Close or Flush,
	// nor a Send that may wait for room in the window, which only the
	// reader makes.
	OnAck func(Acked)
	// SocketTimes times each message at the device's socket too: when the
	// client's writer handed it to the kernel (Acked.Written) and when the
	// kernel received its ACK (Acked.Arrived: of the last bytes of the read
	// that brought it, never earlier than the ACK came), so that the
	// device's own waits for a CPU, to write and to read, do not count.
	// Only on 64-bit Linux over plain TCP; elsewhere, and when false,
	// Written is zero and Arrived the reader's time.
	SocketTimes bool
	// Logger receives the logs. Nil means discard.
	Logger *slog.Logger
}

// Acked is an acknowledged message, for Config.OnAck.
type Acked struct {
	Seq    uint64
	Status egp.Status
	// Sent is when Send took the message; Written when the client's writer
	// handed it to the kernel (zero without Config.SocketTimes); Arrived
	// when its ACK arrived (see Config.SocketTimes).
	Sent, Written, Arrived time.Time
}

// Stats counts what a client did.
type Stats struct {
	Sent, Acked, DeadLettered, Resent, Reconnects, OrderErrors uint64
	// Errors counts ERROR frames received, by code.
	Errors map[egp.Code]uint64
}

// ErrClosed is returned by calls on a closed client.
var ErrClosed = errors.New("device: client closed")

// ErrSeqExhausted is returned by Send when the next seq would be 2^64-1,
// which EGP/1 forbids: the device must reset its seq (a new generation).
var ErrSeqExhausted = errors.New("device: no seq left (the last is 2^64-2)")

// maxSeq is the highest seq EGP/1 allows.
const maxSeq = math.MaxUint64 - 1

// maxQueuedForPong is how much may wait to be written before a PING is
// left unanswered.
const maxQueuedForPong = 64 << 10

type pending struct {
	seq     uint64
	payload []byte
	sent    time.Time
}

// Client is a device connection with its unacknowledged messages.
type Client struct {
	cfg Config
	log *slog.Logger

	mu      sync.Mutex
	changed chan struct{} // closed and replaced on a state change while waiting is set
	waiting bool          // somebody waits on changed
	pend    []pending     // unacknowledged, in seq order; a window of pendArr
	pendArr []pending     // pend's backing array, reused (see roomLocked)
	seq     uint64        // last seq assigned
	welcome egp.Welcome
	sess    *conn // nil while reconnecting
	err     error // final: every call fails with it
	closed  bool
	addrIdx int
	stats   Stats
	unflush int // bytes queued but not written (ack mode none)
	inAck   int // ACKs whose OnAck callbacks are running
	// welcomeDone are unacknowledged messages a reconnect's WELCOME said
	// are done, for the loop to report (loop goroutine, under mu).
	welcomeDone []Acked
	loopDone    chan struct{}
	done        chan struct{} // closed by Close
}

// conn is one session's connection and its writer.
type conn struct {
	nc     net.Conn
	stamps *stampReader // reads nc when SocketTimes; nil otherwise
	// With stamps: whi is the highest seq in wbuf, and writes are the
	// writes of data not yet acknowledged, oldest first (under wmu).
	whi     uint64
	writes  []wrote
	noAck   bool // ack mode none: no write is ever acknowledged
	wmu     sync.Mutex
	wbuf    []byte
	wsig    chan struct{}
	written chan struct{}
}

// Dial connects, says HELLO and waits for WELCOME. An ERROR answer is
// returned as an *egp.Error.
func Dial(ctx context.Context, cfg Config) (*Client, error) {
	if len(cfg.Addrs) == 0 {
		return nil, errors.New("device: no gateway address")
	}
	if err := egp.ValidID(cfg.ID); err != nil {
		return nil, fmt.Errorf("device: %w", err)
	}
	if cfg.Window <= 0 {
		cfg.Window = 256
	}
	if cfg.DialTimeout <= 0 {
		cfg.DialTimeout = 5 * time.Second
	}
	if cfg.ReconnectWait <= 0 {
		cfg.ReconnectWait = 100 * time.Millisecond
	}
	if cfg.KeepAlive == 0 {
		cfg.KeepAlive = 15 * time.Second
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	c := &Client{
		cfg: cfg, log: cfg.Logger.With("controller", cfg.ID), changed: make(chan struct{}),
		seq: cfg.StartSeq, loopDone: make(chan struct{}), done: make(chan struct{}), stats: Stats{Errors: map[egp.Code]uint64{}},
	}
	s, r, err := c.connect(ctx, true)
	if err != nil {
		return nil, err
	}
	go c.loop(s, r)
	return c, nil
}

// connect dials the current address and runs HELLO/WELCOME.
func (c *Client) connect(ctx context.Context, first bool) (*conn, *egp.Reader, error) {
	c.mu.Lock()
	addr := c.cfg.Addrs[c.addrIdx%len(c.cfg.Addrs)]
	c.mu.Unlock()
	ctx, cancel := context.WithTimeout(ctx, c.cfg.DialTimeout)
	defer cancel()
	var nc net.Conn
	var err error
	d := &net.Dialer{}
	if c.cfg.TLS != nil {
		nc, err = (&tls.Dialer{NetDialer: d, Config: c.cfg.TLS}).DialContext(ctx, "tcp", addr)
	} else {
		nc, err = d.DialContext(ctx, "tcp", addr)
	}
	if err != nil {
		return nil, nil, fmt.Errorf("device: dial %s: %w", addr, err)
	}
	if dl, ok := ctx.Deadline(); ok {
		nc.SetDeadline(dl)
	}
	// Close cancels ctx: the wait for WELCOME, which can be long (a
	// persistent-seq session waits for its older lease), ends with it.
	stop := context.AfterFunc(ctx, func() { nc.Close() })
	defer stop()
	var flags byte
	if c.cfg.PersistentSeq {
		flags |= egp.FlagPersistentSeq
	}
	if c.cfg.ResetSeq && first {
		flags |= egp.FlagSeqReset
	}
	if _, err := nc.Write(egp.AppendHello(nil, egp.Hello{Version: egp.Version, Flags: flags, ID: c.cfg.ID, Token: c.cfg.Token})); err != nil {
		nc.Close()
		return nil, nil, fmt.Errorf("device: hello: %w", err)
	}
	var stamps *stampReader
	if c.cfg.SocketTimes {
		stamps = newStampReader(nc)
	}
	var src io.Reader = nc
	if stamps != nil {
		src = stamps
	}
	r := egp.NewReader(src, egp.DefaultMaxFrame, 4096)
	h, body, err := r.ReadFrame()
	if err != nil {
		nc.Close()
		return nil, nil, fmt.Errorf("device: waiting for WELCOME from %s: %w", addr, err)
	}
	switch h.Type {
	case egp.TypeWelcome:
	case egp.TypeError:
		nc.Close()
		code, reason, _ := egp.ParseError(body)
		c.countError(code)
		return nil, nil, &egp.Error{Code: code, Reason: reason}
	default:
		nc.Close()
		return nil, nil, fmt.Errorf("device: %s answered HELLO with %s", addr, h.Type)
	}
	w, err := egp.ParseWelcome(body)
	if err != nil {
		nc.Close()
		return nil, nil, err
	}
	if !stop() {
		return nil, nil, fmt.Errorf("device: waiting for WELCOME from %s: %w", addr, context.Cause(ctx))
	}
	nc.SetDeadline(time.Time{})
	s := &conn{nc: nc, stamps: stamps, noAck: w.AckMode == egp.AckNone, wsig: make(chan struct{}, 1), written: make(chan struct{})}

	c.mu.Lock()
	if c.closed {
		// Closed while this session was greeted: Close saw no session
		// to close, and nobody else would.
		c.mu.Unlock()
		nc.Close()
		return nil, nil, ErrClosed
	}
	// A later session's WELCOME may say more is done than this client
	// sent (another client under the same ID meanwhile): new messages
	// are numbered after it, or the gateway would take them for
	// duplicates and acknowledge them unhandled.
	if (first && c.cfg.StartSeq == 0 || !first) && c.cfg.PersistentSeq && c.seq < w.LastSeq {
		if w.LastSeq >= maxSeq {
			c.mu.Unlock()
			nc.Close()
			return nil, nil, fmt.Errorf("device: WELCOME from %s: last seq %d leaves no seq to send", addr, w.LastSeq)
		}
		c.seq = w.LastSeq
	}
	c.welcome = w
	if !first && c.cfg.PersistentSeq {
		// What the WELCOME says is done is acknowledged now, as the
		// gateway would acknowledge its resend, and not resent: resent
		// before messages numbered after a WELCOME beyond what this
		// client sent (above), it would leave a gap in the session's
		// seqs, which the gateway refuses.
		now := time.Now()
		for len(c.pend) > 0 && c.pend[0].seq <= w.LastSeq {
			c.welcomeDone = append(c.welcomeDone, Acked{Seq: c.pend[0].seq, Status: egp.StatusProcessed, Sent: c.pend[0].sent, Arrived: now})
			c.pend[0] = pending{}
			c.pend = c.pend[1:]
		}
		if len(c.welcomeDone) > 0 {
			c.reportingLocked(c.welcomeDone)
		}
	}
	// Resend what is not acknowledged, in order, with the original seqs.
	if !first {
		for _, p := range c.pend {
			s.wbuf = egp.AppendData(s.wbuf, p.seq, p.payload)
			s.whi = p.seq
		}
		c.stats.Resent += uint64(len(c.pend))
	}
	c.sess = s
	c.notifyLocked()
	c.mu.Unlock()
	go s.writeLoop(c)
	s.signal()
	return s, r, nil
}

// wrote is a write of data: the highest seq it carried, and when it was
// handed to the kernel.
type wrote struct {
	hi uint64
	at time.Time
}

// writtenLocked returns when seq was handed to the kernel, zero if not
// known; the writes of lower seqs are forgotten. seqs are asked in order.
func (s *conn) writtenLocked(seq uint64) time.Time {
	for len(s.writes) > 0 && s.writes[0].hi < seq {
		s.writes = s.writes[1:]
	}
	if len(s.writes) == 0 {
		return time.Time{}
	}
	return s.writes[0].at
}

func (s *conn) signal() {
	select {
	case s.wsig <- struct{}{}:
	default:
	}
}

func (s *conn) writeLoop(c *Client) {
	defer close(s.written)
	var buf []byte
	for range s.wsig {
		s.wmu.Lock()
		buf, s.wbuf = s.wbuf, buf[:0]
		if s.stamps != nil && !s.noAck && len(buf) > 0 && (len(s.writes) == 0 || s.writes[len(s.writes)-1].hi < s.whi) {
			// Recorded before the write: its ACK may be read before
			// Write returns.
			s.writes = append(s.writes, wrote{s.whi, time.Now()})
		}
		s.wmu.Unlock()
		if len(buf) == 0 {
			continue
		}
		if _, err := s.nc.Write(buf); err != nil {
			s.nc.Close() // the reader sees it and ends the session
			return
		}
		c.mu.Lock()
		c.unflush = max(0, c.unflush-len(buf))
		c.notifyLocked()
		c.mu.Unlock()
	}
}

func (s *conn) write(b func([]byte) []byte) {
	s.wmu.Lock()
	s.wbuf = b(s.wbuf)
	s.wmu.Unlock()
	s.signal()
}

// loop runs sessions: it reads until the connection fails, then reconnects
// when configured to.
func (c *Client) loop(s *conn, r *egp.Reader) {
	defer close(c.loopDone)
	backoff := c.cfg.ReconnectWait
	for {
		err := c.read(s, r)
		s.nc.Close()
		// Send writes to a session only under mu while it is c.sess: once
		// it is not, nobody signals wsig any more and it can be closed.
		c.mu.Lock()
		c.sess = nil
		closed := c.closed
		c.notifyLocked()
		c.mu.Unlock()
		close(s.wsig)
		<-s.written
		// With ack mode none what the session did not write is lost, not
		// resent: Flush must not wait for it.
		c.mu.Lock()
		c.unflush = 0
		c.notifyLocked()
		c.mu.Unlock()
		if closed {
			return
		}
		var pe *egp.Error
		retry := c.cfg.Reconnect && (!errors.As(err, &pe) || pe.Code == egp.CodeBusy || pe.Code == egp.CodeShuttingDown)
		if !retry {
			c.fail(fmt.Errorf("device: session ended: %w", err))
			return
		}
		c.log.Debug("device: connection lost, reconnecting", "err", err)
		for {
			c.mu.Lock()
			c.addrIdx++
			closed := c.closed
			c.mu.Unlock()
			if closed {
				return
			}
			ctx, cancel := c.closeContext()
			var err error
			s, r, err = c.connect(ctx, false)
			cancel()
			if err == nil {
				c.mu.Lock()
				c.stats.Reconnects++
				done := c.welcomeDone
				c.welcomeDone = nil
				c.mu.Unlock()
				if len(done) > 0 {
					c.callbacks(done)
				}
				backoff = c.cfg.ReconnectWait
				break
			}
			if errors.As(err, &pe) && pe.Code != egp.CodeBusy && pe.Code != egp.CodeShuttingDown {
				c.fail(err)
				return
			}
			c.log.Debug("device: reconnect failed", "err", err, "retry_in", backoff)
			if !c.sleep(backoff + rand.N(backoff/2+1)) {
				return
			}
			backoff = min(2*backoff, 2*time.Second)
		}
	}
}

// closeContext returns a context cancelled when the client is closed.
func (c *Client) closeContext() (context.Context, context.CancelFunc) {
	ctx, cancel := context.WithCancel(context.Background())
	go func() {
		select {
		case <-ctx.Done():
		case <-c.done:
			cancel()
		}
	}()
	return ctx, cancel
}

func (c *Client) sleep(d time.Duration) bool {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return true
	case <-c.done:
		return false
	}
}

// read handles frames from the gateway until the connection fails.
func (c *Client) read(s *conn, r *egp.Reader) error {
	var lastRead atomic.Int64 // unix ns of the last frame
	lastRead.Store(time.Now().UnixNano())
	if c.cfg.KeepAlive > 0 {
		stop := make(chan struct{})
		var wg sync.WaitGroup
		wg.Go(func() { s.keepAlive(c.cfg.KeepAlive, &lastRead, stop) })
		defer func() {
			close(stop)
			wg.Wait() // it writes to s: done before the session ends
		}()
	}
	var acks []egp.Ack // read, not yet matched
	var batch []Acked
	for {
		h, body, err := r.ReadFrame()
		if err != nil {
			if len(acks) > 0 {
				// What came before the end is matched: the bytes after
				// the last ACK were another frame's, cut short.
				c.acked(s, acks, batch[:0], time.Now())
			}
			return err
		}
		if h.Type == egp.TypeAck {
			a, err := egp.ParseAck(body)
			if err != nil {
				return err
			}
			acks = append(acks, a)
			if r.Buffered() >= egp.AckSize {
				continue // the next ACK is read already: matched with this one
			}
		}
		now := time.Now()
		lastRead.Store(now.UnixNano())
		if len(acks) > 0 {
			if s.stamps != nil && !s.stamps.last.IsZero() {
				now = s.stamps.last
			}
			batch = c.acked(s, acks, batch[:0], now)
			acks = acks[:0]
		}
		switch h.Type {
		case egp.TypeAck:
		case egp.TypePing:
			// Not answered while much is queued already (a gateway
			// that sends PINGs and reads nothing): its queue would grow
			// without bound; the queued bytes show the link lives anyway.
			data := append([]byte(nil), body...)
			s.write(func(b []byte) []byte {
				if len(b) >= maxQueuedForPong {
					return b
				}
				return egp.AppendPong(b, data)
			})
		case egp.TypePong:
		case egp.TypeError:
			code, reason, _ := egp.ParseError(body)
			c.countError(code)
			return &egp.Error{Code: code, Reason: reason}
		default:
			return &egp.Error{Code: egp.CodeProtocol, Reason: "unexpected " + h.Type.String() + " from the gateway"}
		}
	}
}

// acked drops the messages acks acknowledge from the unacknowledged ones,
// under one lock for all of them, and runs OnAck for each, the ACKs
// having arrived on s at arrived; batch is scratch space, returned for
// reuse.
func (c *Client) acked(s *conn, acks []egp.Ack, batch []Acked, arrived time.Time) []Acked {
	c.mu.Lock()
	for _, a := range acks {
		if len(c.pend) > 0 && c.pend[0].seq == a.Seq {
			batch = append(batch, Acked{Seq: a.Seq, Status: a.Status, Sent: c.pend[0].sent, Arrived: arrived})
			c.pend[0] = pending{}
			c.pend = c.pend[1:]
			continue
		}
		c.stats.OrderErrors++
		want := uint64(0)
		if len(c.pend) > 0 {
			want = c.pend[0].seq
		}
		c.log.Warn("device: ACK out of order", "seq", a.Seq, "expected", want)
		for i := range c.pend {
			if c.pend[i].seq == a.Seq {
				batch = append(batch, Acked{Seq: a.Seq, Status: a.Status, Sent: c.pend[i].sent, Arrived: arrived})
				c.pend = append(c.pend[:i], c.pend[i+1:]...)
				break
			}
		}
	}
	if s.stamps != nil {
		s.wmu.Lock()
		for i := range batch {
			batch[i].Written = s.writtenLocked(batch[i].Seq)
		}
		s.wmu.Unlock()
	}
	c.reportingLocked(batch)
	c.mu.Unlock()
	c.callbacks(batch)
	return batch
}

// reportingLocked counts batch as acknowledged, and its OnAck callbacks
// (callbacks, next) as running: Flush waits for them too.
func (c *Client) reportingLocked(batch []Acked) {
	for _, b := range batch {
		c.stats.Acked++
		if b.Status == egp.StatusDeadLettered {
			c.stats.DeadLettered++
		}
	}
	if c.cfg.OnAck != nil {
		c.inAck++
	}
	c.notifyLocked()
}

// callbacks runs OnAck for each of batch, after reportingLocked (on the
// loop goroutine: callbacks run in order there).
func (c *Client) callbacks(batch []Acked) {
	if c.cfg.OnAck == nil {
		return
	}
	for _, b := range batch {
		c.cfg.OnAck(b)
	}
	c.mu.Lock()
	c.inAck--
	c.notifyLocked()
	c.mu.Unlock()
}

// keepAlive sends PING when nothing was read for d and closes the
// connection when nothing was read for 2d, until stop is closed.
func (s *conn) keepAlive(d time.Duration, lastRead *atomic.Int64, stop <-chan struct{}) {
	t := time.NewTicker(d / 4)
	defer t.Stop()
	var pinged int64 // lastRead when the PING went out
	for {
		select {
		case <-stop:
			return
		case now := <-t.C:
			last := lastRead.Load()
			quiet := now.Sub(time.Unix(0, last))
			switch {
			case quiet >= 2*d:
				s.nc.Close() // the reader fails and the session ends
				return
			case quiet >= d && pinged != last:
				pinged = last
				s.write(func(b []byte) []byte { return egp.AppendPing(b, []byte("keepalive")) })
			}
		}
	}
}

func (c *Client) countError(code egp.Code) {
	c.mu.Lock()
	c.stats.Errors[code]++
	c.mu.Unlock()
}

// notifyLocked wakes everybody waiting for a change. Without waiters it
// does nothing (an ACK then costs no channel).
func (c *Client) notifyLocked() {
	if !c.waiting {
		return
	}
	close(c.changed)
	c.changed = make(chan struct{})
	c.waiting = false
}

func (c *Client) fail(err error) {
	c.mu.Lock()
	if c.err == nil {
		c.err = err
	}
	c.notifyLocked()
	c.mu.Unlock()
}

// waitLocked waits for a state change or ctx; it returns with mu held.
func (c *Client) waitLocked(ctx context.Context) error {
	w := c.changed
	c.waiting = true
	c.mu.Unlock()
	defer c.mu.Lock()
	select {
	case <-ctx.Done():
		return ctx.Err()
	case <-w:
		return nil
	}
}

func (c *Client) usableLocked() error {
	if c.closed {
		return ErrClosed
	}
	return c.err
}

// Send assigns the next seq to payload and sends it; it blocks while the
// window is full. The payload is copied.
func (c *Client) Send(ctx context.Context, payload []byte) (uint64, error) {
	return c.SendBatch(ctx, [][]byte{payload})
}

// SendBatch sends payloads in order, like Send for each, and returns the
// seq of the last. What the window lets go at once goes in one write: a
// device that has several messages ready costs itself and the gateway one
// system call for them, not one each. The payloads are copied. On an
// error it returns the seq of the last payload it sent, 0 if none.
func (c *Client) SendBatch(ctx context.Context, payloads [][]byte) (uint64, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	var last uint64
	for len(payloads) > 0 {
		for {
			if err := c.usableLocked(); err != nil {
				return last, err
			}
			if len(c.pend) < c.cfg.Window && (c.sess != nil || c.cfg.Reconnect) {
				break
			}
			if err := c.waitLocked(ctx); err != nil {
				return last, err
			}
		}
		chunk := payloads[:min(len(payloads), c.cfg.Window-len(c.pend))]
		if c.seq > maxSeq-uint64(len(chunk)) {
			return last, ErrSeqExhausted
		}
		payloads = payloads[len(chunk):]
		first := c.seq + 1
		c.seq += uint64(len(chunk))
		c.stats.Sent += uint64(len(chunk))
		noAck := c.welcome.AckMode == egp.AckNone
		if !noAck {
			now := time.Now()
			c.roomLocked(len(chunk))
			for i, p := range chunk {
				m := pending{seq: first + uint64(i), sent: now}
				if c.cfg.Reconnect {
					m.payload = append([]byte(nil), p...) // resent by the next session
				}
				c.pend = append(c.pend, m)
			}
		}
		if s := c.sess; s != nil {
			if noAck {
				for _, p := range chunk {
					c.unflush += 14 + len(p)
				}
			}
			s.write(func(b []byte) []byte { // under s.wmu
				for i, p := range chunk {
					b = egp.AppendData(b, first+uint64(i), p)
				}
				s.whi = c.seq
				return b
			})
		}
		last = c.seq
	}
	return last, nil
}

// roomLocked makes room for n more unacknowledged messages: ACKs take
// them off the front of pend and sends append at its end, so pend slides
// along pendArr; it moves back to the front when it reaches the end,
// instead of growing into a new array every few batches.
func (c *Client) roomLocked(n int) {
	if cap(c.pend)-len(c.pend) >= n {
		return
	}
	if need := len(c.pend) + n; need > cap(c.pendArr) {
		c.pendArr = make([]pending, max(need, 2*cap(c.pendArr), 16))
	}
	k := copy(c.pendArr[:cap(c.pendArr)], c.pend)
	clear(c.pendArr[k:cap(c.pendArr)])
	c.pend = c.pendArr[:k]
}

// Flush waits until every message sent is acknowledged (with ack mode
// none: written).
func (c *Client) Flush(ctx context.Context) error {
	c.mu.Lock()
	defer c.mu.Unlock()
	for len(c.pend) > 0 || c.unflush > 0 || c.inAck > 0 {
		if err := c.usableLocked(); err != nil {
			return err
		}
		if err := c.waitLocked(ctx); err != nil {
			return err
		}
	}
	return nil
}

// Unacked returns the number of messages sent and not acknowledged.
func (c *Client) Unacked() int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return len(c.pend)
}

// Welcome returns the WELCOME of the current (or last) session.
func (c *Client) Welcome() egp.Welcome {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.welcome
}

// Stats returns the client's counters.
func (c *Client) Stats() Stats {
	c.mu.Lock()
	defer c.mu.Unlock()
	st := c.stats
	st.Errors = make(map[egp.Code]uint64, len(c.stats.Errors))
	for k, v := range c.stats.Errors {
		st.Errors[k] = v
	}
	return st
}

// Close closes the connection; unacknowledged messages are forgotten and
// pending calls return ErrClosed. Safe to call more than once.
func (c *Client) Close() error {
	c.mu.Lock()
	if c.closed {
		c.mu.Unlock()
		<-c.loopDone
		return nil
	}
	c.closed = true
	close(c.done)
	s := c.sess
	c.notifyLocked()
	c.mu.Unlock()
	if s != nil {
		s.nc.Close()
	}
	<-c.loopDone
	return nil
}
