// Package socket owns the device side of an appliance: the EGP/1 and lines
// listeners, one session per device connection, the per-controller queues
// of received messages, and the dispatcher that hands a controller's queued
// messages to a parser pool in batches under a lease, acknowledges them to
// the device when the outcome comes back, and detects dead parsers.
package socket

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"sync"
	"sync/atomic"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nuid"

	"github.com/edgegate/edgegate/coord"
	"github.com/edgegate/edgegate/egp"
	"github.com/edgegate/edgegate/lease"
)

// Config configures a socket server.
type Config struct {
	// Name is the appliance name: parser pools announced under the same name
	// are this appliance's and preferred. Empty means "edgegate".
	Name string
	// Listen is the EGP/1 listener address. Empty disables it.
	Listen string
	// LinesListen is the lines listener address. Empty disables it.
	LinesListen string
	// TeltonikaListen is the Teltonika listener address (teltonika.go).
	// Empty disables it. It shares the connection limits, HelloTimeout
	// (for the IMEI) and IdleTimeout with the other listeners, and needs
	// ACKs (NoAck false).
	TeltonikaListen string
	// TeltonikaIMEIs is the file of the IMEIs the Teltonika listener
	// accepts, one a line ("*": any), re-read when it changes. Empty
	// means none is accepted, unless TeltonikaOpen.
	TeltonikaIMEIs string
	// TeltonikaOpen accepts every IMEI (devices.auth: open); the file is
	// not read.
	TeltonikaOpen bool
	// TeltonikaTLS, when set, serves the Teltonika listener over TLS.
	TeltonikaTLS *tls.Config
	// NoAck turns acknowledgements off (ack mode none). False means an ACK
	// after the handler finished each message.
	NoAck bool
	// MaxFrame is the largest frame body (and line) in bytes. Zero means 1 MiB.
	MaxFrame int
	// HelloTimeout is how long a connection has to send HELLO. Zero means 5s.
	HelloTimeout time.Duration
	// MaxConnections is the most device connections at once. Zero means no
	// limit.
	MaxConnections int
	// Queue is the most messages queued per controller. Zero means 1024.
	Queue int
	// Memory is the most payload bytes queued over all controllers. Zero
	// means 256 MiB.
	Memory int64
	// Batch is the most messages of one controller per assignment. Zero
	// means 256.
	Batch int
	// BatchBytes is the most payload bytes of one assignment; a batch
	// takes its first message whatever its size. Zero means half the
	// largest message the NATS connection takes: an assignment to a pool
	// of another appliance travels as one NATS message, and one too large
	// for it could never be sent.
	BatchBytes int
	// TTL is the lease time. Zero means 5s.
	TTL time.Duration
	// CheckInterval is the period of the failure detection. Zero means 1s.
	CheckInterval time.Duration
	// Hold is how long a controller's lease may stay with its parser pool
	// after a batch was sent, for the batches that follow: they go under the
	// same lease, with no lease store call before them. A parser keeps the
	// lease when its batch is done only if the socket asks (more messages
	// queued, the controller's first batch, or its previous batch ended
	// less than Hold ago);
	// a lease held with nothing to send is released by the first failure
	// detection round after Hold, and at once when the device goes. Zero
	// means TTL/2; negative means leases are released after every batch.
	// Above TTL is an error.
	Hold time.Duration
	// Clock, shared with the parser pool of the same process, lets that
	// pool skip the confirming heartbeat (see coord.Clock). Nil means none.
	Clock *coord.Clock
	// Local is the parser pool of the same process, if any: the socket
	// hands it batches directly instead of over NATS (the same protocol,
	// without the encoding, the three NATS messages and their goroutine
	// hand-offs). It is found, like any pool, by its ready announcements.
	Local LocalPool
	// Dispatchers is the number of goroutines acquiring leases and sending
	// assignments. Zero means 16.
	Dispatchers int
	// PoolExpiry forgets a parser pool that did not announce itself for this
	// long. Zero means 3s.
	PoolExpiry time.Duration
	// Drain is how long Run waits at shutdown for batches in flight. Zero
	// means TTL + CheckInterval.
	Drain time.Duration
	// TokenFile is a file of HELLO tokens (see auth.go): every device must
	// present its controller's token, or gets ERROR auth. It is re-read when
	// it changes. Empty means tokens are not checked.
	TokenFile string
	// TLS, when set, serves both listeners over TLS (with client
	// certificates when it asks for them).
	TLS *tls.Config
	// CertIDs makes a device's TLS client certificate name the controller
	// it may open: the HELLO's controller ID must be the certificate's
	// subject common name or one of its DNS names, else ERROR auth. It
	// needs TLS that requires and verifies client certificates.
	CertIDs bool
	// MaxPerIP is the most connections from one source address. Zero means
	// no limit.
	MaxPerIP int
	// LeanAfter is the number of open connections beyond which new ones
	// are served lean (see waitLean). Zero means 1000; negative
	// means every connection.
	LeanAfter int
	// IdleTimeout closes an EGP/1 session that sent nothing for this long
	// (to one and a half times as long); after half of it (to all of it)
	// the gateway sends a PING, which a live device answers. Zero means
	// sessions never time out.
	IdleTimeout time.Duration
	// Logger receives the logs. Nil means discard.
	Logger *slog.Logger
}

