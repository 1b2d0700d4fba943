package appliance

import (
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/nats-io/nkeys"

	"github.com/edgegate/edgegate/lease"
	"github.com/edgegate/edgegate/parser"
)

// Config is the whole configuration of an appliance: the configuration file,
// flags and environment of `edgegate run` fill it (see cmd/edgegate), and Go
// users fill it directly. Field comments say what the zero value means;
// DefaultConfig lists every default.
type Config struct {
	// Name is the appliance name, shown in status and logs. Empty means the
	// host name.
	Name string
	// DataDir holds the JetStream store and other state. Empty means
	// $STATE_DIRECTORY (set by systemd's StateDirectory=), else
	// /var/lib/edgegate when it is writable, else ~/.local/state/edgegate.
	DataDir string

	Devices DevicesConfig
	NATS    NATSConfig
	Lease   LeaseConfig
	Parser  ParserConfig
	HTTP    HTTPConfig
	Log     LogConfig

	// Logger receives the logs. Nil means a text logger on stderr at
	// Log.Level.
	Logger *slog.Logger `yaml:"-"`
	// Handler, when set, is the parse logic and Parser.Handler is ignored:
	// for users who build their own binary.
	Handler parser.Handler `yaml:"-"`
	// LeaseStore, when set, replaces the store chosen by Lease.Redis (for
	// tests and custom stores). Appliances given the same store share leases.
	LeaseStore lease.Store `yaml:"-"`
	// LogLevel, when set, is the level Logger obeys: a reload sets it to
	// Log.Level. Nil means the appliance's own logger owns its level.
	LogLevel *slog.LevelVar `yaml:"-"`
	// Reload, when set, delivers new configurations (e.g. on SIGHUP): what
	// can change live is applied (log.level), every other changed setting
	// is logged as taking effect at the next restart.
	Reload <-chan Config `yaml:"-"`
	// Build labels the edgegate_build_info metric (the command sets it from
	// its build flags). Empty fields come from the Go build information.
	Build BuildInfo `yaml:"-"`
}

// DevicesConfig configures the device listeners.
type DevicesConfig struct {
	// Listen is the EGP/1 listener address. Empty disables it.
	Listen string
	// LinesListen is the address of the line-based listener. Empty disables it.
	LinesListen string
	// TeltonikaListen is the address of the Teltonika listener (GPS
	// trackers; docs/teltonika.md), customarily port 5027. Empty
	// disables it.
	TeltonikaListen string
	// TeltonikaIMEIs is a file of the IMEIs the Teltonika listener
	// accepts, one a line ("*": any IMEI), re-read when it changes; a
	// device not listed is answered 0x00. Required with TeltonikaListen
	// unless Auth is "open", which accepts any IMEI.
	TeltonikaIMEIs string
	// TeltonikaTLS serves the Teltonika listener over TLS with TLSCert
	// and TLSKey (and TLSClientCA). False means plain TCP, whatever the
	// other listeners do.
	TeltonikaTLS bool
	// Ack is "processed" (ACK after the handler finished a message) or "none"
	// (no ACKs). Empty means "processed".
	Ack string
	// MaxFrame is the largest frame body in bytes. Zero means 1 MiB.
	MaxFrame int
	// HelloTimeout is how long a new connection has to send HELLO. Zero means 5s.
	HelloTimeout time.Duration
	// MaxConnections is the most device connections at once; a connection
	// beyond it gets ERROR busy. Zero means no limit. The default, 20,000,
	// is twice the 10,000 devices the appliance is benchmarked with: a
	// flood of connections cannot take all the memory.
	MaxConnections int
	// Queue is the most messages queued per controller before its device is
	// backpressured. Zero means 1024.
	Queue int
	// Memory is the most payload bytes queued over all controllers before
	// devices are backpressured. Zero means 256 MiB.
	Memory int64
	// MaxPerIP is the most connections from one source address. Zero means
	// no limit. The default, 256, lets a site's devices share a NAT
	// address, and keeps one host to about 1 % of MaxConnections' default.
	MaxPerIP int
	// LeanAfter is the number of open device connections (both listeners)
	// beyond which new ones are served lean: while its device is silent a
	// lean connection holds no read buffer and waits on a fresh goroutine
	// of 2 KiB, for one more read call and a goroutine start each time the
	// device's stream runs dry. Zero means every connection is lean.
	LeanAfter int
	// IdleTimeout closes an EGP/1 session that sent nothing for this long
	// (a PING at half of it keeps live devices). Zero means never.
	IdleTimeout time.Duration
	// Auth is how devices are authenticated before they may open, take
	// over or reset a controller's session:
	//   - "token": the HELLO carries the controller's token from Tokens,
	//     and with TLSClientCA the device's certificate also names the
	//     controller (its subject CN or a DNS name). Without Tokens, the
	//     certificate alone; with neither, nothing can authenticate a
	//     device, so the device listeners serve this machine only: a
	//     wildcard address (0.0.0.0, ::) is bound on loopback, and any
	//     other address that is not loopback is a configuration error.
	//   - "tls": the certificate alone (TLSClientCA is required).
	//   - "open": none, for labs: any host that reaches a device listener
	//     can open, take over or reset any controller's session.
	// Empty means "token".
	Auth string
	// Tokens is a file of HELLO tokens: lines "<controller> <token>", where
	// <controller> may end in '*' or be '*', and a token may be written
	// sha256:<hex> (`edgegate devices add` writes them so). It is re-read
	// when it changes. Empty means none (see Auth).
	Tokens string
	// TLSCert and TLSKey are the PEM files of the device listeners' TLS
	// certificate. Empty means plain TCP.
	TLSCert, TLSKey string
	// TLSClientCA, with TLS, requires device certificates signed by this
	// PEM CA bundle. Empty means device certificates are not asked for.
	TLSClientCA string
}

