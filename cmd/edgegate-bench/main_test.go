package main

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"go.uber.org/goleak"

	"github.com/edgegate/edgegate/bench"
)

// TestBenchCommand: edgegate-bench runs the appliance under test as a
// child process (with the GOMAXPROCS asked for), reads its own latency
// and scheduler waits off its /metrics, prints the table, and writes the
// JSON report and the chart.
func TestBenchCommand(t *testing.T) {
	if testing.Short() {
		t.Skip("runs the edgegate binary")
	}
	dir := t.TempDir()
	jsonPath, chartPath := filepath.Join(dir, "bench.json"), filepath.Join(dir, "bench.svg")
	var out, errOut bytes.Buffer
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	err := newApp(&out, &errOut).RunContext(ctx, []string{"edgegate-bench", "--exe", edgegateBinary(t),
		"--controllers", "1,3", "--messages", "300", "--runs", "1", "--workers", "4", "--scenarios", "edgegate", "--redis", "", "--appliance-procs", "1",
		"--json", jsonPath, "--chart", chartPath})
	if err != nil {
		t.Fatalf("bench: %v\n%s", err, errOut.String())
	}
	if !strings.Contains(out.String(), "edgegate/memory/discard") || !strings.Contains(out.String(), "@50%-load") || !strings.Contains(out.String(), "GOMAXPROCS=1") {
		t.Errorf("table:\n%s", out.String())
	}
	b, err := os.ReadFile(jsonPath)
	if err != nil {
		t.Fatal(err)
	}
	var rep bench.Report
	if err := json.Unmarshal(b, &rep); err != nil {
		t.Fatal(err)
	}
	for _, r := range rep.Results {
		if r.Procs != 1 {
			t.Errorf("%s: the appliance ran with GOMAXPROCS %d, want 1", r.Scenario, r.Procs)
		}
	}
	for _, s := range rep.Summaries {
		// A child process: its CPU and memory are measured, and its own
		// share of the latency, which is within what the devices saw.
		if s.CPU < 0 || s.RSS <= 0 {
			t.Errorf("%s: CPU %.2f, RSS %d not measured", s.Scenario, s.CPU, s.RSS)
		}
		if s.OwnP50 <= 0 || s.OwnP99 < s.OwnP50 {
			t.Errorf("%s: own latency p50 %v, p99 %v not measured", s.Scenario, s.OwnP50, s.OwnP99)
		}
		if s.RunWait <= 0 || s.LockWaiters < 0 {
			t.Errorf("%s: the appliance's wait for a CPU %v, lock waiters %.2f not measured", s.Scenario, s.RunWait, s.LockWaiters)
		}
	}
	// 2 configurations × 2 counts, and 2 loads of each of the 2 load
	// handlers (publish, discard) at the count nearest 100 (3) and at the
	// smallest (1).
	loads := map[int]int{}
	for _, s := range rep.Summaries {
		if strings.Contains(s.Scenario, "-load") {
			loads[s.Controllers]++
		}
	}
	if len(rep.Summaries) != 12 || loads[1] != 4 || loads[3] != 4 {
		t.Errorf("%d summaries, loads measured at %v: want 12, four loads at 1 and at 3 controllers", len(rep.Summaries), loads)
	}
	if fi, err := os.Stat(chartPath); err != nil || fi.Size() < 1000 {
		t.Errorf("chart: %v", err)
	}
	if err := newApp(&out, &errOut).RunContext(ctx, []string{"edgegate-bench", "--controllers", "0"}); err == nil {
		t.Error("--controllers 0 accepted")
	}
}

// TestBenchWithoutLoads: --loads "" measures no paced load, only the
// saturated figures.
func TestBenchWithoutLoads(t *testing.T) {
	if testing.Short() {
		t.Skip("runs the edgegate binary")
	}
	var out, errOut bytes.Buffer
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	err := newApp(&out, &errOut).RunContext(ctx, []string{"edgegate-bench", "--exe", edgegateBinary(t),
		"--controllers", "1", "--messages", "100", "--runs", "1", "--workers", "2", "--scenarios", "edgegate", "--redis", "", "--loads", ""})
	if err != nil {
		t.Fatalf("bench: %v\n%s", err, errOut.String())
	}
	if strings.Contains(out.String(), "-load") || !strings.Contains(out.String(), "edgegate/memory/discard") {
		t.Errorf("with --loads \"\", want the saturated runs only; table:\n%s", out.String())
	}
}

// TestFindEdgegate: without --exe the appliance under test is the
// edgegate beside edgegate-bench, else the one on the PATH.
func TestFindEdgegate(t *testing.T) {
	dir, path := t.TempDir(), t.TempDir()
	self := filepath.Join(dir, "edgegate-bench")
	onPath := filepath.Join(path, "edgegate")
	if err := os.WriteFile(onPath, []byte("#!/bin/sh\n"), 0o755); err != nil {
		t.Fatal(err)
	}
	t.Setenv("PATH", path)
	if got, err := findEdgegate(self); err != nil || got != onPath {
		t.Errorf("nothing beside: %q, %v; want %q", got, err, onPath)
	}
	beside := filepath.Join(dir, "edgegate")
	if err := os.WriteFile(beside, []byte("#!/bin/sh\n"), 0o755); err != nil {
		t.Fatal(err)
	}
	if got, err := findEdgegate(self); err != nil || got != beside {
		t.Errorf("one beside: %q, %v; want %q", got, err, beside)
	}
	t.Setenv("PATH", t.TempDir())
	if got, err := findEdgegate(filepath.Join(t.TempDir(), "edgegate-bench")); err == nil {
		t.Errorf("none anywhere: %q, no error", got)
	}
}

// TestMain removes the binary built for the tests and, when they passed,
// fails them if a goroutine outlives them.
func TestMain(m *testing.M) {
	code := m.Run()
	if buildOnce.path != "" {
		os.RemoveAll(filepath.Dir(buildOnce.path))
	}
	if code == 0 {
		if err := goleak.Find(); err != nil {
			fmt.Fprintf(os.Stderr, "goleak: %v\n", err)
			code = 1
		}
	}
	os.Exit(code)
}

// edgegateBinary builds cmd/edgegate, the appliance under test, once per
// test run.
var buildOnce struct {
	sync.Once
	path string
	err  error
}

func edgegateBinary(t *testing.T) string {
	t.Helper()
	buildOnce.Do(func() {
		dir, err := os.MkdirTemp("", "edgegate-bin-")
		if err != nil {
			buildOnce.err = err
			return
		}
		buildOnce.path = filepath.Join(dir, "edgegate")
		out, err := exec.Command("go", "build", "-o", buildOnce.path, "../edgegate").CombinedOutput()
		if err != nil {
			buildOnce.err = fmt.Errorf("go build: %v\n%s", err, out)
		}
	})
	if buildOnce.err != nil {
		t.Fatal(buildOnce.err)
	}
	return buildOnce.path
}