// LocalPool is a parser pool in the same process (parser.Pool).
type LocalPool interface {
	// ID is the pool ID it announces itself under.
	ID() string
	// Offer assigns a batch: false is the answer busy; true means outcome
	// is called once when the batch is over.
	Offer(a *coord.Assign, outcome func(coord.Outcome)) bool
	// Free is how many workers are idle now.
	Free() int
}

// DefaultConfig returns the defaults.
func DefaultConfig() Config {
	return Config{
		Name:          "edgegate",
		Listen:        "0.0.0.0:7400",
		MaxFrame:      egp.DefaultMaxFrame,
		HelloTimeout:  5 * time.Second,
		Queue:         1024,
		Memory:        256 << 20,
		Batch:         256,
		TTL:           5 * time.Second,
		CheckInterval: time.Second,
		Dispatchers:   16,
		PoolExpiry:    3 * time.Second,
	}
}

func (c *Config) setDefaults() {
	d := DefaultConfig()
	if c.Name == "" {
		c.Name = d.Name
	}
	if c.MaxFrame <= 0 {
		c.MaxFrame = d.MaxFrame
	}
	if c.HelloTimeout <= 0 {
		c.HelloTimeout = d.HelloTimeout
	}
	if c.Queue <= 0 {
		c.Queue = d.Queue
	}
	if c.Memory <= 0 {
		c.Memory = d.Memory
	}
	if c.Batch <= 0 {
		c.Batch = d.Batch
	}
	if c.TTL <= 0 {
		c.TTL = d.TTL
	}
	if c.CheckInterval <= 0 {
		c.CheckInterval = d.CheckInterval
	}
	if c.Hold == 0 {
		c.Hold = c.TTL / 2
	}
	if c.LeanAfter == 0 {
		c.LeanAfter = leanAfter
	}
	if c.Dispatchers <= 0 {
		c.Dispatchers = d.Dispatchers
	}
	if c.PoolExpiry <= 0 {
		c.PoolExpiry = d.PoolExpiry
	}
	if c.Drain <= 0 {
		c.Drain = c.TTL + c.CheckInterval
	}
	if c.Logger == nil {
		c.Logger = slog.New(slog.DiscardHandler)
	}
}