// NATSConfig configures the embedded NATS server.
type NATSConfig struct {
	// Listen is the client port address. Empty means in-process clients
	// only. A client logs in to read the streams and ask for status, never
	// to take part in coordination; on an address other than loopback the
	// port needs User and Password, NKeys, or TLS with TLSClientCA, and on
	// loopback without them a client needs no credentials.
	Listen string
	// JetStream enables JetStream: parsed records and dead letters are stored
	// in streams. When false they are only published.
	JetStream bool
	// MaxStore is the JetStream file store limit in bytes. Zero means 1 GiB.
	MaxStore int64
	// MaxMemory is the JetStream memory store limit in bytes. Zero means 64 MiB.
	MaxMemory int64
	// DuplicateWindow is how long the streams remember a record's message
	// ID: a message resent within it is found stored and compared, not
	// stored twice. Every ID in it is held in memory (about 110 B each,
	// on every replica), so at a sustained rate R it costs some
	// R × DuplicateWindow × 110 B. Zero means 2 minutes.
	DuplicateWindow time.Duration
	// User and Password, when set, are required of clients on the client
	// port (tail, status, consumers). Password may be a bcrypt hash
	// ($2a$...). In-process clients use their own credentials.
	User, Password string
	// PasswordFile holds Password, when Password is not set: see
	// ReadSecretFiles.
	PasswordFile string
	// NKeys are public user nkeys (U...) allowed on the client port; a
	// client proves its key by signing the server's nonce.
	NKeys []string
	// TLSCert and TLSKey are the PEM files of the client port's TLS
	// certificate. Empty means plain TCP.
	TLSCert, TLSKey string
	// TLSClientCA, with TLS, requires client certificates signed by this
	// PEM CA bundle.
	TLSClientCA string
	Cluster     ClusterConfig
}

