package bench

import (
	"bytes"
	"context"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"os"
	"os/exec"
	"strconv"
	"syscall"
	"time"

	"github.com/edgegate/edgegate/appliance"
	"github.com/edgegate/edgegate/device"
)

// EdgegateConfig says how the appliance under test runs.
type EdgegateConfig struct {
	// Exe is the edgegate binary, run as a child process (`exe run ...`)
	// so that its CPU and memory are measured apart from the simulated
	// devices. Empty means in this process (CPU and RSS then include the
	// devices).
	Exe string
	// Procs, when above zero, is the GOMAXPROCS of the child: the CPUs
	// its goroutines run on at once, on a machine whose other CPUs the
	// simulated devices and Redis want too. Zero is Go's default (every
	// CPU).
	Procs int
	// Redis is the lease.redis URL; empty means the in-process store.
	Redis string
	// Handler is discard (a no-op) or publish.
	Handler string
	// JetStream stores published records in a stream (publish only).
	JetStream bool
	// Rate, when above zero, paces every device at this many messages per
	// second: a latency measurement at a given load instead of a
	// throughput one. Load is that rate as a fraction of the throughput,
	// for the scenario's name.
	Rate, Load float64
}

// scenario names the configuration in results.
func (c EdgegateConfig) scenario() string {
	store := "memory"
	if c.Redis != "" {
		store = "redis"
	}
	h := c.Handler
	if h == "publish" && c.JetStream {
		h = "publish-js"
	}
	name := "edgegate/" + store + "/" + h
	if c.Rate > 0 {
		name += fmt.Sprintf("@%.0f%%-load", 100*c.Load)
	}
	return name
}

// Edgegate runs w end to end over TCP: simulated devices → socket → NATS →
// parser → handler → ACK, on loopback.
func Edgegate(ctx context.Context, w Workload, c EdgegateConfig) (Result, error) {
	dir, err := os.MkdirTemp("", "edgegate-bench-")
	if err != nil {
		return Result{}, err
	}
	defer os.RemoveAll(dir)
	var app running
	if c.Exe != "" {
		app, err = startChild(ctx, c, w, dir)
	} else {
		app, err = startInProcess(ctx, c, w, dir)
	}
	if err != nil {
		return Result{}, err
	}
	defer app.stop()

	var before own
	if app.metrics != "" {
		before, _ = readOwn(app.metrics)
	}
	cpu := startCPU(app.pid)
	rep, err := device.Simulate(ctx, device.SimConfig{
		Addrs: []string{app.addr}, Controllers: w.Controllers, Messages: w.Messages, Size: w.Size, Window: w.Window, Rate: c.Rate,
	}, nil)
	if err != nil {
		return Result{}, fmt.Errorf("bench: %s: %w", c.scenario(), err)
	}
	if rep.OrderErrors != 0 || rep.Acked != int64(w.Controllers*w.Messages) {
		return Result{}, fmt.Errorf("bench: %s: %d of %d acknowledged, %d out of order", c.scenario(), rep.Acked, w.Controllers*w.Messages, rep.OrderErrors)
	}
	r := Result{
		Scenario: c.scenario(), Controllers: w.Controllers, Messages: rep.Acked, Elapsed: rep.Elapsed, Rate: rep.Throughput,
		P50: rep.P50, P99: rep.P99, P999: rep.P999, SockP50: rep.SockP50, SockP99: rep.SockP99, CPU: cpu.cores(), RSS: -1,
	}
	if rss, err := procRSS(app.pid); err == nil {
		r.RSS = rss
	}
	if app.metrics != "" {
		if after, err := readOwn(app.metrics); err == nil {
			r.OwnP50, r.OwnP99, r.Procs = after.p50, after.p99, after.procs
			r.waits(before, after)
		}
	}
	if c.Exe == "" {
		r.Note = "appliance and devices in one process: CPU and RSS include the devices"
	}
	return r, nil
}