// Server is the socket side of an appliance.
//
// Locks: a controller, its queue and dispatch state, and the sessions of
// its device are guarded by the lock of its shard (see shard). Server.mu
// guards the pool table, the run queue, the session and connection tables
// and the lease store's epoch, and is what dispatchers, and readers out of
// memory, wait under. Lock order: shard.mu, then Server.mu, then
// session.wmu; a shard lock is never taken under Server.mu.
type Server struct {
	cfg   Config
	nc    *nats.Conn
	store lease.Store
	log   *slog.Logger
	id    string
	inbox string // prefix of the reply subjects of assignments

	ln, lln net.Listener
	tel     teltonikaState // the Teltonika listener and its IMEIs

	shards [shards]shard

	mu        sync.Mutex
	runq      fifo
	runqLen   atomic.Int32 // runq.len(), for readers without mu
	runCond   *sync.Cond   // dispatchers wait for a runnable controller and a free pool
	memCond   *sync.Cond   // readers wait for global memory
	memWait   atomic.Int32 // readers waiting on memCond
	mem       atomic.Int64 // bytes queued or reserved over all controllers
	transit   atomic.Int64 // bytes reserved for DATA bodies still being read (reserveTransit)
	pools     map[string]*pool
	sessions  map[*session]struct{}
	greeting  map[net.Conn]struct{} // connections before their HELLO
	readBufs  *egp.BufferPool       // read buffers lent beyond manyConns
	conns     int
	stopping  atomic.Bool  // no new batches; written under mu
	inflight  atomic.Int64 // controllers assigned or running
	idle      *sync.Cond   // the drain waits for inflight to reach 0
	ready     bool
	paused    atomic.Int64 // no dispatch before then, leases may have been lost: nanoseconds after born
	born      time.Time    // New's time.Now, the origin of paused on the monotonic clock
	epoch     string       // the lease store's epoch (Redis run_id) last seen
	epochAt   time.Time    // when the last successful read of it began
	epochRead *epochRead   // the read under way, if any
	watch     lease.Subscription
	sessWG    sync.WaitGroup
	bg        background // store calls on goroutines of their own
	closeOnce sync.Once

	stats     stats
	metrics   *metrics
	lastCheck atomic.Int64 // unix nanos of the last failure detection round
	tokens    atomic.Pointer[tokens]
	perIP     map[string]int // connections by source address (guarded by mu)
	refusing  chan struct{}  // a slot per refused connection being answered (see refuse)
	wqueued   atomic.Int64   // bytes queued for writing to devices, over all sessions
}

// New validates cfg and binds the listeners; Run serves them.
func New(cfg Config, nc *nats.Conn, store lease.Store) (*Server, error) {
	cfg.setDefaults()
	if cfg.Hold > cfg.TTL {
		// A lock kept without a store call (a deferred keep) writes no
		// heartbeat: held longer than TTL, it would look stale to the
		// failure detection while its batches still run.
		return nil, fmt.Errorf("socket: hold %v is longer than the lease TTL %v", cfg.Hold, cfg.TTL)
	}
	if nc == nil || store == nil {
		return nil, errors.New("socket: a NATS connection and a lease store are required")
	}
	if cfg.BatchBytes <= 0 {
		cfg.BatchBytes = int(max(nc.MaxPayload(), minBatchBytes*2) / 2)
	}
	s := &Server{
		cfg:      cfg,
		nc:       nc,
		store:    store,
		born:     time.Now(),
		id:       nuid.Next(),
		pools:    make(map[string]*pool),
		sessions: make(map[*session]struct{}),
		greeting: make(map[net.Conn]struct{}),
		readBufs: egp.NewBufferPool(readBufSize),
		metrics:  newMetrics(),
		perIP:    make(map[string]int),
		refusing: make(chan struct{}, maxRefusing),
	}
	for i := range s.shards {
		s.shards[i].ctrls = make(map[string]*controller)
	}
	s.inbox = coord.SocketSubject(s.id)
	s.log = cfg.Logger.With("socket", s.id)
	for i := range s.shards {
		s.shards[i].log = s.log
	}
	s.runCond = sync.NewCond(&s.mu)
	s.memCond = sync.NewCond(&s.mu)
	s.idle = sync.NewCond(&s.mu)
	if cfg.CertIDs && (cfg.TLS == nil || cfg.TLS.ClientAuth != tls.RequireAndVerifyClientCert) {
		return nil, errors.New("socket: certificates naming controllers need TLS that requires and verifies client certificates")
	}
	if cfg.TokenFile != "" {
		if err := s.loadTokens(); err != nil {
			return nil, err
		}
	}
	var err error
	if cfg.Listen != "" {
		if s.ln, err = net.Listen("tcp", cfg.Listen); err != nil {
			return nil, fmt.Errorf("socket: listen devices.listen %s: %w", cfg.Listen, err)
		}
	}
	if cfg.LinesListen != "" {
		if s.lln, err = net.Listen("tcp", cfg.LinesListen); err != nil {
			if s.ln != nil {
				s.ln.Close()
			}
			return nil, fmt.Errorf("socket: listen devices.lines_listen %s: %w", cfg.LinesListen, err)
		}
	}
	if cfg.TLS != nil {
		if s.ln != nil {
			s.ln = tls.NewListener(s.ln, cfg.TLS)
		}
		if s.lln != nil {
			s.lln = tls.NewListener(s.lln, cfg.TLS)
		}
	}
	if err := s.listenTeltonika(); err != nil {
		s.closeListeners()
		return nil, err
	}
	return s, nil
}