// ClusterConfig configures NATS routes to the other appliances.
type ClusterConfig struct {
	// Listen is the route listener address. Empty means no clustering.
	Listen string
	// Name is the cluster name; all appliances of a cluster use the same one.
	// Empty means "edgegate".
	Name string
	// Advertise is the host:port the other appliances reach this one's
	// route listener at, when that is not Listen (NAT, a relay). Empty
	// means Listen.
	Advertise string
	// Peers are the host:port route addresses of every appliance of the
	// cluster; listing this appliance too is harmless, so every appliance
	// can have the same list. JetStream streams get 3 replicas when the
	// list has 3 or more addresses, else 1.
	Peers []string
	// User and Password, when set, are required of routes and sent by this
	// appliance's routes: the same on every appliance. Routes carry
	// coordination: Peers, or a Listen address other than loopback, need
	// them or TLS with TLSCA.
	User, Password string
	// PasswordFile holds Password, when Password is not set: see
	// ReadSecretFiles.
	PasswordFile string
	// TLSCert and TLSKey are this appliance's PEM route certificate, used
	// both ways; TLSCA is the PEM CA bundle route certificates must be
	// signed by, required with them (routes never trust the system roots).
	// Routes with TLS verify each other, so every appliance needs TLS when
	// one has it.
	TLSCert, TLSKey, TLSCA string
}

// LeaseConfig configures the per-controller leases.
type LeaseConfig struct {
	// Redis is the Redis URL (redis://[user:password@]host:6379/0, rediss://
	// for TLS; go-redis URL options such as ?dial_timeout=2s apply). Empty
	// means the in-process store, which serves one appliance only.
	Redis string
	// RedisFile holds Redis, when Redis is not set: the URL may carry a
	// password (see ReadSecretFiles).
	RedisFile string
	// RedisMode is standalone, sentinel (the URL names the sentinels:
	// redis://sentinel1:26379?master_name=mymaster&addr=sentinel2:26379) or
	// cluster (redis://node1:6379?addr=node2:6379). Empty means standalone.
	RedisMode string
	// RedisPrefix starts every Redis key. Empty means "edgegate".
	RedisPrefix string
	// TTL is the lease time: a parser that did not heartbeat for TTL is taken
	// as dead. Zero means 5s.
	TTL time.Duration
	// Heartbeat is how often a parser extends its lease. Zero means 1s.
	Heartbeat time.Duration
	// CheckInterval is how often a socket checks the leases it waits on.
	// Zero means 1s.
	CheckInterval time.Duration
	// RedisTLSCA is a PEM CA bundle that Redis's certificate must be
	// signed by (a rediss:// URL; empty: the system roots).
	RedisTLSCA string
	// RedisTLSCert and RedisTLSKey are a PEM client certificate for Redis
	// servers that require one (tls-auth-clients).
	RedisTLSCert, RedisTLSKey string
}

// ParserConfig configures the parser pool of this appliance.
type ParserConfig struct {
	// Workers is the number of parser workers; 0 means no parser pool on this
	// appliance (sockets only).
	Workers int
	// Batch is the most messages of one controller handed over under one
	// lease. Zero means 64.
	Batch int
	// Handler is "publish", "exec" or "discard". Empty means "publish".
	Handler string
	// Exec is the command and arguments of the exec handler.
	Exec []string
	// ExecEnv is what the exec handler's children get of environment
	// beyond the basics (PATH, HOME, LANG and the like): "NAME=value", or
	// "NAME" for the appliance's own value. Nothing else of the
	// appliance's environment reaches them (see parser.ExecConfig.Env).
	ExecEnv []string
	// Timeout is how long the handler has for one attempt at a message; an
	// attempt that runs out is a transient error (retried), and an exec
	// child is killed and restarted. Zero means 30s.
	Timeout time.Duration
	// Attempts is how often a message the handler calls bad is tried before
	// it is dead-lettered. Zero means 3.
	Attempts int
	// ValidateJSON makes the publish handler refuse (dead-letter) payloads
	// that are not valid JSON.
	ValidateJSON bool
}

// HTTPConfig configures the HTTP endpoint (/metrics, /healthz, /readyz).
type HTTPConfig struct {
	// Listen is the HTTP address. Empty disables it.
	Listen string
	// Pprof serves Go's profiles under /debug/pprof/ (off by default: a
	// profile shows internals, and taking one costs CPU).
	Pprof bool
}

