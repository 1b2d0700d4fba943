// Package appliance composes one edgegate appliance. Messages flow
//
//	device ──TCP EGP/1──▶ socket ──NATS assignment──▶ parser ──▶ handler ──▶ edgegate.parsed.<id>
//	   ▲                    │  ▲                         │
//	   └──────── ACK ───────┘  └──────── outcome ────────┘
//	                    lease store (acquire │ heartbeat, release)
//
// The socket queues each controller's messages, acquires the controller's
// lease and hands a batch to a parser pool (its own appliance's first); the
// parser runs the handler in order under the lease and reports back; the
// socket acknowledges the device. The embedded NATS server carries
// assignments, outcomes and output, and clusters appliances over routes.
package appliance

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"reflect"
	"sync"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/edgegate/edgegate/coord"
	"github.com/edgegate/edgegate/embed"
	"github.com/edgegate/edgegate/lease"
	"github.com/edgegate/edgegate/parser"
	"github.com/edgegate/edgegate/socket"
)

// Appliance is one running edgegate.
type Appliance struct {
	cfg     Config
	log     *slog.Logger
	clock   *coord.Clock // shared by the socket and the parser pool
	nats    *embed.Server
	store   lease.Store
	pool    *parser.Pool
	sock    *socket.Server
	http    *http.Server
	httpLn  net.Listener
	page    *statusPage // GET / and /status.json; nil without http.listen
	closers []func()

	ready     chan struct{}
	readyOnce sync.Once
}

// Run runs an appliance with cfg until ctx is done.
func Run(ctx context.Context, cfg Config) error {
	a, err := New(ctx, cfg)
	if err != nil {
		return err
	}
	return a.Run(ctx)
}