// Addr returns the EGP/1 listener's address, nil when disabled.
func (s *Server) Addr() net.Addr {
	if s.ln == nil {
		return nil
	}
	return s.ln.Addr()
}

// LinesAddr returns the lines listener's address, nil when disabled.
func (s *Server) LinesAddr() net.Addr {
	if s.lln == nil {
		return nil
	}
	return s.lln.Addr()
}

// Ready reports whether Run is serving.
func (s *Server) Ready() bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.ready && !s.stopping.Load()
}

// Run serves devices until ctx is done. Then it stops accepting, lets the
// batches in flight finish (up to Drain) so their messages are acknowledged,
// and closes every session with ERROR shutting down.
func (s *Server) Run(ctx context.Context) error {
	defer s.closeListeners()
	sub, err := s.nc.Subscribe(s.inbox+".>", s.onReply)
	if err != nil {
		return fmt.Errorf("socket: subscribe replies: %w", err)
	}
	defer sub.Unsubscribe()
	sub.SetPendingLimits(-1, -1) // outcomes must never be dropped
	rsub, err := s.nc.Subscribe(coord.SubjectReady, s.onReady)
	if err != nil {
		return fmt.Errorf("socket: subscribe ready: %w", err)
	}
	defer rsub.Unsubscribe()
	stsub, err := s.nc.Subscribe(coord.SubjectStatus, s.onStatus)
	if err != nil {
		return fmt.Errorf("socket: subscribe status: %w", err)
	}
	defer stsub.Unsubscribe()
	ssub, err := s.nc.Subscribe(coord.SessionSubject("*"), s.onSession)
	if err != nil {
		return fmt.Errorf("socket: subscribe sessions: %w", err)
	}
	defer ssub.Unsubscribe()
	if n, ok := s.store.(lease.Notifier); ok {
		w, err := n.Notify(ctx, s.wake)
		if err != nil {
			s.log.Info("socket: lease store notifications unavailable; the check loop finds released and expired leases every lease.check_interval", "err", err)
		} else {
			s.mu.Lock()
			s.watch = w
			s.mu.Unlock()
			defer w.Close()
		}
	}
	if err := s.nc.Publish(coord.SubjectReadyQuery, nil); err != nil {
		return fmt.Errorf("socket: query parser pools: %w", err)
	}
	if err := s.nc.Flush(); err != nil {
		return fmt.Errorf("socket: subscribe: %w", err)
	}

	lctx, lcancel := context.WithCancel(ctx)
	defer lcancel()
	var wg sync.WaitGroup
	for i := 0; i < s.cfg.Dispatchers; i++ {
		wg.Go(func() { s.dispatchLoop(lctx) })
	}
	wg.Go(func() { s.checkLoop(lctx) })
	if s.cfg.IdleTimeout > 0 {
		wg.Go(func() { s.idleLoop(lctx) })
	}
	if s.ln != nil {
		wg.Go(func() { s.acceptLoop(lctx, s.ln, false) })
	}
	if s.cfg.TokenFile != "" {
		wg.Go(func() { s.watchFile(lctx.Done(), 2*time.Second, s.cfg.TokenFile, "token", s.loadTokens) })
	}
	if s.lln != nil {
		wg.Go(func() { s.acceptLoop(lctx, s.lln, true) })
	}
	s.runTeltonika(lctx, &wg)
	s.mu.Lock()
	s.ready = true
	s.mu.Unlock()
	s.log.Info("socket started", "listen", s.Addr(), "lines_listen", s.LinesAddr())

	<-ctx.Done()
	s.closeListeners()
	s.drain()
	lcancel()
	s.mu.Lock()
	s.runCond.Broadcast()
	s.mu.Unlock()
	wg.Wait()
	s.sessWG.Wait()
	s.bg.close()
	s.log.Info("socket stopped")
	return nil
}