// LogConfig configures logging.
type LogConfig struct {
	// Level is debug, info, warn or error. Empty means info.
	Level string
	// Format is text (key=value) or json. Empty means text.
	Format string
}

// DefaultConfig returns the defaults (docs/configuration.md, "Every
// setting").
func DefaultConfig() Config {
	return Config{
		Name:    "",
		DataDir: "",
		Devices: DevicesConfig{
			Listen:         "0.0.0.0:7400",
			LinesListen:    "",
			Ack:            "processed",
			MaxFrame:       1 << 20,
			HelloTimeout:   5 * time.Second,
			MaxConnections: 20000,
			Queue:          1024,
			Memory:         256 << 20,
			MaxPerIP:       256,
			LeanAfter:      1000,
			IdleTimeout:    5 * time.Minute,
			Auth:           "token",
		},
		NATS: NATSConfig{
			Listen:    "127.0.0.1:4222",
			JetStream: true,
			MaxStore:  1 << 30,
			MaxMemory: 64 << 20,
			Cluster:   ClusterConfig{Name: "edgegate"},

			DuplicateWindow: 2 * time.Minute,
		},
		Lease: LeaseConfig{
			RedisMode:     "standalone",
			RedisPrefix:   "edgegate",
			TTL:           5 * time.Second,
			Heartbeat:     time.Second,
			CheckInterval: time.Second,
		},
		Parser: ParserConfig{
			Workers:  16,
			Batch:    256,
			Handler:  "publish",
			Attempts: 3,
			Timeout:  30 * time.Second,
		},
		HTTP: HTTPConfig{Listen: "127.0.0.1:7480"},
		Log:  LogConfig{Level: "info", Format: "text"},
	}
}

// withDefaults fills zero values that have a documented meaning.
func (c Config) withDefaults() Config {
	if c.Name == "" {
		c.Name, _ = os.Hostname()
		if c.Name == "" {
			c.Name = "edgegate"
		}
	}
	d := DefaultConfig()
	if c.Devices.Ack == "" {
		c.Devices.Ack = d.Devices.Ack
	}
	if c.Devices.Auth == "" {
		c.Devices.Auth = d.Devices.Auth
	}
	if c.Devices.MaxFrame == 0 {
		c.Devices.MaxFrame = d.Devices.MaxFrame
	}
	if c.Devices.HelloTimeout == 0 {
		c.Devices.HelloTimeout = d.Devices.HelloTimeout
	}
	if c.Devices.Queue == 0 {
		c.Devices.Queue = d.Devices.Queue
	}
	if c.Devices.Memory == 0 {
		c.Devices.Memory = d.Devices.Memory
	}
	if c.NATS.MaxStore == 0 {
		c.NATS.MaxStore = d.NATS.MaxStore
	}
	if c.NATS.MaxMemory == 0 {
		c.NATS.MaxMemory = d.NATS.MaxMemory
	}
	if c.NATS.DuplicateWindow == 0 {
		c.NATS.DuplicateWindow = d.NATS.DuplicateWindow
	}
	if c.NATS.Cluster.Name == "" {
		c.NATS.Cluster.Name = d.NATS.Cluster.Name
	}
	if c.Lease.RedisMode == "" {
		c.Lease.RedisMode = d.Lease.RedisMode
	}
	if c.Lease.RedisPrefix == "" {
		c.Lease.RedisPrefix = d.Lease.RedisPrefix
	}
	if c.Lease.TTL == 0 {
		c.Lease.TTL = d.Lease.TTL
	}
	if c.Lease.Heartbeat == 0 {
		c.Lease.Heartbeat = d.Lease.Heartbeat
	}
	if c.Lease.CheckInterval == 0 {
		c.Lease.CheckInterval = d.Lease.CheckInterval
	}
	if c.Parser.Batch == 0 {
		c.Parser.Batch = d.Parser.Batch
	}
	if c.Parser.Handler == "" {
		c.Parser.Handler = d.Parser.Handler
	}
	if c.Parser.Attempts == 0 {
		c.Parser.Attempts = d.Parser.Attempts
	}
	if c.Parser.Timeout == 0 {
		c.Parser.Timeout = d.Parser.Timeout
	}
	if c.Log.Level == "" {
		c.Log.Level = d.Log.Level
	}
	if c.Log.Format == "" {
		c.Log.Format = d.Log.Format
	}
	return c
}