// New validates cfg, starts the embedded NATS server, the lease store and
// the parser pool's dependencies, and binds every listener, so that their
// addresses are known before Run. On error everything started is stopped.
func New(ctx context.Context, cfg Config) (a *Appliance, err error) {
	if err := cfg.ReadSecretFiles(); err != nil {
		return nil, err
	}
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	cfg = cfg.withDefaults()
	if cfg.LogLevel == nil {
		cfg.LogLevel = new(slog.LevelVar)
		cfg.LogLevel.Set(parseLevel(cfg.Log.Level))
	}
	log := cfg.Logger
	if log == nil {
		log = NewLogger(os.Stderr, cfg.LogLevel, cfg.Log.Format)
	}
	log = log.With("appliance", cfg.Name)
	a = &Appliance{cfg: cfg, log: log, ready: make(chan struct{}), clock: coord.NewClock()}
	started := a // a is nil again once an error is returned
	defer func() {
		if err != nil {
			started.close()
		}
	}()

	dir, err := dataDir(cfg.DataDir)
	if err != nil {
		return nil, err
	}
	natsTLS, err := serverTLS("nats", cfg.NATS.TLSCert, cfg.NATS.TLSKey, "tls_client_ca", cfg.NATS.TLSClientCA)
	if err != nil {
		return nil, err
	}
	routeTLS, err := serverTLS("nats.cluster", cfg.NATS.Cluster.TLSCert, cfg.NATS.Cluster.TLSKey, "tls_ca", cfg.NATS.Cluster.TLSCA)
	if err != nil {
		return nil, err
	}
	a.nats, err = embed.New(embed.Config{
		Name:      cfg.Name,
		Listen:    cfg.NATS.Listen,
		JetStream: cfg.NATS.JetStream,
		StoreDir:  dir, // nats-server keeps its data in <dir>/jetstream
		MaxStore:  cfg.NATS.MaxStore,
		MaxMemory: cfg.NATS.MaxMemory,
		Auth:      embed.Auth{User: cfg.NATS.User, Password: cfg.NATS.Password, NKeys: cfg.NATS.NKeys},
		Clients:   clientRights(),
		TLS:       natsTLS,
		Cluster: embed.ClusterConfig{
			Listen:    cfg.NATS.Cluster.Listen,
			Name:      cfg.NATS.Cluster.Name,
			Advertise: cfg.NATS.Cluster.Advertise,
			Peers:     cfg.NATS.Cluster.Peers,
			User:      cfg.NATS.Cluster.User,
			Password:  cfg.NATS.Cluster.Password,
			TLS:       routeTLS,
		},
		Logger: log.With("component", "nats"),
	})
	if err != nil {
		return nil, fmt.Errorf("appliance: nats: %w", err)
	}
	a.closers = append(a.closers, a.nats.Shutdown)

	switch {
	case cfg.LeaseStore != nil:
		a.store = cfg.LeaseStore
	case cfg.Lease.Redis != "":
		opts, err := lease.RedisOptions(cfg.Lease.Redis, cfg.Lease.RedisMode)
		if err != nil {
			return nil, fmt.Errorf("appliance: lease.redis: %w", err)
		}
		opts.ClientName = "edgegate-" + cfg.Name
		if err := redisTLS(opts.TLSConfig, cfg.Lease); err != nil {
			return nil, err
		}
		rs := lease.DialRedis(opts, cfg.Lease.RedisPrefix)
		rc := rs.Client()
		a.closers = append(a.closers, func() { rc.Close() })
		a.store = rs
		pctx, cancel := context.WithTimeout(ctx, 2*time.Second)
		if err := rc.Ping(pctx).Err(); err != nil {
			// Not fatal: devices are told to retry (ERROR busy) and intake
			// waits until Redis answers.
			log.Warn("appliance: Redis does not answer yet; intake waits for it", "redis", redactURL(cfg.Lease.Redis), "err", err)
		}
		cancel()
	default:
		a.store = lease.NewMemory()
	}

	if cfg.Parser.Workers > 0 {
		if err := a.newParser(ctx); err != nil {
			return nil, err
		}
	}
	if cfg.Devices.Listen != "" || cfg.Devices.LinesListen != "" || cfg.Devices.TeltonikaListen != "" {
		nc, err := a.connectCoord("socket")
		if err != nil {
			return nil, err
		}
		tlsCfg, err := serverTLS("devices", cfg.Devices.TLSCert, cfg.Devices.TLSKey, "tls_client_ca", cfg.Devices.TLSClientCA)
		if err != nil {
			return nil, err
		}
		auth, _ := cfg.Devices.auth() // checked by Validate
		if auth.warn != "" {
			log.Warn("appliance: " + auth.warn)
		} else if auth.info != "" {
			log.Info("appliance: " + auth.info)
		}
		var local socket.LocalPool
		if a.pool != nil {
			local = a.pool // batches for it skip NATS
		}
		a.sock, err = socket.New(socket.Config{
			Clock:          a.clock,
			Local:          local,
			TokenFile:      auth.tokens,
			CertIDs:        auth.certIDs,
			TLS:            tlsCfg,
			MaxPerIP:       cfg.Devices.MaxPerIP,
			LeanAfter:      cmp.Or(cfg.Devices.LeanAfter, -1),
			IdleTimeout:    cfg.Devices.IdleTimeout,
			Name:           cfg.Name,
			Listen:         auth.listen,
			LinesListen:    auth.linesListen,
			NoAck:          cfg.Devices.Ack == "none",
			MaxFrame:       cfg.Devices.MaxFrame,
			HelloTimeout:   cfg.Devices.HelloTimeout,
			MaxConnections: cfg.Devices.MaxConnections,
			Queue:          cfg.Devices.Queue,
			Memory:         cfg.Devices.Memory,
			Batch:          cfg.Parser.Batch,
			TTL:            cfg.Lease.TTL,
			CheckInterval:  cfg.Lease.CheckInterval,
			Logger:         log.With("component", "socket"),

			TeltonikaListen: cfg.Devices.TeltonikaListen,
			TeltonikaIMEIs:  cfg.Devices.TeltonikaIMEIs,
			TeltonikaOpen:   cfg.Devices.Auth == "open",
			TeltonikaTLS:    teltonikaTLS(cfg.Devices, tlsCfg),
		}, nc, a.store)
		if err != nil {
			return nil, fmt.Errorf("appliance: %w", err)
		}
		a.closers = append(a.closers, a.sock.CloseListeners)
	}
	if cfg.HTTP.Listen != "" {
		if a.httpLn, err = net.Listen("tcp", cfg.HTTP.Listen); err != nil {
			return nil, fmt.Errorf("appliance: listen http.listen %s: %w", cfg.HTTP.Listen, err)
		}
		if err := a.startStatusPage(); err != nil {
			return nil, err
		}
		a.http = &http.Server{Handler: a.mux(), ReadHeaderTimeout: 5 * time.Second}
	}
	return a, nil
}

