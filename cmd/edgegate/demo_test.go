package main

import (
	"bytes"
	"context"
	"errors"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nkeys"

	"github.com/edgegate/edgegate/appliance"
	"github.com/edgegate/edgegate/device"
	"github.com/edgegate/edgegate/internal/testlog"
	"github.com/edgegate/edgegate/internal/wait"
	"github.com/edgegate/edgegate/parser"
)

// TestSimulateAndTail is the README's demo: an appliance on its defaults
// (loopback ports), `simulate` against it and `tail` of the output.
func TestSimulateAndTail(t *testing.T) {
	cfg := loopbackConfig(t, "demo")
	a := runAppliance(t, cfg)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()

	var tailOut, tailErr lockedBuffer
	var wg sync.WaitGroup
	wg.Go(func() {
		app := newApp(nil, &tailOut, &tailErr)
		tctx, tcancel := context.WithTimeout(ctx, 30*time.Second)
		defer tcancel()
		if err := app.RunContext(tctx, []string{"edgegate", "tail", "--nats", a.NATSURL(), "--controller", "demo-000001", "--count", "5"}); err != nil {
			t.Errorf("tail: %v", err)
		}
	})
	// tail prints its subject on stderr once subscribed.
	wait.True(t, 10*time.Second, "tail subscribed", func() bool { return strings.Contains(tailErr.String(), "tail:") })

	var out, errOut bytes.Buffer
	app := newApp(nil, &out, &errOut)
	if err := app.RunContext(ctx, []string{"edgegate", "simulate", "--addr", a.DeviceAddr(), "--controllers", "3", "--messages", "200", "--prefix", "demo-", "--window", "32"}); err != nil {
		t.Fatalf("simulate: %v\n%s", err, out.String())
	}
	for _, want := range []string{"acked        600", "ack order    ok", "throughput", "p99"} {
		if !strings.Contains(out.String(), want) {
			t.Errorf("simulate output lacks %q:\n%s", want, out.String())
		}
	}
	wg.Wait()
	lines := strings.Split(strings.TrimSpace(tailOut.String()), "\n")
	if len(lines) != 5 {
		t.Fatalf("tail printed %d lines, want 5:\n%s", len(lines), tailOut.String())
	}
	for i, l := range lines {
		if !strings.Contains(l, "demo-000001 seq="+string(rune('1'+i))+" ") {
			t.Errorf("tail line %d: %q", i, l)
		}
	}
}

// lockedBuffer collects log output from several goroutines.
type lockedBuffer = testlog.Buffer

// TestStatus: `status` lists the appliance's socket and parser pool and,
// while a handler holds a batch, the controller in flight with its lease.
func TestStatus(t *testing.T) {
	hold := make(chan struct{})
	cfg := loopbackConfig(t, "stat")
	cfg.NATS.JetStream = false
	cfg.Parser.Workers = 3
	cfg.Handler = parser.HandlerFunc(func(ctx context.Context, m *parser.Message) error {
		select {
		case <-hold:
		case <-ctx.Done():
		}
		return nil
	})
	a := runAppliance(t, cfg)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	dev, err := device.Dial(ctx, device.Config{Addrs: []string{a.DeviceAddr()}, ID: "held-1"})
	if err != nil {
		t.Fatal(err)
	}
	defer dev.Close()
	dev.Send(ctx, []byte("x"))
	wait.True(t, 10*time.Second, "held-1's batch in flight", func() bool { return a.SocketStats().InFlight > 0 })
	var out bytes.Buffer
	app := newApp(nil, &out, &out)
	if err := app.RunContext(ctx, []string{"edgegate", "status", "--nats", a.NATSURL()}); err != nil {
		t.Fatal(err)
	}
	close(hold)
	for _, want := range []string{"stat", "parser", "3 (2/1)", "socket", "held-1", "running", "LAST HEARTBEAT"} {
		if !strings.Contains(out.String(), want) {
			t.Errorf("status output lacks %q:\n%s", want, out.String())
		}
	}
}