// Validate checks c (after defaults are applied to zero values) and returns
// one error naming the first bad setting by its configuration key.
func (c Config) Validate() error {
	if err := c.ReadSecretFiles(); err != nil {
		return err
	}
	c = c.withDefaults()
	bad := func(key string, v any, why string) error {
		return fmt.Errorf("config: %s: %v: %s", key, v, why)
	}
	// tlsPair checks that <section>.tls_cert and tls_key go together and
	// that the CA setting is only given with them.
	tlsPair := func(section, cert, key, caKey, ca string) error {
		if (cert == "") != (key == "") {
			return bad(section+".tls_cert", fmt.Sprintf("%q", cert), section+".tls_cert and "+section+".tls_key go together")
		}
		if ca != "" && cert == "" {
			return bad(section+"."+caKey, fmt.Sprintf("%q", ca), "needs "+section+".tls_cert and "+section+".tls_key")
		}
		return nil
	}
	for _, a := range []struct{ key, addr string }{
		{"devices.listen", c.Devices.Listen},
		{"devices.lines_listen", c.Devices.LinesListen},
		{"devices.teltonika_listen", c.Devices.TeltonikaListen},
		{"nats.listen", c.NATS.Listen},
		{"nats.cluster.listen", c.NATS.Cluster.Listen},
		{"nats.cluster.advertise", c.NATS.Cluster.Advertise},
		{"http.listen", c.HTTP.Listen},
	} {
		if a.addr == "" {
			continue
		}
		if _, _, err := net.SplitHostPort(a.addr); err != nil {
			return bad(a.key, fmt.Sprintf("%q", a.addr), "want host:port, e.g. 0.0.0.0:7400")
		}
	}
	for i, p := range c.NATS.Cluster.Peers {
		if _, _, err := net.SplitHostPort(p); err != nil {
			return bad(fmt.Sprintf("nats.cluster.peers[%d]", i), fmt.Sprintf("%q", p), "want host:port of a peer's cluster listener")
		}
	}
	switch c.Devices.Ack {
	case "processed", "none":
	default:
		return bad("devices.ack", fmt.Sprintf("%q", c.Devices.Ack), "want processed or none")
	}
	if c.Devices.MaxFrame < 16 || c.Devices.MaxFrame > maxFrameLimit {
		return bad("devices.max_frame", c.Devices.MaxFrame, "want 16 bytes to 4 MiB")
	}
	if c.Devices.HelloTimeout < 0 {
		return bad("devices.hello_timeout", c.Devices.HelloTimeout, "must not be negative")
	}
	if c.Devices.MaxConnections < 0 {
		return bad("devices.max_connections", c.Devices.MaxConnections, "must not be negative")
	}
	if err := tlsPair("devices", c.Devices.TLSCert, c.Devices.TLSKey, "tls_client_ca", c.Devices.TLSClientCA); err != nil {
		return err
	}
	if _, err := c.Devices.auth(); err != nil {
		return err
	}
	if err := tlsPair("nats", c.NATS.TLSCert, c.NATS.TLSKey, "tls_client_ca", c.NATS.TLSClientCA); err != nil {
		return err
	}
	if err := tlsPair("nats.cluster", c.NATS.Cluster.TLSCert, c.NATS.Cluster.TLSKey, "tls_ca", c.NATS.Cluster.TLSCA); err != nil {
		return err
	}
	if (c.Lease.RedisTLSCA != "" || c.Lease.RedisTLSCert != "") && !strings.HasPrefix(c.Lease.Redis, "rediss://") {
		return bad("lease.redis_tls_ca", fmt.Sprintf("%q", c.Lease.RedisTLSCA), "TLS settings need a rediss:// URL in lease.redis")
	}
	if (c.Lease.RedisTLSCert == "") != (c.Lease.RedisTLSKey == "") {
		return bad("lease.redis_tls_cert", fmt.Sprintf("%q", c.Lease.RedisTLSCert), "lease.redis_tls_cert and lease.redis_tls_key go together")
	}
	if c.NATS.Password != "" && c.NATS.User == "" {
		return bad("nats.password", `"…"`, "needs nats.user")
	}
	if c.NATS.User != "" && c.NATS.Password == "" {
		return bad("nats.user", fmt.Sprintf("%q", c.NATS.User), "needs nats.password")
	}
	for i, k := range c.NATS.NKeys {
		if !nkeys.IsValidPublicUserKey(k) {
			return bad(fmt.Sprintf("nats.nkeys[%d]", i), fmt.Sprintf("%q", k), "want a public user nkey (56 characters starting with U)")
		}
	}
	if (c.NATS.Cluster.User == "") != (c.NATS.Cluster.Password == "") {
		return bad("nats.cluster.user", fmt.Sprintf("%q", c.NATS.Cluster.User), "nats.cluster.user and nats.cluster.password go together")
	}
	if err := c.NATS.checkTrust(); err != nil {
		return err
	}
	if err := c.Devices.checkTeltonika(); err != nil {
		return err
	}
	if c.Devices.MaxPerIP < 0 {
		return bad("devices.max_per_ip", c.Devices.MaxPerIP, "must not be negative")
	}
	if c.Devices.LeanAfter < 0 {
		return bad("devices.lean_after", c.Devices.LeanAfter, "must not be negative")
	}
	if c.Devices.IdleTimeout < 0 || c.Devices.IdleTimeout > 0 && c.Devices.IdleTimeout < 2*time.Second {
		return bad("devices.idle_timeout", c.Devices.IdleTimeout, "want 0 (never) or at least 2s")
	}
	if c.Devices.Queue < 1 {
		return bad("devices.queue", c.Devices.Queue, "want at least 1")
	}
	if c.Devices.Memory < int64(c.Devices.MaxFrame) {
		return bad("devices.memory", c.Devices.Memory, fmt.Sprintf("want at least devices.max_frame (%d)", c.Devices.MaxFrame))
	}
	if c.NATS.MaxStore < 0 || c.NATS.MaxMemory < 0 {
		return bad("nats.max_store", c.NATS.MaxStore, "must not be negative")
	}
	// A publish unanswered for a second is sent again within
	// parser.timeout, and a failed batch's records are retried within
	// seconds: both must be found stored.
	if c.NATS.DuplicateWindow < 10*time.Second {
		return bad("nats.duplicate_window", c.NATS.DuplicateWindow, "want at least 10s")
	}
	switch c.Lease.RedisMode {
	case "standalone", "sentinel", "cluster":
	default:
		return bad("lease.redis_mode", fmt.Sprintf("%q", c.Lease.RedisMode), "want standalone, sentinel or cluster")
	}
	if c.Lease.Redis != "" {
		if _, err := lease.RedisOptions(c.Lease.Redis, c.Lease.RedisMode); err != nil {
			return bad("lease.redis", redactURL(c.Lease.Redis), err.Error())
		}
	}
	if strings.ContainsAny(c.Lease.RedisPrefix, "{} ") {
		return bad("lease.redis_prefix", fmt.Sprintf("%q", c.Lease.RedisPrefix), "must not contain braces or spaces")
	}
	if c.Lease.TTL < 100*time.Millisecond {
		return bad("lease.ttl", c.Lease.TTL, "want at least 100ms")
	}
	if c.Lease.Heartbeat <= 0 || c.Lease.Heartbeat*2 > c.Lease.TTL {
		return bad("lease.heartbeat", c.Lease.Heartbeat, fmt.Sprintf("want more than 0 and at most half of lease.ttl (%s)", c.Lease.TTL))
	}
	if c.Lease.CheckInterval <= 0 {
		return bad("lease.check_interval", c.Lease.CheckInterval, "want more than 0")
	}
	if c.Parser.Workers < 0 || c.Parser.Workers > 4096 {
		return bad("parser.workers", c.Parser.Workers, "want 0 to 4096")
	}
	if c.Parser.Batch < 1 || c.Parser.Batch > 4096 {
		return bad("parser.batch", c.Parser.Batch, "want 1 to 4096")
	}
	if c.Parser.Attempts < 1 {
		return bad("parser.attempts", c.Parser.Attempts, "want at least 1")
	}
	if c.Parser.Timeout < 0 {
		return bad("parser.timeout", c.Parser.Timeout, "must not be negative")
	}
	if _, err := parser.ChildEnv(nil, c.Parser.ExecEnv); err != nil {
		return bad("parser.exec_env", fmt.Sprintf("%q", c.Parser.ExecEnv), err.Error())
	}
	if c.Handler == nil {
		switch c.Parser.Handler {
		case "publish", "discard":
		case "exec":
			if len(c.Parser.Exec) == 0 {
				return bad("parser.exec", "[]", "the exec handler needs a command")
			}
		default:
			return bad("parser.handler", fmt.Sprintf("%q", c.Parser.Handler), "want publish, exec or discard")
		}
	}
	switch c.Log.Level {
	case "debug", "info", "warn", "error":
	default:
		return bad("log.level", fmt.Sprintf("%q", c.Log.Level), "want debug, info, warn or error")
	}
	switch c.Log.Format {
	case "text", "json":
	default:
		return bad("log.format", fmt.Sprintf("%q", c.Log.Format), "want text or json")
	}
	if c.Devices.Listen == "" && c.Devices.LinesListen == "" && c.Devices.TeltonikaListen == "" && c.Parser.Workers == 0 {
		return errors.New("config: devices.listen, devices.lines_listen and parser.workers are all off: this appliance would do nothing")
	}
	clustered := c.NATS.Cluster.Listen != "" || len(c.NATS.Cluster.Peers) > 0
	if clustered && c.Lease.Redis == "" && c.LeaseStore == nil {
		return errors.New("config: lease.redis: a cluster (nats.cluster.listen or nats.cluster.peers set) needs Redis for its leases: set lease.redis to redis://host:6379/0 on every appliance, or remove the cluster settings to run one appliance on the in-process store")
	}
	return nil
}

