// Package embed runs the NATS server embedded in an appliance: it carries
// assignments and outcomes between sockets and parsers, stores parsed
// records in JetStream, and clusters appliances over routes.
package embed

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/url"
	"os"
	"strconv"
	"sync"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nuid"
)

// Config configures the embedded server.
type Config struct {
	// Name is the server name; in a cluster every appliance needs its own.
	// Empty means a random name.
	Name string
	// Listen is the client port address (host:port, port 0 for a random
	// one). Empty means no client listener: in-process clients only; a
	// clustered server then listens on a random loopback port, because
	// nats-server starts routing only after its client listener.
	Listen string
	// JetStream enables JetStream with its store in StoreDir.
	JetStream bool
	// StoreDir is the JetStream store directory, required with JetStream.
	StoreDir string
	// MaxStore is the JetStream file store limit in bytes. Zero means 1 GiB.
	MaxStore int64
	// MaxMemory is the JetStream memory store limit in bytes. Zero means 64 MiB.
	MaxMemory int64
	// Auth, when it names a user or nkeys, is required on the client port.
	// Without it clients log in without credentials (the appliance's
	// configuration allows that on loopback only, or behind TLS client
	// certificates). Either way a client gets the rights of Clients.
	// In-process clients (Connect, ConnectCoord) get credentials of their
	// own.
	Auth Auth
	// Clients is what client logins may do (see ClientRights). Zero means
	// nothing but their inboxes.
	Clients ClientRights
	// TLS, when set, is required on the client port; its ClientAuth says
	// whether client certificates are. In-process clients skip it.
	TLS *tls.Config
	// Cluster configures routes to other appliances.
	Cluster ClusterConfig
	// Logger receives the server's logs. Nil means discard.
	Logger *slog.Logger
	// ReadyTimeout bounds the wait for the server to accept connections.
	// Zero means 10s.
	ReadyTimeout time.Duration
}

// Auth lists who may use the client port.
type Auth struct {
	// User and Password (plain or a bcrypt hash, $2a$...) of a client.
	User, Password string
	// NKeys are public user nkeys (U...) allowed to connect.
	NKeys []string
}

func (a Auth) required() bool { return a.User != "" || len(a.NKeys) > 0 }

// ClusterConfig configures NATS routes.
type ClusterConfig struct {
	// Listen is the route listener address (port 0 for a random one). Empty
	// means not clustered.
	Listen string
	// Name is the cluster name. Empty means "edgegate".
	Name string
	// Advertise is the route address this server tells the others to reach
	// it at (behind NAT or a relay). Empty means its listen address.
	Advertise string
	// Peers are the host:port route addresses of the other appliances.
	// Explicit routes are redialed forever; listing the server's own address
	// is harmless (nats-server detects a route to itself).
	Peers []string
	// User and Password, when set, are required of incoming routes and
	// sent on outgoing ones.
	User, Password string
	// TLS, when set, is required on routes both ways, and both ends verify
	// each other's certificate: ClientCAs verifies incoming routes, and
	// RootCAs (ClientCAs when nil) outgoing ones.
	TLS *tls.Config
}

// DefaultConfig returns the defaults: in-process clients only, no
// JetStream, not clustered.
func DefaultConfig() Config {
	return Config{
		MaxStore:     1 << 30,
		MaxMemory:    64 << 20,
		Cluster:      ClusterConfig{Name: "edgegate"},
		ReadyTimeout: 10 * time.Second,
	}
}

// Server is a running embedded NATS server.
type Server struct {
	cfg      Config
	ns       *server.Server
	once     sync.Once
	internal string // password of the in-process user of the records account
	coord    string // password of the in-process user of the coordination account
}

// hostPort splits addr for nats-server, whose port 0 means the default
// port: a requested port 0 becomes -1 (random).
func hostPort(key, addr string) (string, int, error) {
	h, p, err := net.SplitHostPort(addr)
	if err != nil {
		return "", 0, fmt.Errorf("embed: %s %q: %w", key, addr, err)
	}
	port, err := strconv.Atoi(p)
	if err != nil || port < 0 || port > 65535 {
		return "", 0, fmt.Errorf("embed: %s %q: bad port", key, addr)
	}
	if port == 0 {
		port = server.RANDOM_PORT
	}
	if h == "" {
		h = "0.0.0.0"
	}
	return h, port, nil
}

