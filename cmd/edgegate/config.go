package main

import (
	"errors"
	"fmt"
	"os"
	"sort"
	"strconv"
	"strings"
	"time"

	"github.com/urfave/cli/v2"
	"gopkg.in/yaml.v3"

	"github.com/edgegate/edgegate/appliance"
)

// setting is one configuration key: its file key, flag and variable are
// derived from the dotted key, so the three cannot drift apart.
type setting struct {
	key   string
	usage string
	ptr   func(*appliance.Config) any // pointer to the field
	bytes bool                        // an int or int64 size: also accepts 64MiB and the like
}

// settings lists every setting of `edgegate run`, in file order.
var settings = []setting{
	{key: "name", usage: "appliance name (default: the host name)", ptr: func(c *appliance.Config) any { return &c.Name }},
	{key: "data_dir", usage: "JetStream store and other state (default: $STATE_DIRECTORY, else /var/lib/edgegate if writable, else ~/.local/state/edgegate)", ptr: func(c *appliance.Config) any { return &c.DataDir }},
	{key: "devices.listen", usage: `EGP/1 device listener; "" disables it`, ptr: func(c *appliance.Config) any { return &c.Devices.Listen }},
	{key: "devices.lines_listen", usage: `line-based device listener; "" disables it`, ptr: func(c *appliance.Config) any { return &c.Devices.LinesListen }},
	{key: "devices.teltonika_listen", usage: `Teltonika tracker listener (Codec 8/8E/16 over TCP), customarily port 5027; "" disables it`, ptr: func(c *appliance.Config) any { return &c.Devices.TeltonikaListen }},
	{key: "devices.teltonika_imeis", usage: `file of the IMEIs the Teltonika listener accepts, one a line ("*" = any), re-read on change; required with devices.teltonika_listen unless devices.auth is open`, ptr: func(c *appliance.Config) any { return &c.Devices.TeltonikaIMEIs }},
	{key: "devices.teltonika_tls", usage: "serve the Teltonika listener over TLS with devices.tls_cert and devices.tls_key", ptr: func(c *appliance.Config) any { return &c.Devices.TeltonikaTLS }},
	{key: "devices.ack", usage: "processed (ACK after the handler) or none", ptr: func(c *appliance.Config) any { return &c.Devices.Ack }},
	{key: "devices.max_frame", usage: "largest frame body in bytes", ptr: func(c *appliance.Config) any { return &c.Devices.MaxFrame }, bytes: true},
	{key: "devices.hello_timeout", usage: "time a new connection has to send HELLO", ptr: func(c *appliance.Config) any { return &c.Devices.HelloTimeout }},
	{key: "devices.max_connections", usage: "most device connections at once; 0 = no limit", ptr: func(c *appliance.Config) any { return &c.Devices.MaxConnections }},
	{key: "devices.queue", usage: "most messages queued per controller before its device is backpressured", ptr: func(c *appliance.Config) any { return &c.Devices.Queue }},
	{key: "devices.memory", usage: "most payload bytes queued over all controllers before devices are backpressured (and an eighth more for bodies still arriving)", ptr: func(c *appliance.Config) any { return &c.Devices.Memory }, bytes: true},
	{key: "devices.max_per_ip", usage: "most connections from one source address; 0 = no limit", ptr: func(c *appliance.Config) any { return &c.Devices.MaxPerIP }},
	{key: "devices.lean_after", usage: "open device connections beyond which new ones hold no read buffer and a 2 KiB goroutine while silent (one more read call per burst); 0 = every connection", ptr: func(c *appliance.Config) any { return &c.Devices.LeanAfter }},
	{key: "devices.idle_timeout", usage: "close an EGP/1 session silent this long (PING at half of it); 0 = never", ptr: func(c *appliance.Config) any { return &c.Devices.IdleTimeout }},
	{key: "devices.auth", usage: "token (HELLO tokens of devices.tokens; with devices.tls_client_ca also a certificate naming the controller), tls (a certificate naming the controller) or open (none: labs); with neither a token file nor a client CA, devices are served on loopback only", ptr: func(c *appliance.Config) any { return &c.Devices.Auth }},
	{key: "devices.tokens", usage: `file of HELLO tokens ("<controller|prefix*|*> <token|sha256:hex>" per line; edgegate devices add writes them), re-read on change; "" = none (see devices.auth)`, ptr: func(c *appliance.Config) any { return &c.Devices.Tokens }},
	{key: "devices.tls_cert", usage: `PEM certificate of the device listeners; "" = plain TCP`, ptr: func(c *appliance.Config) any { return &c.Devices.TLSCert }},
	{key: "devices.tls_key", usage: "PEM key of devices.tls_cert", ptr: func(c *appliance.Config) any { return &c.Devices.TLSKey }},
	{key: "devices.tls_client_ca", usage: `PEM CA bundle: require device certificates signed by it; "" = not asked`, ptr: func(c *appliance.Config) any { return &c.Devices.TLSClientCA }},
	{key: "nats.listen", usage: `NATS client port, for reading records and status (clients never reach coordination); an address other than loopback needs nats.user, nats.nkeys or nats.tls_client_ca; "" = in-process clients only`, ptr: func(c *appliance.Config) any { return &c.NATS.Listen }},
	{key: "nats.jetstream", usage: "store parsed records and dead letters in JetStream", ptr: func(c *appliance.Config) any { return &c.NATS.JetStream }},
	{key: "nats.max_store", usage: "JetStream file store limit in bytes", ptr: func(c *appliance.Config) any { return &c.NATS.MaxStore }, bytes: true},
	{key: "nats.max_memory", usage: "JetStream memory store limit in bytes", ptr: func(c *appliance.Config) any { return &c.NATS.MaxMemory }, bytes: true},
	{key: "nats.duplicate_window", usage: "how long the streams remember a record's message ID, so that a message resent within it is not stored twice; each ID costs about 110 B of memory per replica while remembered", ptr: func(c *appliance.Config) any { return &c.NATS.DuplicateWindow }},
	{key: "nats.user", usage: `user name clients of the NATS client port must give; "" = no password authentication`, ptr: func(c *appliance.Config) any { return &c.NATS.User }},
	{key: "nats.password", usage: "password of nats.user, plain or a bcrypt hash ($2a$...)", ptr: func(c *appliance.Config) any { return &c.NATS.Password }},
	{key: "nats.password_file", usage: "file holding nats.password (instead of it), or the name of a systemd credential (LoadCredential=)", ptr: func(c *appliance.Config) any { return &c.NATS.PasswordFile }},
	{key: "nats.nkeys", usage: "public user nkeys (U...) allowed on the NATS client port (repeat or comma-separate)", ptr: func(c *appliance.Config) any { return &c.NATS.NKeys }},
	{key: "nats.tls_cert", usage: `PEM certificate of the NATS client port; "" = plain TCP`, ptr: func(c *appliance.Config) any { return &c.NATS.TLSCert }},
	{key: "nats.tls_key", usage: "PEM key of nats.tls_cert", ptr: func(c *appliance.Config) any { return &c.NATS.TLSKey }},
	{key: "nats.tls_client_ca", usage: `PEM CA bundle: require NATS client certificates signed by it; "" = not asked`, ptr: func(c *appliance.Config) any { return &c.NATS.TLSClientCA }},
	{key: "nats.cluster.listen", usage: `NATS route listener, e.g. 0.0.0.0:6222; "" = not clustered`, ptr: func(c *appliance.Config) any { return &c.NATS.Cluster.Listen }},
	{key: "nats.cluster.name", usage: "cluster name, the same on every appliance", ptr: func(c *appliance.Config) any { return &c.NATS.Cluster.Name }},
	{key: "nats.cluster.advertise", usage: `route address the other appliances reach this one at (NAT, relay); "" = nats.cluster.listen`, ptr: func(c *appliance.Config) any { return &c.NATS.Cluster.Advertise }},
	{key: "nats.cluster.peers", usage: "host:port of every peer's route listener (repeat or comma-separate)", ptr: func(c *appliance.Config) any { return &c.NATS.Cluster.Peers }},
	{key: "nats.cluster.user", usage: `route user name, the same on every appliance; required with nats.cluster.peers or a non-loopback nats.cluster.listen, unless route TLS (nats.cluster.tls_ca)`, ptr: func(c *appliance.Config) any { return &c.NATS.Cluster.User }},
	{key: "nats.cluster.password", usage: "route password, the same on every appliance", ptr: func(c *appliance.Config) any { return &c.NATS.Cluster.Password }},
	{key: "nats.cluster.password_file", usage: "file holding nats.cluster.password (instead of it), or the name of a systemd credential (LoadCredential=)", ptr: func(c *appliance.Config) any { return &c.NATS.Cluster.PasswordFile }},
	{key: "nats.cluster.tls_cert", usage: `PEM route certificate (used both ways; every appliance needs one); "" = plain TCP`, ptr: func(c *appliance.Config) any { return &c.NATS.Cluster.TLSCert }},
	{key: "nats.cluster.tls_key", usage: "PEM key of nats.cluster.tls_cert", ptr: func(c *appliance.Config) any { return &c.NATS.Cluster.TLSKey }},
	{key: "nats.cluster.tls_ca", usage: "PEM CA bundle route certificates must be signed by; required with nats.cluster.tls_cert (routes never trust the system roots)", ptr: func(c *appliance.Config) any { return &c.NATS.Cluster.TLSCA }},
	{key: "lease.redis", usage: `Redis URL for the leases, redis://host:6379/0; "" = in-process store (one appliance)`, ptr: func(c *appliance.Config) any { return &c.Lease.Redis }},
	{key: "lease.redis_file", usage: "file holding lease.redis (instead of it: the URL may carry a password), or the name of a systemd credential (LoadCredential=)", ptr: func(c *appliance.Config) any { return &c.Lease.RedisFile }},
	{key: "lease.redis_mode", usage: "standalone, sentinel (URL: redis://sentinel:26379?master_name=m&addr=sentinel2:26379) or cluster (URL: redis://node1:6379?addr=node2:6379)", ptr: func(c *appliance.Config) any { return &c.Lease.RedisMode }},
	{key: "lease.redis_prefix", usage: "prefix of every Redis key", ptr: func(c *appliance.Config) any { return &c.Lease.RedisPrefix }},
	{key: "lease.redis_tls_ca", usage: `PEM CA bundle Redis's certificate must be signed by (rediss:// URLs); "" = the system roots`, ptr: func(c *appliance.Config) any { return &c.Lease.RedisTLSCA }},
	{key: "lease.redis_tls_cert", usage: `PEM client certificate for Redis (rediss:// URLs); "" = none`, ptr: func(c *appliance.Config) any { return &c.Lease.RedisTLSCert }},
	{key: "lease.redis_tls_key", usage: "PEM key of lease.redis_tls_cert", ptr: func(c *appliance.Config) any { return &c.Lease.RedisTLSKey }},
	{key: "lease.ttl", usage: "lease time: a parser silent this long is taken as dead", ptr: func(c *appliance.Config) any { return &c.Lease.TTL }},
	{key: "lease.heartbeat", usage: "how often a parser extends its lease", ptr: func(c *appliance.Config) any { return &c.Lease.Heartbeat }},
	{key: "lease.check_interval", usage: "how often a socket checks the leases it waits on", ptr: func(c *appliance.Config) any { return &c.Lease.CheckInterval }},
	{key: "parser.workers", usage: "parser workers; 0 = no parser pool on this appliance", ptr: func(c *appliance.Config) any { return &c.Parser.Workers }},
	{key: "parser.batch", usage: "most messages of one controller per lease", ptr: func(c *appliance.Config) any { return &c.Parser.Batch }},
	{key: "parser.handler", usage: "publish, exec or discard", ptr: func(c *appliance.Config) any { return &c.Parser.Handler }},
	{key: "parser.exec", usage: "command and arguments of the exec handler (repeat the flag per word)", ptr: func(c *appliance.Config) any { return &c.Parser.Exec }},
	{key: "parser.exec_env", usage: "environment of the exec handler's children beyond PATH, HOME, LANG and the like: NAME=value, or NAME to pass the appliance's own (repeat or comma-separate)", ptr: func(c *appliance.Config) any { return &c.Parser.ExecEnv }},
	{key: "parser.attempts", usage: "tries of a message the handler calls bad before it is dead-lettered", ptr: func(c *appliance.Config) any { return &c.Parser.Attempts }},
	{key: "parser.timeout", usage: "time the handler has for one attempt at a message; then it counts as a transient error (retried) and an exec child is restarted", ptr: func(c *appliance.Config) any { return &c.Parser.Timeout }},
	{key: "parser.validate_json", usage: "publish handler: dead-letter payloads that are not valid JSON", ptr: func(c *appliance.Config) any { return &c.Parser.ValidateJSON }},
	{key: "http.listen", usage: `HTTP for the status page (/), /metrics, /healthz, /readyz; "" disables it`, ptr: func(c *appliance.Config) any { return &c.HTTP.Listen }},
	{key: "http.pprof", usage: "serve Go's profiles under /debug/pprof/ on the HTTP address", ptr: func(c *appliance.Config) any { return &c.HTTP.Pprof }},
	{key: "log.level", usage: "debug, info, warn or error", ptr: func(c *appliance.Config) any { return &c.Log.Level }},
	{key: "log.format", usage: "text (key=value) or json, one line per entry", ptr: func(c *appliance.Config) any { return &c.Log.Format }},
}