// ReadSecretFiles sets each secret setting from its file setting
// (lease.redis from lease.redis_file, nats.password from
// nats.password_file, nats.cluster.password from
// nats.cluster.password_file) and clears the file setting: a secret in a
// file is not in the process's command line, which every local user can
// read, nor in its environment, which the exec handler's children would
// otherwise see. A file value without a '/' names a systemd credential,
// read from $CREDENTIALS_DIRECTORY (LoadCredential= in the unit); any
// other is a path. The file holds the value on one line; a final newline
// is not part of it. Setting both a secret and its file is an error.
func (c *Config) ReadSecretFiles() error {
	for _, s := range []struct {
		key       string
		val, file *string
	}{
		{"lease.redis", &c.Lease.Redis, &c.Lease.RedisFile},
		{"nats.password", &c.NATS.Password, &c.NATS.PasswordFile},
		{"nats.cluster.password", &c.NATS.Cluster.Password, &c.NATS.Cluster.PasswordFile},
	} {
		if *s.file == "" {
			continue
		}
		if *s.val != "" {
			return fmt.Errorf("config: %s and %s_file are both set: keep one", s.key, s.key)
		}
		v, err := readSecret(*s.file)
		if err != nil {
			return fmt.Errorf("config: %s_file: %w", s.key, err)
		}
		*s.val, *s.file = v, ""
	}
	return nil
}

