package main

import (
	"bytes"
	"context"
	"errors"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats-server/v2/server"

	"github.com/edgegate/edgegate/appliance"
)

var errRecorded = errors.New("recorded")

// parse runs `edgegate run args...` and returns the configuration run got.
func parse(t *testing.T, args ...string) (appliance.Config, error) {
	t.Helper()
	var got appliance.Config
	var out, errOut bytes.Buffer
	app := newApp(func(_ context.Context, c appliance.Config) error { got = c; return errRecorded }, &out, &errOut)
	err := app.Run(append([]string{"edgegate", "run"}, args...))
	if errors.Is(err, errRecorded) {
		return got, nil
	}
	if err == nil {
		t.Fatalf("run did not reach the appliance and returned no error")
	}
	return got, err
}

func writeFile(t *testing.T, text string) string {
	t.Helper()
	p := filepath.Join(t.TempDir(), "edgegate.yaml")
	if err := os.WriteFile(p, []byte(text), 0o600); err != nil {
		t.Fatal(err)
	}
	return p
}

func TestPrecedence(t *testing.T) {
	file := writeFile(t, `
name: from-file
devices:
  listen: 127.0.0.1:1111
  hello_timeout: 2s
  memory: 64MiB
nats:
  jetstream: false
  cluster:
    peers: [a:6222, b:6222]
    user: route
    password: r0ute-secret
lease:
  redis: redis://file:6379/0
  ttl: 7s
parser:
  workers: 3
  exec: [python3, parse.py]
`)
	def := appliance.DefaultConfig()
	tests := []struct {
		name string
		env  map[string]string
		args []string
		want func(c *appliance.Config)
	}{
		{"defaults only", nil, nil, func(c *appliance.Config) {}},
		{"file over defaults", nil, []string{"--config", file}, func(c *appliance.Config) {
			c.Name, c.Devices.Listen, c.Devices.HelloTimeout, c.Devices.Memory = "from-file", "127.0.0.1:1111", 2*time.Second, 64<<20
			c.NATS.JetStream, c.NATS.Cluster.Peers = false, []string{"a:6222", "b:6222"}
			c.NATS.Cluster.User, c.NATS.Cluster.Password = "route", "r0ute-secret"
			c.Lease.Redis, c.Lease.TTL, c.Parser.Workers, c.Parser.Exec = "redis://file:6379/0", 7*time.Second, 3, []string{"python3", "parse.py"}
		}},
		{"env over file", map[string]string{
			"EDGEGATE_CONFIG": file, "EDGEGATE_NAME": "from-env", "EDGEGATE_LEASE_TTL": "9s",
			"EDGEGATE_NATS_CLUSTER_PEERS": "x:1,y:2,z:3", "EDGEGATE_NATS_JETSTREAM": "true", "EDGEGATE_PARSER_WORKERS": "5",
		}, nil, func(c *appliance.Config) {
			c.Name, c.Devices.Listen, c.Devices.HelloTimeout, c.Devices.Memory = "from-env", "127.0.0.1:1111", 2*time.Second, 64<<20
			c.NATS.JetStream, c.NATS.Cluster.Peers = true, []string{"x:1", "y:2", "z:3"}
			c.NATS.Cluster.User, c.NATS.Cluster.Password = "route", "r0ute-secret"
			c.Lease.Redis, c.Lease.TTL, c.Parser.Workers, c.Parser.Exec = "redis://file:6379/0", 9*time.Second, 5, []string{"python3", "parse.py"}
		}},
		{"flag over env and file", map[string]string{"EDGEGATE_NAME": "from-env", "EDGEGATE_LEASE_TTL": "9s"},
			[]string{"--config", file, "--name", "from-flag", "--nats.cluster.peers", "p:1", "--nats.cluster.peers", "q:2", "--parser.workers=0", "--lease.ttl", "11s", "--devices.max_frame", "2KiB"},
			func(c *appliance.Config) {
				c.Name, c.Devices.Listen, c.Devices.HelloTimeout, c.Devices.Memory, c.Devices.MaxFrame = "from-flag", "127.0.0.1:1111", 2*time.Second, 64<<20, 2048
				c.NATS.JetStream, c.NATS.Cluster.Peers = false, []string{"p:1", "q:2"}
				c.NATS.Cluster.User, c.NATS.Cluster.Password = "route", "r0ute-secret"
				c.Lease.Redis, c.Lease.TTL, c.Parser.Workers, c.Parser.Exec = "redis://file:6379/0", 11*time.Second, 0, []string{"python3", "parse.py"}
			}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			for k, v := range tt.env {
				t.Setenv(k, v)
			}
			got, err := parse(t, tt.args...)
			if err != nil {
				t.Fatalf("parse: %v", err)
			}
			want := def
			tt.want(&want)
			got.Logger, got.LogLevel, got.Reload = nil, nil, nil
			if !reflect.DeepEqual(got, want) {
				t.Errorf("config:\n got %+v\nwant %+v", got, want)
			}
		})
	}
}

