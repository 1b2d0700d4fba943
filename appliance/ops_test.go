package appliance_test

import (
	"context"
	"io"
	"log/slog"
	"net"
	"net/http"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/edgegate/edgegate/appliance"
	"github.com/edgegate/edgegate/device"
	"github.com/edgegate/edgegate/internal/wait"
)

// TestSystemdNotify: with a NOTIFY_SOCKET the appliance says READY=1 once
// it serves, feeds the watchdog while healthy, and says STOPPING=1.
func TestSystemdNotify(t *testing.T) {
	path := filepath.Join(t.TempDir(), "notify.sock")
	conn, err := net.ListenUnixgram("unixgram", &net.UnixAddr{Name: path, Net: "unixgram"})
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	t.Setenv("NOTIFY_SOCKET", path)
	t.Setenv("WATCHDOG_USEC", "300000") // 300ms: a ping every 100ms
	got := make(chan string, 100)
	go func() {
		buf := make([]byte, 4096)
		for {
			n, err := conn.Read(buf)
			if err != nil {
				close(got)
				return
			}
			got <- string(buf[:n])
		}
	}()
	cfg := testConfig(t, "notify")
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	a, err := appliance.New(ctx, cfg)
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- a.Run(ctx) }()
	expect := func(want string) {
		t.Helper()
		deadline := time.After(5 * time.Second)
		for {
			select {
			case m := <-got:
				if strings.Contains(m, want) {
					return
				}
			case <-deadline:
				t.Fatalf("no %q notification within 5s", want)
			}
		}
	}
	expect("READY=1")
	expect("WATCHDOG=1")
	expect("WATCHDOG=1")
	cancel()
	expect("STOPPING=1")
	if err := <-done; err != nil {
		t.Fatal(err)
	}
}

// TestHTTPEndpoints: /healthz, /readyz and /metrics on the HTTP listener;
// the metrics count what devices did.
func TestHTTPEndpoints(t *testing.T) {
	cfg := testConfig(t, "http")
	cfg.HTTP.Listen = "127.0.0.1:0"
	a := start(t, cfg)
	c := dialDevice(t, device.Config{Addrs: []string{a.DeviceAddr()}, ID: "metered"})
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := sendAll(ctx, c, "metered", 25); err != nil {
		t.Fatal(err)
	}
	get := func(path string) (int, string) {
		t.Helper()
		resp, err := http.Get("http://" + a.HTTPAddr() + path)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		return resp.StatusCode, string(b)
	}
	if code, _ := get("/healthz"); code != 200 {
		t.Errorf("/healthz: %d", code)
	}
	if code, body := get("/readyz"); code != 200 {
		t.Errorf("/readyz: %d %s", code, body)
	}
	_, metrics := get("/metrics")
	for _, want := range []string{
		"edgegate_messages_received_total 25", "edgegate_messages_acked_total 25",
		"edgegate_devices_connected 1", "edgegate_parser_messages_total 25",
		"edgegate_batch_size_count", "edgegate_handler_seconds_count 25",
		"edgegate_ack_latency_seconds_bucket", "edgegate_nats_ready 1", "edgegate_lease_store_up 1",
		"edgegate_parser_workers 8", "edgegate_ready 1", "go_goroutines",
	} {
		if !strings.Contains(metrics, want) {
			t.Errorf("/metrics lacks %q", want)
		}
	}
	// Profiles are served only when http.pprof asks for them.
	if code, _ := get("/debug/pprof/"); code != http.StatusNotFound {
		t.Errorf("/debug/pprof/ without http.pprof: %d, want 404", code)
	}
	pcfg := testConfig(t, "http-pprof")
	pcfg.HTTP.Listen, pcfg.HTTP.Pprof = "127.0.0.1:0", true
	a = start(t, pcfg)
	if code, body := get("/debug/pprof/goroutine?debug=1"); code != 200 || !strings.Contains(body, "goroutine profile") {
		t.Errorf("/debug/pprof/goroutine with http.pprof: %d %.80q", code, body)
	}
}

// TestReload: a reloaded configuration changes the log level live; a bad
// one is refused and the running configuration stays.
func TestReload(t *testing.T) {
	var logs lockedBuffer
	lv := new(slog.LevelVar)
	cfg := testConfig(t, "reload")
	cfg.LogLevel = lv
	cfg.Logger = slog.New(slog.NewTextHandler(&logs, &slog.HandlerOptions{Level: lv}))
	reload := make(chan appliance.Config, 1)
	cfg.Reload = reload
	start(t, cfg)

	bad := cfg
	bad.Devices.Ack = "sometimes"
	reload <- bad
	wait.True(t, 5*time.Second, "bad reload refused", func() bool { return strings.Contains(logs.String(), "reload refused") })

	next := cfg
	next.Log.Level = "debug"
	next.Parser.Batch = 7
	reload <- next
	wait.True(t, 5*time.Second, "log level applied", func() bool { return lv.Level() == slog.LevelDebug })
	wait.True(t, 5*time.Second, "restart-only change named", func() bool {
		return strings.Contains(logs.String(), "take effect at the next restart") && strings.Contains(logs.String(), "section=parser")
	})
}