// readSecret reads a one-line secret from a path, or from the systemd
// credential of that name when it has no '/'. Errors never quote the
// file's content.
func readSecret(name string) (string, error) {
	path := name
	if !strings.Contains(name, "/") {
		dir := os.Getenv("CREDENTIALS_DIRECTORY")
		if dir == "" {
			return "", fmt.Errorf("%q names a systemd credential (it has no '/'), but $CREDENTIALS_DIRECTORY is not set: load it with LoadCredential=%s:<path> in the unit, or give a path", name, name)
		}
		path = filepath.Join(dir, name)
	}
	b, err := os.ReadFile(path)
	if err != nil {
		return "", err
	}
	v := strings.TrimSuffix(strings.TrimSuffix(string(b), "\n"), "\r")
	switch {
	case v == "":
		return "", fmt.Errorf("%s is empty", path)
	case strings.ContainsAny(v, "\r\n"):
		return "", fmt.Errorf("%s holds more than one line", path)
	}
	return v, nil
}

// deviceAuth is how the socket authenticates devices, resolved from the
// devices settings (see DevicesConfig.Auth).
type deviceAuth struct {
	tokens              string // token file the HELLOs are checked against; "" = none
	certIDs             bool   // device certificates name their controllers
	listen, linesListen string // the listener addresses, on loopback when nothing authenticates devices
	warn, info          string // said at start, when not empty
}