func envName(key string) string {
	return "EDGEGATE_" + strings.ToUpper(strings.ReplaceAll(key, ".", "_"))
}

// configFlags returns the flags of every setting with the defaults shown.
func configFlags() []cli.Flag {
	def := appliance.DefaultConfig()
	flags := []cli.Flag{
		&cli.StringFlag{Name: "config", Usage: "YAML configuration file", EnvVars: []string{"EDGEGATE_CONFIG"}, TakesFile: true},
	}
	for _, s := range settings {
		env := []string{envName(s.key)}
		switch p := s.ptr(&def).(type) {
		case *string:
			flags = append(flags, &cli.StringFlag{Name: s.key, Usage: s.usage, EnvVars: env, Value: *p})
		case *bool:
			flags = append(flags, &cli.BoolFlag{Name: s.key, Usage: s.usage, EnvVars: env, Value: *p})
		case *time.Duration:
			flags = append(flags, &cli.DurationFlag{Name: s.key, Usage: s.usage, EnvVars: env, Value: *p})
		case *[]string:
			flags = append(flags, &cli.StringSliceFlag{Name: s.key, Usage: s.usage, EnvVars: env})
		case *int:
			flags = append(flags, &cli.StringFlag{Name: s.key, Usage: s.usage, EnvVars: env, Value: strconv.Itoa(*p)})
		case *int64:
			flags = append(flags, &cli.StringFlag{Name: s.key, Usage: s.usage, EnvVars: env, Value: strconv.FormatInt(*p, 10)})
		default:
			panic(fmt.Sprintf("setting %s: unsupported type %T", s.key, p))
		}
	}
	return flags
}