// TestStatusWithCredentials: status reaches an appliance whose client port
// requires a user or an nkey; a refused password is not echoed.
func TestStatusWithCredentials(t *testing.T) {
	user, _ := nkeys.CreateUser()
	pub, _ := user.PublicKey()
	seed, _ := user.Seed()
	seedFile := filepath.Join(t.TempDir(), "user.nk")
	if err := os.WriteFile(seedFile, seed, 0o600); err != nil {
		t.Fatal(err)
	}
	cfg := loopbackConfig(t, "auth")
	cfg.NATS.JetStream = false
	cfg.NATS.User, cfg.NATS.Password = "ops", "0ps-pass"
	cfg.NATS.NKeys = []string{pub}
	a := runAppliance(t, cfg)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	withUser := strings.Replace(a.NATSURL(), "nats://", "nats://ops:0ps-pass@", 1)
	passwordFile := filepath.Join(t.TempDir(), "password")
	if err := os.WriteFile(passwordFile, []byte("0ps-pass\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	for name, args := range map[string][]string{
		"password":      {"--nats", withUser},
		"password file": {"--nats", strings.Replace(a.NATSURL(), "nats://", "nats://ops@", 1), "--password-file", passwordFile},
		"nkey":          {"--nats", a.NATSURL(), "--nkey", seedFile},
	} {
		// Under load the first answers may miss the short collection
		// window: ask again until the socket answers. An error other than
		// a missed window is reported below.
		var out bytes.Buffer
		var err error
		wait.Until(20*time.Second, func() error {
			out.Reset()
			err = newApp(nil, &out, &out).RunContext(ctx, append([]string{"edgegate", "status", "--wait", "300ms"}, args...))
			if err == nil && !strings.Contains(out.String(), "socket") || err != nil && strings.Contains(err.Error(), "no appliance answered") {
				return errors.New("the socket missed the window")
			}
			return nil
		})
		if err != nil {
			t.Errorf("%s: %v", name, err)
		} else if !strings.Contains(out.String(), "socket") {
			t.Errorf("%s: status output lacks the socket:\n%s", name, out.String())
		}
	}
	wrong := strings.Replace(a.NATSURL(), "nats://", "nats://ops:guessed-it@", 1)
	var out bytes.Buffer
	err := newApp(nil, &out, &out).RunContext(ctx, []string{"edgegate", "status", "--nats", wrong})
	if err == nil || !strings.Contains(strings.ToLower(err.Error()), "authorization") {
		t.Fatalf("status with a wrong password: %v, want an authorization error", err)
	}
	if strings.Contains(err.Error(), "guessed-it") {
		t.Errorf("the error shows the password: %v", err)
	}
	// tail says where it reads from, without the password.
	tctx, tcancel := context.WithTimeout(ctx, 500*time.Millisecond)
	defer tcancel()
	out.Reset()
	if err := newApp(nil, &out, &out).RunContext(tctx, []string{"edgegate", "tail", "--nats", withUser}); err != nil {
		t.Errorf("tail: %v", err)
	}
	if !strings.Contains(out.String(), "tail: ") || strings.Contains(out.String(), "0ps-pass") {
		t.Errorf("tail's first line shows the password, or is missing:\n%s", out.String())
	}
}

// loopbackConfig is an appliance on its defaults with every listener on a
// free loopback port (HTTP off) and no logs.
func loopbackConfig(t *testing.T, name string) appliance.Config {
	cfg := appliance.DefaultConfig()
	cfg.Name = name
	cfg.DataDir = t.TempDir()
	cfg.Devices.Listen = "127.0.0.1:0"
	cfg.NATS.Listen = "127.0.0.1:0"
	cfg.HTTP.Listen = ""
	cfg.Logger = slog.New(slog.DiscardHandler)
	return cfg
}

// runAppliance runs an appliance until the test ends and returns it ready.
func runAppliance(t *testing.T, cfg appliance.Config) *appliance.Appliance {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	a, err := appliance.New(ctx, cfg)
	if err != nil {
		cancel()
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- a.Run(ctx) }()
	t.Cleanup(func() { cancel(); <-done })
	<-a.Ready()
	return a
}