// New starts the server and waits until it accepts connections.
func New(cfg Config) (*Server, error) {
	d := DefaultConfig()
	if cfg.MaxStore <= 0 {
		cfg.MaxStore = d.MaxStore
	}
	if cfg.MaxMemory <= 0 {
		cfg.MaxMemory = d.MaxMemory
	}
	if cfg.Cluster.Name == "" {
		cfg.Cluster.Name = d.Cluster.Name
	}
	if cfg.ReadyTimeout <= 0 {
		cfg.ReadyTimeout = d.ReadyTimeout
	}
	if cfg.Name == "" {
		cfg.Name = "edgegate-" + nuid.Next()
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	opts := &server.Options{
		ServerName: cfg.Name,
		NoSigs:     true, // nats-server's own handler would os.Exit
		NoLog:      false,
		MaxPayload: 8 << 20,
		// Shutdown is a lame duck: JetStream leaders move to other
		// appliances, clients are told to reconnect elsewhere and closed
		// over a few seconds (well inside systemd's TimeoutStopSec).
		LameDuckDuration:    5 * time.Second,
		LameDuckGracePeriod: time.Second,
		// No monitoring, leaf node, websocket or MQTT listeners.
		HTTPPort: 0,
	}
	switch {
	case cfg.Listen == "" && cfg.Cluster.Listen != "":
		// nats-server opens routes only after its client listener: a
		// clustered server without one would never route (it waits for the
		// client port forever). Listen on a random loopback port instead.
		opts.Host, opts.Port = "127.0.0.1", server.RANDOM_PORT
	case cfg.Listen == "":
		opts.DontListen = true
	default:
		h, p, err := hostPort("nats.listen", cfg.Listen)
		if err != nil {
			return nil, err
		}
		opts.Host, opts.Port = h, p
	}
	internal, coordPass, err := accounts(opts, cfg)
	if err != nil {
		return nil, err
	}
	if cfg.TLS != nil {
		opts.TLSConfig = cfg.TLS
		opts.TLSTimeout = 2
		opts.TLSVerify = cfg.TLS.ClientAuth == tls.RequireAndVerifyClientCert
	}
	if cfg.JetStream {
		if cfg.StoreDir == "" {
			return nil, errors.New("embed: JetStream needs a store directory")
		}
		if err := os.MkdirAll(cfg.StoreDir, 0o750); err != nil {
			return nil, fmt.Errorf("embed: jetstream store: %w", err)
		}
		opts.JetStream = true
		opts.StoreDir = cfg.StoreDir
		opts.JetStreamMaxStore = cfg.MaxStore
		opts.JetStreamMaxMemory = cfg.MaxMemory
		opts.JetStreamLimits = BatchLimits()
	}
	if cfg.Cluster.Listen != "" {
		h, p, err := hostPort("nats.cluster.listen", cfg.Cluster.Listen)
		if err != nil {
			return nil, err
		}
		opts.Cluster.Name = cfg.Cluster.Name
		opts.Cluster.Host, opts.Cluster.Port = h, p
		opts.Cluster.Advertise = cfg.Cluster.Advertise
		opts.Cluster.Username, opts.Cluster.Password = cfg.Cluster.User, cfg.Cluster.Password
		if cfg.Cluster.TLS != nil {
			if cfg.Cluster.TLS.ClientCAs == nil {
				// A route carries coordination: a certificate any public
				// CA signed must not make a server a peer.
				return nil, errors.New("embed: route TLS needs the CA bundle route certificates are signed by (nats.cluster.tls_ca): it never trusts the system roots")
			}
			// As nats-server configures route TLS: both ends verify.
			t := cfg.Cluster.TLS.Clone()
			t.ClientAuth = tls.RequireAndVerifyClientCert
			if t.RootCAs == nil {
				t.RootCAs = t.ClientCAs
			}
			opts.Cluster.TLSConfig, opts.Cluster.TLSTimeout = t, 2
		}
		for _, peer := range cfg.Cluster.Peers {
			if _, _, err := net.SplitHostPort(peer); err != nil {
				return nil, fmt.Errorf("embed: nats.cluster.peers %q: %w", peer, err)
			}
			u := &url.URL{Scheme: "nats", Host: peer}
			if cfg.Cluster.User != "" {
				u.User = url.UserPassword(cfg.Cluster.User, cfg.Cluster.Password)
			}
			opts.Routes = append(opts.Routes, u)
		}
	} else if len(cfg.Cluster.Peers) > 0 {
		return nil, errors.New("embed: nats.cluster.peers needs nats.cluster.listen")
	}

	ns, err := server.NewServer(opts)
	if err != nil {
		return nil, fmt.Errorf("embed: %w", err)
	}
	fatal := make(chan string, 1)
	ns.SetLoggerV2(&slogAdapter{l: cfg.Logger, fatal: fatal}, cfg.Logger.Enabled(context.Background(), slog.LevelDebug), false, false)
	go ns.Start()
	if err := waitReady(ns, cfg, fatal); err != nil {
		ns.Shutdown()
		ns.WaitForShutdown()
		return nil, err
	}
	return &Server{cfg: cfg, ns: ns, internal: internal, coord: coordPass}, nil
}

// NATS returns the underlying server.
func (s *Server) NATS() *server.Server { return s.ns }

// ClientURL returns nats://host:port of the client listener, "" when it
// has none.
func (s *Server) ClientURL() string {
	a, ok := s.ns.Addr().(*net.TCPAddr)
	if !ok {
		return ""
	}
	host := a.IP.String()
	if a.IP.IsUnspecified() {
		host = "127.0.0.1"
	}
	return "nats://" + net.JoinHostPort(host, strconv.Itoa(a.Port))
}

// ClusterAddr returns the route listener's host:port, "" when not
// clustered.
func (s *Server) ClusterAddr() string {
	a := s.ns.ClusterAddr()
	if a == nil {
		return ""
	}
	return a.String()
}

// Connect returns an in-process client connection to the records
// account, with every right there: the streams' publisher and whoever
// administers them.
func (s *Server) Connect(name string, opts ...nats.Option) (*nats.Conn, error) {
	// Clients may subscribe to _INBOX.>: the replies to this connection
	// (JetStream's acknowledgements of records) go to other subjects.
	return s.connect(name, internalUser, s.internal, append([]nats.Option{nats.CustomInboxPrefix("_EDGEGATE_INBOX")}, opts...))
}

// ConnectCoord returns an in-process client connection to the
// coordination account, which no client login reaches: for the sockets
// and parser pools.
func (s *Server) ConnectCoord(name string, opts ...nats.Option) (*nats.Conn, error) {
	return s.connect(name, coordUser, s.coord, opts)
}

func (s *Server) connect(name, user, password string, opts []nats.Option) (*nats.Conn, error) {
	opts = append([]nats.Option{
		nats.Name(name),
		nats.InProcessServer(s.ns),
		nats.MaxReconnects(-1),
		nats.UserInfo(user, password),
	}, opts...)
	nc, err := nats.Connect("", opts...)
	if err != nil {
		return nil, fmt.Errorf("embed: connect %s: %w", name, err)
	}
	return nc, nil
}

// Run blocks until ctx is done, then shuts the server down.
func (s *Server) Run(ctx context.Context) error {
	<-ctx.Done()
	s.Shutdown()
	return nil
}

// Shutdown stops the server in lame duck mode and waits for it: JetStream
// leadership moves to the other appliances of a cluster, and clients still
// connected are asked to reconnect elsewhere and closed within about 5s
// (at once when there are none). Safe to call more than once.
func (s *Server) Shutdown() {
	s.once.Do(func() {
		s.ns.LameDuckShutdown() // returns at once without a client listener
		s.ns.Shutdown()         // a no-op after a lame duck shutdown
		s.ns.WaitForShutdown()
	})
}

// slogAdapter logs nats-server's messages with slog (see natslog.go).
// Fatalf never exits; its line also goes to fatal.
type slogAdapter struct {
	l     *slog.Logger
	fatal chan string
}

func (a *slogAdapter) Noticef(format string, v ...any) { a.logf(slog.LevelInfo, false, format, v) }
func (a *slogAdapter) Warnf(format string, v ...any)   { a.logf(slog.LevelWarn, false, format, v) }
func (a *slogAdapter) Fatalf(format string, v ...any) {
	a.logf(slog.LevelError, true, format, v, "fatal", true)
}
func (a *slogAdapter) Errorf(format string, v ...any) { a.logf(slog.LevelError, false, format, v) }
func (a *slogAdapter) Debugf(format string, v ...any) { a.logf(slog.LevelDebug, false, format, v) }
func (a *slogAdapter) Tracef(format string, v ...any) {
	a.logf(slog.LevelDebug, false, format, v, "trace", true)
}

// BatchLimits are the JetStream limits of an appliance's server on batch
// publishing. Every parser worker of every appliance can have a batch of
// records open on the parsed stream's leader, of up to parser.batch (4096)
// records: the server's defaults (50 atomic batches per stream, 1,000
// records each) would refuse batches of a busy cluster
// (docs/design.md#output-and-fencing).
func BatchLimits() server.JSLimitOpts {
	return server.JSLimitOpts{MaxBatchInflightPerStream: 10_000, MaxBatchInflightTotal: 50_000, MaxBatchSize: 4096}
}
