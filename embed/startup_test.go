package embed

import (
	"context"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"
	"unicode"
)

// TestListenerInUseIsFatal: a client or route port that is taken is
// nats-server's fatal error, returned as it reports it (naming the address
// and the cause), not a timeout. The ready timeout is long so that a wait
// for it would show as a timeout message.
func TestListenerInUseIsFatal(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	for name, cfg := range map[string]Config{
		"client": {Listen: ln.Addr().String()},
		"route":  {Cluster: ClusterConfig{Listen: ln.Addr().String()}},
	} {
		t.Run(name, func(t *testing.T) {
			cfg.ReadyTimeout = 10 * time.Minute
			_, err := New(cfg)
			if err == nil {
				t.Fatal("started on a port in use")
			}
			for _, want := range []string{"address already in use", ln.Addr().String()[strings.LastIndex(ln.Addr().String(), ":")+1:]} {
				if !strings.Contains(err.Error(), want) {
					t.Errorf("error %q lacks %q", err, want)
				}
			}
			if strings.Contains(err.Error(), "not ready within") {
				t.Errorf("error %q is the timeout, not the cause", err)
			}
		})
	}
}

// TestJetStreamStoreUnusableIsFatal: a store directory JetStream cannot
// create its files in (a regular file where its directory should be) is
// returned as nats-server's fatal error, not a timeout.
func TestJetStreamStoreUnusableIsFatal(t *testing.T) {
	dir := t.TempDir()
	if err := os.WriteFile(filepath.Join(dir, "jetstream"), []byte("not a directory"), 0o600); err != nil {
		t.Fatal(err)
	}
	_, err := New(Config{JetStream: true, StoreDir: dir, ReadyTimeout: 10 * time.Minute})
	if err == nil {
		t.Fatal("started with an unusable JetStream store")
	}
	for _, want := range []string{"JetStream", "not a directory", filepath.Join(dir, "jetstream")} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("error %q lacks %q", err, want)
		}
	}
}

// TestNATSLogLines: a JetStream server logs no line without a word (the
// banner's art, blank lines, rulers) and no error at a normal start.
func TestNATSLogLines(t *testing.T) {
	rec := &recorder{}
	s := start(t, Config{Listen: "0.0.0.0:0", JetStream: true, StoreDir: t.TempDir(), Logger: slog.New(rec)})
	s.Shutdown()
	lines := rec.lines()
	if len(lines) == 0 {
		t.Fatal("nats-server logged nothing")
	}
	for _, l := range lines {
		if !strings.ContainsFunc(l.msg, func(r rune) bool { return unicode.IsLetter(r) || unicode.IsDigit(r) }) ||
			strings.HasPrefix(strings.TrimSpace(l.msg), "---") || strings.Contains(l.msg, "docs.nats.io") {
			t.Errorf("banner line logged: %q", l.msg)
		}
		if l.level >= slog.LevelError {
			t.Errorf("error at a normal start: %q", l.msg)
		}
	}
}

func TestNATSLine(t *testing.T) {
	for _, tt := range []struct {
		level  slog.Level
		format string
		want   slog.Level
		keep   bool
	}{
		{slog.LevelInfo, "    _ ___ _____ ___ _____ ___ ___   _   __  __", 0, false},
		{slog.LevelInfo, " _ | | __|_   _/ __|_   _| _ \\ __| /_\\ |  \\/  |", 0, false},
		{slog.LevelInfo, "", 0, false},
		{slog.LevelInfo, "         https://docs.nats.io/jetstream", 0, false},
		{slog.LevelInfo, "---------------- JETSTREAM ----------------", 0, false},
		{slog.LevelInfo, "-------------------------------------------", 0, false},
		{slog.LevelInfo, "  Max Memory:      %s", slog.LevelInfo, true},
		{slog.LevelInfo, "Listening for client connections on %s", slog.LevelInfo, true},
		{slog.LevelError, "Address %q can not be resolved properly", slog.LevelDebug, true},
		{slog.LevelError, "Error listening on port: %s, %q", slog.LevelError, true},
	} {
		got, keep := natsLine(tt.level, tt.format)
		if keep != tt.keep || keep && got != tt.want {
			t.Errorf("natsLine(%v, %q) = %v, %v; want %v, %v", tt.level, tt.format, got, keep, tt.want, tt.keep)
		}
	}
}

// recorder is a slog.Handler that keeps every record's level and message.
type recorder struct {
	mu  sync.Mutex
	got []logged
}

type logged struct {
	level slog.Level
	msg   string
}

func (r *recorder) Enabled(context.Context, slog.Level) bool { return true }
func (r *recorder) Handle(_ context.Context, rec slog.Record) error {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.got = append(r.got, logged{rec.Level, rec.Message})
	return nil
}
func (r *recorder) WithAttrs([]slog.Attr) slog.Handler { return r }
func (r *recorder) WithGroup(string) slog.Handler      { return r }

func (r *recorder) lines() []logged {
	r.mu.Lock()
	defer r.mu.Unlock()
	return append([]logged(nil), r.got...)
}