// connect returns an in-process connection to the records account (the
// publisher's), connectCoord one to the coordination account (sockets'
// and pools'); see embed's accounts.
func (a *Appliance) connect(name string) (*nats.Conn, error) {
	return a.closeLater(a.nats.Connect(a.cfg.Name + "-" + name))
}

func (a *Appliance) connectCoord(name string) (*nats.Conn, error) {
	return a.closeLater(a.nats.ConnectCoord(a.cfg.Name + "-" + name))
}

func (a *Appliance) closeLater(nc *nats.Conn, err error) (*nats.Conn, error) {
	if err != nil {
		return nil, fmt.Errorf("appliance: nats connect: %w", err)
	}
	a.closers = append(a.closers, nc.Close)
	return nc, nil
}

func (a *Appliance) newParser(ctx context.Context) error {
	cfg := a.cfg
	nc, err := a.connectCoord("parser")
	if err != nil {
		return err
	}
	pubc, err := a.connect("publish")
	if err != nil {
		return err
	}
	pctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	// Streams are replicated over three appliances when the cluster has
	// three or more (surviving the loss of one); with fewer there is one
	// copy. nats.cluster.peers lists every appliance, this one included.
	replicas := 1
	if uniq(cfg.NATS.Cluster.Peers) >= 3 {
		replicas = 3
	}
	pub, err := parser.NewPublisher(pctx, pubc, parser.PublisherConfig{
		JetStream:    cfg.NATS.JetStream,
		Replicas:     replicas,
		MaxBytes:     cfg.NATS.MaxStore / 4 * 3,
		DeadMaxBytes: cfg.NATS.MaxStore / 8,
		Duplicates:   cfg.NATS.DuplicateWindow,
		Logger:       a.log.With("component", "publish"),
	})
	if err != nil {
		return fmt.Errorf("appliance: %w", err)
	}
	a.closers = append(a.closers, pub.Close)
	h := cfg.Handler
	if h == nil {
		switch cfg.Parser.Handler {
		case "discard":
			h = parser.Discard()
		case "exec":
			ex, err := parser.NewExec(parser.ExecConfig{
				Command:  cfg.Parser.Exec,
				Children: cfg.Parser.Workers,
				Env:      cfg.Parser.ExecEnv,
				Logger:   a.log.With("component", "exec"),
			}, pub.Output)
			if err != nil {
				return fmt.Errorf("appliance: %w", err)
			}
			a.closers = append(a.closers, func() { ex.Close() })
			h = ex
		default:
			h = pub.Handler(cfg.Parser.ValidateJSON)
		}
	}
	a.pool, err = parser.New(parser.Config{
		Clock:      a.clock,
		Name:       cfg.Name,
		Workers:    cfg.Parser.Workers,
		Handler:    h,
		DeadLetter: pub.Dead,
		Attempts:   cfg.Parser.Attempts,
		Timeout:    cfg.Parser.Timeout,
		TTL:        cfg.Lease.TTL,
		Heartbeat:  cfg.Lease.Heartbeat,
		Logger:     a.log.With("component", "parser"),
	}, nc, a.store)
	if err != nil {
		return fmt.Errorf("appliance: %w", err)
	}
	return nil
}