// drain stops new batches, waits for the ones in flight and closes every
// session with ERROR shutting down (after their pending ACKs).
func (s *Server) drain() {
	deadline := time.Now().Add(s.cfg.Drain)
	s.mu.Lock()
	s.stopping.Store(true) // under mu: open registers no session after this
	s.runCond.Broadcast()
	t := time.AfterFunc(s.cfg.Drain, func() {
		s.mu.Lock()
		s.idle.Broadcast()
		s.mu.Unlock()
	})
	for s.inflight.Load() > 0 && time.Now().Before(deadline) {
		s.idle.Wait()
	}
	t.Stop()
	sessions := s.sessionsLocked()
	s.mu.Unlock()
	if n := s.inflight.Load(); n > 0 {
		s.log.Warn("socket: batches still in flight after the drain period; their devices resend them", "batches", n)
		s.eachShard(func(sh *shard) {
			for _, c := range sh.ctrls {
				if c.inFlight() {
					s.log.Warn("socket: in flight at shutdown", "controller", c.id, "state", c.state, "fence", c.tok.Fence,
						"batch", c.batchLen, "queued", len(c.q), "since", time.Since(c.sentAt).Round(time.Millisecond))
				}
			}
		})
	}
	s.eachShard(func(sh *shard) {
		for _, c := range sh.ctrls {
			s.releaseKeptLocked(c)
		}
	})
	for _, sess := range sessions {
		s.closeSession(sess, egp.CodeShuttingDown, "the appliance is stopping")
	}
	s.mu.Lock()
	for conn := range s.greeting {
		conn.SetReadDeadline(time.Now()) // ends the wait for HELLO now
	}
	s.mu.Unlock()
}

// CloseListeners lets go of the device listeners of a server that is not
// run after all (Run closes them on its own). Safe to call more than
// once.
func (s *Server) CloseListeners() { s.closeListeners() }

func (s *Server) closeListeners() {
	s.closeOnce.Do(func() {
		if s.ln != nil {
			s.ln.Close()
		}
		if s.lln != nil {
			s.lln.Close()
		}
		if s.tel.ln != nil {
			s.tel.ln.Close()
		}
	})
}

// endFlight counts a batch that is no longer in flight, waking the drain
// at the last.
func (s *Server) endFlight() {
	if s.inflight.Add(-1) == 0 && s.stopping.Load() {
		s.mu.Lock()
		s.idle.Broadcast()
		s.mu.Unlock()
	}
}
