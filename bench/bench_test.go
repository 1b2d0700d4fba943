package bench

import (
	"bytes"
	"context"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"testing"
	"time"

	"github.com/edgegate/edgegate/internal/redistest"
)

func TestEdgegateInProcess(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	w := Workload{Controllers: 3, Messages: 200, Size: 64, Window: 32, Workers: 4}
	r, err := Edgegate(ctx, w, EdgegateConfig{Handler: "discard"})
	if err != nil {
		t.Fatal(err)
	}
	if r.Messages != 600 || r.Rate <= 0 || r.P50 <= 0 || r.P99 < r.P50 || r.Scenario != "edgegate/memory/discard" {
		t.Fatalf("result %+v", r)
	}
	if r.RSS <= 0 {
		t.Errorf("RSS %d not measured", r.RSS)
	}
	// Every ACK reached the device's socket before its reader had it (the
	// kernel's times: 64-bit Linux).
	kernel := runtime.GOOS == "linux" && (runtime.GOARCH == "amd64" || runtime.GOARCH == "arm64")
	if kernel && r.SockP50 <= 0 || r.SockP50 > r.P50 || r.SockP99 > r.P99 {
		t.Errorf("at the socket p50 %v p99 %v, want measured and at most the reader's p50 %v p99 %v", r.SockP50, r.SockP99, r.P50, r.P99)
	}
}

func TestSeedScheme(t *testing.T) {
	rs := redistest.Start(t)
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	for _, c := range []int{1, 5} {
		r, err := Seed(ctx, Workload{Controllers: c, Messages: 100, Size: 64, Window: 8, Workers: 4}, rs.URL())
		if err != nil {
			t.Fatal(err)
		}
		if r.Messages != int64(c*100) || r.Rate <= 0 || r.P50 <= 0 {
			t.Fatalf("%d controllers: result %+v", c, r)
		}
	}
}

func TestCeilings(t *testing.T) {
	rs := redistest.Start(t)
	ctx := context.Background()
	r, err := NATSCeiling(ctx, 64, 20000)
	if err != nil || r.Messages != 20000 || r.Rate <= 0 {
		t.Fatalf("NATS ceiling %+v, %v", r, err)
	}
	r, err = RedisCeiling(ctx, rs.URL(), 2, 200*time.Millisecond)
	if err != nil || r.Messages <= 0 || r.Rate <= 0 {
		t.Fatalf("Redis ceiling %+v, %v", r, err)
	}
	// Every record stored (JetStreamCeiling checks the stream).
	r, err = JetStreamCeiling(ctx, Workload{Controllers: 7, Messages: 300, Size: 64, Workers: 4})
	if err != nil || r.Messages != 2100 || r.Rate <= 0 || r.Controllers != 7 {
		t.Fatalf("JetStream ceiling %+v, %v", r, err)
	}
}

// TestRunReport: a small complete run summarizes every scenario with its
// spread, computes the ratios, and writes the text, JSON-able report and
// both chart formats.
func TestRunReport(t *testing.T) {
	if testing.Short() {
		t.Skip("runs every scenario of the bench")
	}
	rs := redistest.Start(t)
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	var progress []string
	rep, err := Run(ctx, Options{Controllers: []int{1, 4}, Messages: 400, Runs: 2, Workers: 4, Redis: rs.URL(),
		Progress: func(s string) { progress = append(progress, s) }})
	if err != nil {
		t.Fatal(err)
	}
	if len(progress) != len(rep.Results) || len(rep.Results) == 0 {
		t.Fatalf("%d progress lines for %d results", len(progress), len(rep.Results))
	}
	want := map[string]bool{}
	for _, s := range rep.Summaries {
		if s.Runs != 2 || s.RateMin > s.Rate || s.Rate > s.RateMax {
			t.Errorf("summary %+v", s)
		}
		want[s.Scenario] = true
	}
	for _, s := range []string{"ceiling/nats-pubsub", "ceiling/jetstream-async", "edgegate/memory/discard", "edgegate/redis/publish-js", "seed/redis-lock-per-message", "peer/pcgroups"} {
		if !want[s] {
			t.Errorf("no summary of %s", s)
		}
	}
	if len(rep.Ratios) != 2*8 {
		t.Errorf("%d ratios, want 8 per controller count: %+v", len(rep.Ratios), rep.Ratios)
	}
	var text bytes.Buffer
	rep.WriteText(&text)
	if !strings.Contains(text.String(), "edgegate/redis/discard") || !strings.Contains(text.String(), "×") {
		t.Errorf("text report:\n%s", text.String())
	}
	dir := t.TempDir()
	for _, name := range []string{"chart.svg", "chart.png"} {
		p := filepath.Join(dir, name)
		if err := rep.WriteChart(p); err != nil {
			t.Fatal(err)
		}
		if fi, err := os.Stat(p); err != nil || fi.Size() < 1000 {
			t.Errorf("%s: %v, %d bytes", name, err, fi.Size())
		}
	}
}