// Run runs the appliance until ctx is done, then stops it in reverse start
// order: stop accepting devices and finish the batches in flight, stop the
// parser pool, then NATS.
func (a *Appliance) Run(ctx context.Context) error {
	defer a.close()
	errc := make(chan error, 3)
	sockCtx, sockCancel := context.WithCancel(ctx)
	defer sockCancel()
	poolCtx, poolCancel := context.WithCancel(context.WithoutCancel(ctx))
	defer poolCancel()

	var poolDone, sockDone, httpDone chan struct{}
	if a.pool != nil {
		poolDone = make(chan struct{})
		go func() { defer close(poolDone); errc <- a.pool.Run(poolCtx) }()
	}
	if a.sock != nil {
		sockDone = make(chan struct{})
		go func() { defer close(sockDone); errc <- a.sock.Run(sockCtx) }()
	}
	if a.http != nil {
		httpDone = make(chan struct{})
		go func() {
			defer close(httpDone)
			if err := a.http.Serve(a.httpLn); err != nil && !errors.Is(err, http.ErrServerClosed) {
				errc <- fmt.Errorf("appliance: http: %w", err)
			}
		}()
	}
	a.readyOnce.Do(func() { close(a.ready) })
	a.notify("READY=1\nSTATUS=serving")
	wdCtx, wdCancel := context.WithCancel(ctx)
	defer wdCancel()
	go a.watchdogLoop(wdCtx)
	a.log.Info("appliance running", "devices", a.DeviceAddr(), "lines", a.LinesAddr(),
		"nats", a.nats.ClientURL(), "parser_workers", a.cfg.Parser.Workers, "lease_store", a.storeName())

	var err error
wait:
	for {
		select {
		case <-ctx.Done():
			break wait
		case err = <-errc:
			break wait
		case next := <-a.cfg.Reload:
			a.reload(next)
		}
	}
	a.log.Info("appliance stopping")
	a.notify("STOPPING=1\nSTATUS=stopping")
	wdCancel()
	sockCancel()
	if sockDone != nil {
		<-sockDone
	}
	poolCancel()
	if poolDone != nil {
		<-poolDone
	}
	if a.http != nil {
		sctx, cancel := context.WithTimeout(context.Background(), time.Second)
		a.http.Shutdown(sctx)
		cancel()
		<-httpDone
	}
	a.log.Info("appliance stopped")
	return err
}

func (a *Appliance) close() {
	for i := len(a.closers) - 1; i >= 0; i-- {
		a.closers[i]()
	}
	a.closers = nil
	if a.httpLn != nil && a.http == nil {
		a.httpLn.Close()
	}
}

func (a *Appliance) storeName() string {
	switch {
	case a.cfg.LeaseStore != nil:
		return "custom"
	case a.cfg.Lease.Redis != "":
		return "redis"
	}
	return "in-process"
}

// Ready is closed once Run serves.
func (a *Appliance) Ready() <-chan struct{} { return a.ready }

// DeviceAddr returns the EGP/1 listener's address, "" when disabled.
func (a *Appliance) DeviceAddr() string {
	if a.sock == nil || a.sock.Addr() == nil {
		return ""
	}
	return a.sock.Addr().String()
}

// LinesAddr returns the lines listener's address, "" when disabled.
func (a *Appliance) LinesAddr() string {
	if a.sock == nil || a.sock.LinesAddr() == nil {
		return ""
	}
	return a.sock.LinesAddr().String()
}

// HTTPAddr returns the HTTP listener's address, "" when disabled.
func (a *Appliance) HTTPAddr() string {
	if a.httpLn == nil {
		return ""
	}
	return a.httpLn.Addr().String()
}