// loadConfig builds the configuration: default, then the file, then the
// environment and flags (urfave/cli applies a variable as if it were the
// flag, and a flag given on the command line wins over the variable).
func loadConfig(c *cli.Context) (appliance.Config, error) {
	cfg := appliance.DefaultConfig()
	if path := c.String("config"); path != "" {
		if err := applyFile(&cfg, path); err != nil {
			return cfg, err
		}
	}
	for _, s := range settings {
		if !c.IsSet(s.key) {
			continue
		}
		var err error
		switch p := s.ptr(&cfg).(type) {
		case *string:
			*p = c.String(s.key)
		case *bool:
			*p = c.Bool(s.key)
		case *time.Duration:
			*p = c.Duration(s.key)
		case *[]string:
			*p = splitList(c.StringSlice(s.key))
		case *int:
			err = setInt(p, c.String(s.key), s.bytes)
		case *int64:
			err = setInt64(p, c.String(s.key), s.bytes)
		}
		if err != nil {
			return cfg, fmt.Errorf("config: %s (--%s or %s): %w", s.key, s.key, envName(s.key), err)
		}
	}
	// Secrets from files are read now, and again at each reload.
	if err := cfg.ReadSecretFiles(); err != nil {
		return cfg, err
	}
	return cfg, nil
}

