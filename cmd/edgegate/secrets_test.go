package main

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/edgegate/edgegate/appliance"
)

// secretFile writes a secret file named name into dir.
func secretFile(t *testing.T, dir, name, content string) string {
	t.Helper()
	p := filepath.Join(dir, name)
	if err := os.WriteFile(p, []byte(content), 0o600); err != nil {
		t.Fatal(err)
	}
	return p
}

// TestSecretFiles: lease.redis, nats.password and nats.cluster.password
// can be read from files, given as paths (a flag, a variable, the YAML
// file) or as the names of systemd credentials in $CREDENTIALS_DIRECTORY.
// A final newline is not part of the secret.
func TestSecretFiles(t *testing.T) {
	dir := t.TempDir()
	creds := t.TempDir()
	redis := secretFile(t, dir, "redis", "redis://:r3dis-pw@127.0.0.1:6379/0\n")
	secretFile(t, creds, "nats-password", "n4ts-pw\r\n")
	route := secretFile(t, dir, "route", "r0ute-pw")
	t.Setenv("CREDENTIALS_DIRECTORY", creds)
	t.Setenv("EDGEGATE_NATS_PASSWORD_FILE", "nats-password")
	cfgFile := writeFile(t, "nats:\n  user: client\n  cluster:\n    user: route\n    password_file: "+route+"\n")
	got, err := parse(t, "--config", cfgFile, "--lease.redis_file", redis)
	if err != nil {
		t.Fatal(err)
	}
	for _, c := range []struct{ key, got, want string }{
		{"lease.redis", got.Lease.Redis, "redis://:r3dis-pw@127.0.0.1:6379/0"},
		{"nats.password", got.NATS.Password, "n4ts-pw"},
		{"nats.cluster.password", got.NATS.Cluster.Password, "r0ute-pw"},
		{"lease.redis_file", got.Lease.RedisFile, ""},
		{"nats.password_file", got.NATS.PasswordFile, ""},
		{"nats.cluster.password_file", got.NATS.Cluster.PasswordFile, ""},
	} {
		if c.got != c.want {
			t.Errorf("%s = %q, want %q", c.key, c.got, c.want)
		}
	}
}

// TestBadSecretFiles: a secret given twice, a credential name without
// $CREDENTIALS_DIRECTORY, a missing, empty or multi-line file are errors
// naming the setting, and no error shows a secret.
func TestBadSecretFiles(t *testing.T) {
	const secret = "s3cret-value"
	dir := t.TempDir()
	good := secretFile(t, dir, "good", "redis://:"+secret+"@127.0.0.1:6379/0\n")
	tests := []struct {
		name      string
		env, args []string
		want      []string
	}{
		{"both set", nil, []string{"--lease.redis", "redis://:" + secret + "@127.0.0.1:6379/0", "--lease.redis_file", good},
			[]string{"lease.redis and lease.redis_file are both set"}},
		{"both set, one from the environment", []string{"EDGEGATE_NATS_PASSWORD=" + secret}, []string{"--nats.user", "u", "--nats.password_file", good},
			[]string{"nats.password and nats.password_file are both set"}},
		{"credential without CREDENTIALS_DIRECTORY", []string{"CREDENTIALS_DIRECTORY="}, []string{"--lease.redis_file", "redis-url"},
			[]string{"lease.redis_file", "CREDENTIALS_DIRECTORY", "LoadCredential=redis-url:"}},
		{"credential not loaded", []string{"CREDENTIALS_DIRECTORY=" + dir}, []string{"--nats.cluster.user", "r", "--nats.cluster.password_file", "route"},
			[]string{"nats.cluster.password_file", filepath.Join(dir, "route")}},
		{"missing file", nil, []string{"--lease.redis_file", filepath.Join(dir, "nonexistent")},
			[]string{"lease.redis_file", filepath.Join(dir, "nonexistent")}},
		{"empty file", nil, []string{"--lease.redis_file", secretFile(t, dir, "empty", "\n")},
			[]string{"lease.redis_file", "empty"}},
		{"two lines", nil, []string{"--lease.redis_file", secretFile(t, dir, "two", secret+"\n"+secret+"\n")},
			[]string{"lease.redis_file", "more than one line"}},
		{"bad URL from a file", nil, []string{"--lease.redis_file", secretFile(t, dir, "bad-url", "redis://:"+secret+"@127.0.0.1:6379/0?dial_timeout=soon")},
			[]string{"lease.redis"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			for _, kv := range tt.env {
				k, v, _ := strings.Cut(kv, "=")
				t.Setenv(k, v)
			}
			_, err := parse(t, tt.args...)
			if err == nil {
				t.Fatal("no error")
			}
			for _, w := range tt.want {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("error %q lacks %q", err, w)
				}
			}
			if strings.Contains(err.Error(), secret) {
				t.Errorf("error %q shows the secret", err)
			}
		})
	}
}

// TestSecretFilesGoAPI: a Config filled in Go with a *_file setting
// validates as if the secret were set (Validate reads the file, on its own
// copy), and ReadSecretFiles sets it.
func TestSecretFilesGoAPI(t *testing.T) {
	pw := secretFile(t, t.TempDir(), "pw", "n4ts-pw\n")
	cfg := appliance.DefaultConfig()
	cfg.NATS.User, cfg.NATS.PasswordFile = "client", pw
	if err := cfg.Validate(); err != nil {
		t.Fatalf("Validate: %v", err)
	}
	if cfg.NATS.Password != "" || cfg.NATS.PasswordFile != pw {
		t.Fatalf("Validate changed the configuration: %+v", cfg.NATS)
	}
	if err := cfg.ReadSecretFiles(); err != nil || cfg.NATS.Password != "n4ts-pw" || cfg.NATS.PasswordFile != "" {
		t.Fatalf("ReadSecretFiles: %v, nats %+v", err, cfg.NATS)
	}
	cfg.NATS.PasswordFile = pw
	if err := cfg.Validate(); err == nil || !strings.Contains(err.Error(), "both set") {
		t.Fatalf("Validate with nats.password and nats.password_file: %v, want an error", err)
	}
}