func TestBadConfig(t *testing.T) {
	tests := []struct {
		name string
		file string
		args []string
		want string
	}{
		{"unknown key", "devices:\n  lisen: 1.2.3.4:5\n", nil, "unknown setting devices.lisen (did you mean devices.listen?)"},
		{"unknown section", "redis:\n  url: x\n", nil, "unknown setting redis.url"},
		{"bad value in file", "devices:\n  ack: maybe\n", nil, "devices.ack"},
		{"bad duration", "lease:\n  ttl: five\n", nil, "lease.ttl (line 2)"},
		{"bad bool", "nats:\n  jetstream: yes please\n", nil, "nats.jetstream"},
		{"bad number flag", "", []string{"--parser.workers", "many"}, "parser.workers"},
		{"bad address", "", []string{"--devices.listen", "nohost"}, "devices.listen"},
		{"heartbeat too slow", "", []string{"--lease.heartbeat", "4s"}, "lease.heartbeat"},
		{"cluster without redis", "", []string{"--nats.cluster.listen", "127.0.0.1:6222"}, "lease.redis"},
		{"not yaml", "::: [", nil, "yaml"},
		{"password without user", "nats:\n  password: x\n", nil, "nats.password"},
		{"not an nkey", "", []string{"--nats.nkeys", "SUAJ"}, "nats.nkeys[0]"},
		{"route user without password", "", []string{"--nats.cluster.user", "r"}, "nats.cluster.user"},
		{"client port on the network without authentication", "", []string{"--nats.listen", "0.0.0.0:4222"}, "nats.user"},
		{"peers without route credentials", "lease:\n  redis: redis://127.0.0.1:6379/0\n", []string{"--nats.cluster.listen", "127.0.0.1:6222", "--nats.cluster.peers", "10.0.0.2:6222"}, "nats.cluster.user"},
		{"route TLS on the system roots", "", []string{"--nats.cluster.tls_cert", "/etc/r.pem", "--nats.cluster.tls_key", "/etc/r.key"}, "nats.cluster.tls_ca"},
		{"client CA without certificate", "", []string{"--nats.tls_client_ca", "/etc/ca.pem"}, "nats.tls_client_ca"},
		{"route key without certificate", "", []string{"--nats.cluster.tls_key", "/etc/k.pem"}, "nats.cluster.tls_cert"},
		{"redis TLS without rediss", "", []string{"--lease.redis", "redis://127.0.0.1:6379", "--lease.redis_tls_ca", "/etc/ca.pem"}, "lease.redis_tls_ca"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			args := tt.args
			if tt.file != "" {
				args = append([]string{"--config", writeFile(t, tt.file)}, args...)
			}
			_, err := parse(t, args...)
			if err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Fatalf("error %v, want one containing %q", err, tt.want)
			}
		})
	}
	if _, err := parse(t, "--config", "/nonexistent/edgegate.yaml"); err == nil || !strings.Contains(err.Error(), "/nonexistent/edgegate.yaml") {
		t.Fatalf("missing file: error %v, want one naming the file", err)
	}
}

func TestEverySettingHasAFlagAndAVariable(t *testing.T) {
	names := map[string]bool{}
	for _, f := range configFlags() {
		names[f.Names()[0]] = true
	}
	for _, s := range settings {
		if !names[s.key] {
			t.Errorf("setting %s has no flag", s.key)
		}
		if want := "EDGEGATE_" + strings.ToUpper(strings.ReplaceAll(s.key, ".", "_")); envName(s.key) != want {
			t.Errorf("setting %s: variable %s, want %s", s.key, envName(s.key), want)
		}
	}
}

func TestVersion(t *testing.T) {
	var out bytes.Buffer
	app := newApp(nil, &out, &out)
	if err := app.Run([]string{"edgegate", "version"}); err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(out.String(), "nats-server "+server.VERSION) || !strings.HasPrefix(out.String(), "edgegate ") {
		t.Fatalf("version output %q", out.String())
	}
}

// TestReadmeListsEverySetting keeps the README's configuration reference
// in step with the settings table.
func TestReadmeListsEverySetting(t *testing.T) {
	readme, err := os.ReadFile("../../docs/configuration.md")
	if err != nil {
		t.Fatal(err)
	}
	for _, s := range settings {
		if row := "| `" + s.key + "` | `" + envName(s.key) + "` |"; !strings.Contains(string(readme), row) {
			t.Errorf("docs/configuration.md lacks the row of %s (%q)", s.key, row)
		}
	}
}

// TestShippedConfigFile: the configuration file the package installs
// loads, and says what the defaults say.
func TestShippedConfigFile(t *testing.T) {
	got, err := parse(t, "--config", "../../packaging/deb/edgegate.yaml")
	if err != nil {
		t.Fatalf("the shipped edgegate.yaml does not load: %v", err)
	}
	want := appliance.DefaultConfig()
	want.DataDir = "/var/lib/edgegate"
	want.Devices.Tokens = "/etc/edgegate/devices.tokens" // devices authenticate
	got.Logger, got.LogLevel, got.Reload = nil, nil, nil
	if !reflect.DeepEqual(got, want) {
		t.Errorf("shipped config:\n got %+v\nwant %+v", got, want)
	}
	// Uncommenting any key with its shown value keeps it loading.
	b, _ := os.ReadFile("../../packaging/deb/edgegate.yaml")
	var lines []string
	for _, l := range strings.Split(string(b), "\n") {
		if i := strings.Index(l, "# "); i > 0 && strings.TrimSpace(l[:i]) == "" && strings.Contains(l, ":") && !strings.HasPrefix(strings.TrimSpace(l), "# name:") {
			l = l[:i] + l[i+2:]
		}
		lines = append(lines, l)
	}
	if _, err := parse(t, "--config", writeFile(t, strings.Join(lines, "\n"))); err != nil {
		t.Errorf("the shipped file with every key uncommented does not load: %v", err)
	}
}
