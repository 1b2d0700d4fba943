package parser

import (
	"github.com/prometheus/client_golang/prometheus"
)

// Collector returns the pool's metrics for a Prometheus registry.
func (p *Pool) Collector() prometheus.Collector { return (*collector)(p) }

type collector Pool

var (
	descWorkers     = prometheus.NewDesc("edgegate_parser_workers", "Parser workers of this appliance.", nil, nil)
	descWorkersBusy = prometheus.NewDesc("edgegate_parser_workers_busy", "Parser workers running a batch.", nil, nil)
	poolCounterDef  = []struct {
		name, help string
		get        func(*StatsSnapshot) uint64
	}{
		{"edgegate_parser_batches_total", "Batches finished and released.", func(s *StatsSnapshot) uint64 { return s.Batches }},
		{"edgegate_parser_messages_total", "Messages finished (handled or dead-lettered).", func(s *StatsSnapshot) uint64 { return s.Messages }},
		{"edgegate_parser_dead_lettered_total", "Messages dead-lettered after the attempts.", func(s *StatsSnapshot) uint64 { return s.DeadLettered }},
		{"edgegate_parser_transient_errors_total", "Handler calls that failed transiently (retried).", func(s *StatsSnapshot) uint64 { return s.TransientErrors }},
		{"edgegate_parser_busy_total", "Assignments refused because every worker was busy.", func(s *StatsSnapshot) uint64 { return s.Busy }},
		{"edgegate_parser_assignments_direct_total", "Assignments a socket of the same process offered directly, without NATS (busy answers included).", func(s *StatsSnapshot) uint64 { return s.Direct }},
		{"edgegate_parser_kept_total", "Batches that ended keeping their lease for the controller's next batch.", func(s *StatsSnapshot) uint64 { return s.Kept }},
		{"edgegate_parser_keeps_deferred_total", "Kept batches whose keep needed no lease store call (the lock, as the last keep or the acquire set it, still had about the hold left); their done seq is recorded later.", func(s *StatsSnapshot) uint64 { return s.Deferred }},
		{"edgegate_parser_lease_lost_total", "Batches stopped or fenced because their lease was lost.", func(s *StatsSnapshot) uint64 { return s.LeaseLost }},
	}
	poolCounterDescs = func() []*prometheus.Desc {
		var d []*prometheus.Desc
		for _, c := range poolCounterDef {
			d = append(d, prometheus.NewDesc(c.name, c.help, nil, nil))
		}
		return d
	}()
)

func newHandlerHistogram() prometheus.Histogram {
	return prometheus.NewHistogram(prometheus.HistogramOpts{
		Name: "edgegate_handler_seconds", Help: "Duration of one handler call.",
		Buckets: prometheus.ExponentialBuckets(10e-6, 4, 10),
	})
}

func (c *collector) Describe(ch chan<- *prometheus.Desc) {
	ch <- descWorkers
	ch <- descWorkersBusy
	for _, d := range poolCounterDescs {
		ch <- d
	}
	(*Pool)(c).handlerSeconds.Describe(ch)
}

func (c *collector) Collect(ch chan<- prometheus.Metric) {
	p := (*Pool)(c)
	p.mu.Lock()
	busy := p.cfg.Workers - p.free
	p.mu.Unlock()
	ch <- prometheus.MustNewConstMetric(descWorkers, prometheus.GaugeValue, float64(p.cfg.Workers))
	ch <- prometheus.MustNewConstMetric(descWorkersBusy, prometheus.GaugeValue, float64(busy))
	st := p.Stats()
	for i, def := range poolCounterDef {
		ch <- prometheus.MustNewConstMetric(poolCounterDescs[i], prometheus.CounterValue, float64(def.get(&st)))
	}
	p.handlerSeconds.Collect(ch)
}