func splitList(in []string) []string {
	var out []string
	for _, s := range in {
		for _, p := range strings.Split(s, ",") {
			if p = strings.TrimSpace(p); p != "" {
				out = append(out, p)
			}
		}
	}
	return out
}

// applyFile reads a YAML file into cfg. Unknown keys and wrongly typed
// values are errors naming the key.
func applyFile(cfg *appliance.Config, path string) error {
	b, err := os.ReadFile(path)
	if err != nil {
		return fmt.Errorf("config: %w", err)
	}
	return applyYAML(cfg, path, b)
}

// applyYAML reads the YAML document b (from the file path) into cfg.
func applyYAML(cfg *appliance.Config, path string, b []byte) error {
	var root yaml.Node
	if err := yaml.Unmarshal(b, &root); err != nil {
		return fmt.Errorf("config %s: %w", path, err)
	}
	values := map[string]*yaml.Node{}
	if len(root.Content) > 0 {
		if err := flatten("", root.Content[0], values); err != nil {
			return fmt.Errorf("config %s: %w", path, err)
		}
	}
	known := map[string]setting{}
	for _, s := range settings {
		known[s.key] = s
	}
	keys := make([]string, 0, len(values))
	for k := range values {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	for _, k := range keys {
		s, ok := known[k]
		if !ok {
			return fmt.Errorf("config %s: unknown setting %s%s", path, k, suggest(k))
		}
		if err := decode(values[k], s, cfg); err != nil {
			return fmt.Errorf("config %s: %s (line %d): %w", path, k, values[k].Line, err)
		}
	}
	return nil
}

// flatten turns nested mappings into dotted keys.
func flatten(prefix string, n *yaml.Node, out map[string]*yaml.Node) error {
	if n.Kind == yaml.DocumentNode && len(n.Content) > 0 {
		n = n.Content[0]
	}
	if n.Kind != yaml.MappingNode {
		if prefix == "" {
			if n.Kind == yaml.ScalarNode && n.Tag == "!!null" {
				return nil // an empty file
			}
			return errors.New("the top level must be a mapping of settings")
		}
		out[prefix] = n
		return nil
	}
	for i := 0; i+1 < len(n.Content); i += 2 {
		key := n.Content[i].Value
		if prefix != "" {
			key = prefix + "." + key
		}
		v := n.Content[i+1]
		if v.Kind == yaml.ScalarNode && v.Tag == "!!null" && !isSetting(key) {
			continue // an empty section: every key in it commented out
		}
		// A mapping is a section, unless the key itself is a setting.
		if v.Kind == yaml.MappingNode && !isSetting(key) {
			if err := flatten(key, v, out); err != nil {
				return err
			}
			continue
		}
		out[key] = v
	}
	return nil
}

func isSetting(key string) bool {
	for _, s := range settings {
		if s.key == key {
			return true
		}
	}
	return false
}

// suggest names a known setting close to a misspelt key.
func suggest(key string) string {
	best, bestD := "", 4
	for _, s := range settings {
		if d := distance(key, s.key); d < bestD {
			best, bestD = s.key, d
		}
	}
	if best == "" {
		return ""
	}
	return " (did you mean " + best + "?)"
}

func distance(a, b string) int {
	prev := make([]int, len(b)+1)
	for j := range prev {
		prev[j] = j
	}
	for i := 1; i <= len(a); i++ {
		cur := make([]int, len(b)+1)
		cur[0] = i
		for j := 1; j <= len(b); j++ {
			cost := 1
			if a[i-1] == b[j-1] {
				cost = 0
			}
			cur[j] = min(prev[j]+1, cur[j-1]+1, prev[j-1]+cost)
		}
		prev = cur
	}
	return prev[len(b)]
}

func decode(n *yaml.Node, s setting, cfg *appliance.Config) error {
	switch p := s.ptr(cfg).(type) {
	case *string:
		if n.Kind != yaml.ScalarNode {
			return errors.New("want a string")
		}
		*p = n.Value
		if n.Tag == "!!null" {
			*p = ""
		}
	case *bool:
		if n.Kind != yaml.ScalarNode || n.Tag != "!!bool" {
			return fmt.Errorf("want true or false, got %q", n.Value)
		}
		return n.Decode(p)
	case *time.Duration:
		if n.Kind != yaml.ScalarNode {
			return errors.New("want a duration like 5s")
		}
		d, err := time.ParseDuration(n.Value)
		if err != nil {
			return fmt.Errorf("want a duration like 5s or 500ms, got %q", n.Value)
		}
		*p = d
	case *[]string:
		switch n.Kind {
		case yaml.SequenceNode:
			var list []string
			if err := n.Decode(&list); err != nil {
				return errors.New("want a list of strings")
			}
			*p = list
		case yaml.ScalarNode:
			*p = splitList([]string{n.Value})
		default:
			return errors.New("want a list of strings")
		}
	case *int:
		if n.Kind != yaml.ScalarNode {
			return errors.New("want a number")
		}
		return setInt(p, n.Value, s.bytes)
	case *int64:
		if n.Kind != yaml.ScalarNode {
			return errors.New("want a number")
		}
		return setInt64(p, n.Value, s.bytes)
	}
	return nil
}

func setInt(p *int, v string, bytes bool) error {
	n, err := parseInt(v, bytes)
	if err != nil {
		return err
	}
	if int64(int(n)) != n {
		return fmt.Errorf("%q is out of range", v)
	}
	*p = int(n)
	return nil
}

func setInt64(p *int64, v string, bytes bool) error {
	n, err := parseInt(v, bytes)
	if err != nil {
		return err
	}
	*p = n
	return nil
}

// parseInt reads a number; sizes also take the units KiB, MiB, GiB (and
// KB, MB, GB as powers of ten).
func parseInt(v string, bytes bool) (int64, error) {
	v = strings.TrimSpace(v)
	if n, err := strconv.ParseInt(v, 10, 64); err == nil {
		return n, nil
	}
	if bytes {
		units := []struct {
			suffix string
			mul    int64
		}{{"KiB", 1 << 10}, {"MiB", 1 << 20}, {"GiB", 1 << 30}, {"KB", 1e3}, {"MB", 1e6}, {"GB", 1e9}, {"B", 1}}
		for _, u := range units {
			if num, ok := strings.CutSuffix(v, u.suffix); ok {
				n, err := strconv.ParseInt(strings.TrimSpace(num), 10, 64)
				if err != nil || n < 0 {
					break
				}
				return n * u.mul, nil
			}
		}
		return 0, fmt.Errorf("want a number of bytes like 1048576 or 1MiB, got %q", v)
	}
	return 0, fmt.Errorf("want a whole number, got %q", v)
}