// running is an appliance under test.
type running struct {
	pid     int
	addr    string // EGP/1 listener
	metrics string // its /metrics URL; empty: none
	stop    func()
}

func freeAddr() (string, error) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return "", err
	}
	defer ln.Close()
	return ln.Addr().String(), nil
}

// args are the `edgegate run` settings of the appliance under test.
func (c EdgegateConfig) args(w Workload, dir, devices, httpAddr string) []string {
	a := []string{"run", "--name", "bench", "--data_dir", dir, "--devices.listen", devices, "--devices.max_per_ip", "0", "--nats.listen", "",
		"--http.listen", httpAddr, "--parser.handler", c.Handler, "--parser.workers", strconv.Itoa(w.Workers),
		"--nats.jetstream=" + strconv.FormatBool(c.JetStream), "--log.level", "warn"}
	if c.Redis != "" {
		a = append(a, "--lease.redis", c.Redis)
	}
	return a
}

func startChild(ctx context.Context, c EdgegateConfig, w Workload, dir string) (running, error) {
	devices, err1 := freeAddr()
	httpAddr, err2 := freeAddr()
	if err1 != nil || err2 != nil {
		return running{}, fmt.Errorf("bench: no free port")
	}
	var stderr bytes.Buffer
	cmd := exec.Command(c.Exe, c.args(w, dir, devices, httpAddr)...)
	cmd.Stderr = &stderr
	if c.Procs > 0 {
		cmd.Env = append(os.Environ(), "GOMAXPROCS="+strconv.Itoa(c.Procs))
	}
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	if err := cmd.Start(); err != nil {
		return running{}, fmt.Errorf("bench: start %s: %w", c.Exe, err)
	}
	exited := make(chan struct{})
	go func() { cmd.Wait(); close(exited) }()
	stop := func() {
		cmd.Process.Signal(syscall.SIGTERM)
		select {
		case <-exited:
		case <-time.After(20 * time.Second):
			cmd.Process.Kill()
			<-exited
		}
	}
	// Ready when /readyz says so.
	deadline := time.Now().Add(30 * time.Second)
	for {
		resp, err := http.Get("http://" + httpAddr + "/readyz")
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				return running{pid: cmd.Process.Pid, addr: devices, metrics: "http://" + httpAddr + "/metrics", stop: stop}, nil
			}
		}
		select {
		case <-exited:
			return running{}, fmt.Errorf("bench: the appliance exited at start: %s", stderr.String())
		case <-ctx.Done():
			stop()
			return running{}, ctx.Err()
		case <-time.After(20 * time.Millisecond):
		}
		if time.Now().After(deadline) {
			stop()
			return running{}, fmt.Errorf("bench: the appliance is not ready within 30s: %s", stderr.String())
		}
	}
}

func startInProcess(ctx context.Context, c EdgegateConfig, w Workload, dir string) (running, error) {
	cfg := appliance.DefaultConfig()
	cfg.Name, cfg.DataDir = "bench", dir
	cfg.Devices.Listen, cfg.NATS.Listen, cfg.HTTP.Listen = "127.0.0.1:0", "", ""
	cfg.Devices.MaxPerIP = 0 // the simulated devices all come from loopback
	cfg.Parser.Handler, cfg.Parser.Workers = c.Handler, w.Workers
	cfg.NATS.JetStream = c.JetStream
	cfg.Lease.Redis = c.Redis
	cfg.Logger = slog.New(slog.DiscardHandler)
	actx, cancel := context.WithCancel(ctx)
	a, err := appliance.New(actx, cfg)
	if err != nil {
		cancel()
		return running{}, err
	}
	done := make(chan error, 1)
	go func() { done <- a.Run(actx) }()
	select {
	case <-a.Ready():
	case err := <-done:
		cancel()
		return running{}, fmt.Errorf("bench: the appliance stopped at start: %w", err)
	}
	return running{pid: os.Getpid(), addr: a.DeviceAddr(), stop: func() { cancel(); <-done }}, nil
}