// enrol tells how to authenticate devices, for messages.
const enrol = "enrol each device with `edgegate devices add <id>` (it prints the device's token and writes /etc/edgegate/devices.tokens) and set devices.tokens to that file, or set devices.tls_client_ca to require device certificates naming their controllers, or set devices.auth: open to serve devices without authentication (labs)"

// auth resolves d.Auth (defaults applied); its error names the setting.
func (d DevicesConfig) auth() (deviceAuth, error) {
	a := deviceAuth{listen: d.Listen, linesListen: d.LinesListen}
	switch d.Auth {
	case "open":
		a.warn = "devices.auth is open: devices are not authenticated; any host that reaches the device listeners can open, take over or reset any controller's session"
		return a, nil
	case "tls":
		if d.TLSClientCA == "" {
			return a, fmt.Errorf("config: devices.auth: tls: needs devices.tls_client_ca (with devices.tls_cert and devices.tls_key)")
		}
		a.certIDs = true
		return a, nil
	case "token", "":
	default:
		return a, fmt.Errorf("config: devices.auth: %q: want token, tls or open", d.Auth)
	}
	a.tokens, a.certIDs = d.Tokens, d.TLSClientCA != ""
	if a.tokens != "" || a.certIDs {
		return a, nil
	}
	// Nothing to check devices against: this machine only.
	var narrowed []string
	for _, l := range []struct {
		key  string
		addr *string
	}{{"devices.listen", &a.listen}, {"devices.lines_listen", &a.linesListen}} {
		if *l.addr == "" {
			continue
		}
		host, port, err := net.SplitHostPort(*l.addr)
		if err != nil {
			return a, fmt.Errorf("config: %s: %q: want host:port", l.key, *l.addr)
		}
		ip := net.ParseIP(host)
		switch {
		case host == "localhost" || ip != nil && ip.IsLoopback():
		case host == "" || ip != nil && ip.IsUnspecified():
			lo := "127.0.0.1"
			if ip != nil && ip.To4() == nil {
				lo = "::1"
			}
			narrowed = append(narrowed, fmt.Sprintf("%s %s instead of %s", l.key, net.JoinHostPort(lo, port), *l.addr))
			*l.addr = net.JoinHostPort(lo, port)
		default:
			return a, fmt.Errorf("config: %s: %q: devices on the network must be authenticated: %s", l.key, *l.addr, enrol)
		}
	}
	a.info = "no device authentication is configured: the device listeners serve this machine only"
	if len(narrowed) > 0 {
		a.info, a.warn = "", "no device authentication is configured, so devices are served on this machine only ("+strings.Join(narrowed, ", ")+"); to serve devices on the network, "+enrol
	}
	return a, nil
}

// redactURL hides a password in a URL for error messages.
func redactURL(s string) string {
	u, err := url.Parse(s)
	if err != nil {
		return "(unparsable URL)"
	}
	return u.Redacted()
}

// maxFrameLimit bounds devices.max_frame: a message travels as one NATS
// message (a record with its headers, an assignment to a pool of another
// appliance), and the embedded server takes 8 MiB at most; half of it
// leaves room for the headers and an assignment's own fields.
const maxFrameLimit = 4 << 20
