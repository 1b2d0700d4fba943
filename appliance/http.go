package appliance

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/http/pprof"
	"regexp"
	"runtime"
	"runtime/debug"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"

	"github.com/edgegate/edgegate/lease"
)

// registry returns the appliance's own Prometheus registry (no global
// state: several appliances can run in one process).
func (a *Appliance) registry() *prometheus.Registry {
	reg := prometheus.NewRegistry()
	reg.MustRegister(
		// The scheduler's latency (goroutines runnable, waiting for a CPU)
		// and the time goroutines waited for locks: on a busy box, most of
		// what devices wait for an ACK beyond the appliance's own latency.
		collectors.NewGoCollector(collectors.WithGoCollectorRuntimeMetrics(
			collectors.MetricsScheduler,
			collectors.GoRuntimeMetricsRule{Matcher: regexp.MustCompile(`^/sync/mutex/wait/total:seconds$`)},
		)),
		collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}),
		prometheus.NewGaugeFunc(prometheus.GaugeOpts{
			Name: "edgegate_nats_ready", Help: "1 when the embedded NATS server accepts connections.",
		}, func() float64 { return b2f(a.nats.NATS().ReadyForConnections(10 * time.Millisecond)) }),
		prometheus.NewGaugeFunc(prometheus.GaugeOpts{
			Name: "edgegate_nats_routes", Help: "NATS routes to other appliances.",
		}, func() float64 { return float64(a.nats.NATS().NumRoutes()) }),
		prometheus.NewGaugeFunc(prometheus.GaugeOpts{
			Name: "edgegate_lease_store_up", Help: "1 when the lease store answers (Redis PING within 500ms; always 1 in-process).",
		}, func() float64 { return b2f(a.storeUp() == nil) }),
		prometheus.NewGaugeFunc(prometheus.GaugeOpts{
			Name: "edgegate_ready", Help: "1 when every part of the appliance works and the lease store answers (what /readyz reports).",
		}, func() float64 { return b2f(a.readiness() == nil) }),
		a.cfg.Build.gauge(),
	)
	if a.sock != nil {
		reg.MustRegister(a.sock.Collector())
	}
	if a.pool != nil {
		reg.MustRegister(a.pool.Collector())
	}
	return reg
}

func b2f(b bool) float64 {
	if b {
		return 1
	}
	return 0
}

func (a *Appliance) mux() *http.ServeMux {
	m := http.NewServeMux()
	m.Handle("/metrics", promhttp.HandlerFor(a.registry(), promhttp.HandlerOpts{}))
	m.HandleFunc("/healthz", func(w http.ResponseWriter, _ *http.Request) {
		io.WriteString(w, "ok\n")
	})
	m.HandleFunc("/readyz", func(w http.ResponseWriter, _ *http.Request) {
		if err := a.readiness(); err != nil {
			http.Error(w, "not ready: "+err.Error(), http.StatusServiceUnavailable)
			return
		}
		io.WriteString(w, "ready\n")
	})
	if a.page != nil {
		a.page.routes(m)
	}
	if a.cfg.HTTP.Pprof {
		m.HandleFunc("/debug/pprof/", pprof.Index)
		m.HandleFunc("/debug/pprof/cmdline", pprof.Cmdline)
		m.HandleFunc("/debug/pprof/profile", pprof.Profile)
		m.HandleFunc("/debug/pprof/symbol", pprof.Symbol)
		m.HandleFunc("/debug/pprof/trace", pprof.Trace)
	}
	return m
}

// storeUp pings Redis; the in-process store is always up.
func (a *Appliance) storeUp() error {
	r, ok := a.store.(*lease.Redis)
	if !ok {
		return nil
	}
	ctx, cancel := context.WithTimeout(context.Background(), 500*time.Millisecond)
	defer cancel()
	return r.Client().Ping(ctx).Err()
}

// readiness reports whether the appliance can process messages: check,
// and the lease store answering, without which no batch is dispatched
// (devices are backpressured). It is what /readyz answers, so that a load
// balancer or an orchestrator sends devices elsewhere meanwhile.
func (a *Appliance) readiness() error {
	if err := a.check(); err != nil {
		return err
	}
	if err := a.storeUp(); err != nil {
		return fmt.Errorf("lease store not answering: %w", err)
	}
	return nil
}

// check reports whether every part of the appliance works: NATS, the
// socket's loops and listeners, the parser pool's loop. The systemd
// watchdog is fed on it. The lease store is not part of it: an unreachable
// Redis backpressures devices and heals by itself, and restarting the
// appliance would not help.
func (a *Appliance) check() error {
	select {
	case <-a.ready:
	default:
		return errNotStarted
	}
	if !a.nats.NATS().ReadyForConnections(10 * time.Millisecond) {
		return errNATS
	}
	if a.sock != nil {
		if err := a.sock.Healthy(); err != nil {
			return err
		}
	}
	if a.pool != nil {
		if err := a.pool.Healthy(); err != nil {
			return err
		}
	}
	return nil
}

var (
	errNotStarted = errors.New("starting")
	errNATS       = fmt.Errorf("nats server not ready")
)

// BuildInfo is what edgegate_build_info labels: the version and commit of
// the build.
type BuildInfo struct {
	Version, Commit string
}

// gauge returns edgegate_build_info, 1 with the build's labels, so that a
// dashboard can tell which build each appliance runs.
func (b BuildInfo) gauge() prometheus.Collector {
	if bi, ok := debug.ReadBuildInfo(); ok {
		if b.Version == "" {
			b.Version = bi.Main.Version
		}
		for _, s := range bi.Settings {
			if s.Key == "vcs.revision" && b.Commit == "" {
				b.Commit = s.Value
			}
		}
	}
	g := prometheus.NewGauge(prometheus.GaugeOpts{
		Name: "edgegate_build_info", Help: "1, labelled with the build's version and commit, and the Go and nats-server versions.",
		ConstLabels: prometheus.Labels{
			"version": cmp.Or(b.Version, "unknown"), "commit": cmp.Or(b.Commit, "unknown"),
			"goversion": runtime.Version(), "nats_server": server.VERSION,
		},
	})
	g.Set(1)
	return g
}