// ClusterAddr returns the NATS route listener's address, "" when not
// clustered.
func (a *Appliance) ClusterAddr() string { return a.nats.ClusterAddr() }

// NATSURL returns the embedded NATS server's client URL, "" when it has no
// client listener.
func (a *Appliance) NATSURL() string { return a.nats.ClientURL() }

// Connect returns a new in-process connection to the embedded NATS
// server's records account, with every right on the streams (the
// coordination account is not reachable with it).
func (a *Appliance) Connect(name string) (*nats.Conn, error) { return a.nats.Connect(name) }

// SocketStats returns the socket counters (zero without a device listener).
func (a *Appliance) SocketStats() socket.Stats {
	if a.sock == nil {
		return socket.Stats{}
	}
	return a.sock.Stats()
}

// ParserStats returns the parser pool counters (zero without a pool).
func (a *Appliance) ParserStats() parser.StatsSnapshot {
	if a.pool == nil {
		return parser.StatsSnapshot{}
	}
	return a.pool.Stats()
}

// dataDir resolves and creates the data directory.
func dataDir(dir string) (string, error) {
	if dir != "" {
		if err := os.MkdirAll(dir, 0o750); err != nil {
			return "", fmt.Errorf("appliance: data_dir: %w", err)
		}
		if err := probeWritable(dir); err != nil {
			return "", fmt.Errorf("appliance: data_dir %s is not writable: %w", dir, err)
		}
		return dir, nil
	}
	if sd := os.Getenv("STATE_DIRECTORY"); sd != "" {
		return dataDir(filepath.SplitList(sd)[0])
	}
	if err := os.MkdirAll("/var/lib/edgegate", 0o750); err == nil && writable("/var/lib/edgegate") {
		return "/var/lib/edgegate", nil
	}
	home, err := os.UserHomeDir()
	if err != nil {
		return "", errors.New("appliance: data_dir: /var/lib/edgegate is not writable and there is no home directory; set data_dir")
	}
	return dataDir(filepath.Join(home, ".local", "state", "edgegate"))
}

func writable(dir string) bool { return probeWritable(dir) == nil }

func uniq(list []string) int {
	m := map[string]bool{}
	for _, s := range list {
		m[s] = true
	}
	return len(m)
}

// reload applies what can change while running (log.level) and names every
// other changed setting, which takes effect at the next restart.
func (a *Appliance) reload(next Config) {
	err := next.ReadSecretFiles() // as New did: compared as read
	if err == nil {
		err = next.Validate()
	}
	if err != nil {
		a.log.Error("appliance: reload refused, the running configuration stays", "err", err)
		return
	}
	next = next.withDefaults()
	cur := a.cfg
	if next.Log.Level != cur.Log.Level {
		a.cfg.LogLevel.Set(parseLevel(next.Log.Level))
		a.cfg.Log.Level = next.Log.Level
		a.log.Info("appliance: reloaded", "log.level", next.Log.Level)
	}
	if next.Log.Format != cur.Log.Format {
		a.log.Warn("appliance: reload: changed settings take effect at the next restart", "section", "log.format")
	}
	// Compare the rest section by section, with the live parts made equal.
	next.Log, next.Logger, next.Handler, next.LeaseStore, next.LogLevel, next.Reload =
		cur.Log, cur.Logger, cur.Handler, cur.LeaseStore, cur.LogLevel, cur.Reload
	for _, d := range []struct {
		key      string
		old, new any
	}{
		{"name", cur.Name, next.Name}, {"data_dir", cur.DataDir, next.DataDir},
		{"devices", cur.Devices, next.Devices}, {"nats", cur.NATS, next.NATS},
		{"lease", cur.Lease, next.Lease}, {"parser", cur.Parser, next.Parser}, {"http", cur.HTTP, next.HTTP},
	} {
		if !reflect.DeepEqual(d.old, d.new) {
			a.log.Warn("appliance: reload: changed settings take effect at the next restart", "section", d.key)
		}
	}
}
