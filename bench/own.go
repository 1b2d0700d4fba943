package bench

import (
	"fmt"
	"io"
	"math"
	"net/http"
	"time"

	dto "github.com/prometheus/client_model/go"
	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"
)

// own is what the appliance under test says of itself on /metrics.
type own struct {
	// p50 and p99 are its own share of the ACK latency: its
	// edgegate_ack_latency_seconds histogram (per batch, from reading the
	// batch's first message to queueing its ACKs).
	p50, p99 time.Duration
	procs    int // go_sched_gomaxprocs_threads; 0 when not exported
	// Cumulative since it started: how many times a goroutine became
	// runnable and waited for a CPU (go_sched_latencies_seconds, sampled),
	// for how long in all, and how long goroutines waited for locks
	// (go_sync_mutex_wait_total_seconds_total).
	runnable          uint64
	runWait, lockWait float64
}

// readOwn reads the appliance's /metrics.
func readOwn(metricsURL string) (own, error) {
	resp, err := http.Get(metricsURL)
	if err != nil {
		return own{}, err
	}
	defer resp.Body.Close()
	mfs, err := parseMetrics(resp.Body)
	if err != nil {
		return own{}, err
	}
	var o own
	if m := single(mfs, "go_sched_gomaxprocs_threads"); m != nil {
		o.procs = int(m.GetGauge().GetValue())
	}
	if m := single(mfs, "go_sched_latencies_seconds"); m != nil && m.GetHistogram() != nil {
		o.runnable, o.runWait = m.GetHistogram().GetSampleCount(), m.GetHistogram().GetSampleSum()
	}
	if m := single(mfs, "go_sync_mutex_wait_total_seconds_total"); m != nil {
		o.lockWait = m.GetCounter().GetValue()
	}
	o.p50, o.p99, err = ownLatencyOf(mfs)
	return o, err
}

// single is the one metric of family name, nil when there is not one.
func single(mfs map[string]*dto.MetricFamily, name string) *dto.Metric {
	if mf := mfs[name]; mf != nil && len(mf.GetMetric()) == 1 {
		return mf.GetMetric()[0]
	}
	return nil
}

// waits sets r's scheduler and lock waits over the run, from what the
// appliance said before it (o0) and after (o1).
func (r *Result) waits(o0, o1 own) {
	if n := o1.runnable - o0.runnable; n > 0 {
		r.RunWait = time.Duration((o1.runWait - o0.runWait) / float64(n) * float64(time.Second))
	}
	if r.Elapsed > 0 {
		r.LockWaiters = (o1.lockWait - o0.lockWait) / r.Elapsed.Seconds()
	}
}

// parseMetrics reads a /metrics page in the Prometheus text format.
func parseMetrics(r io.Reader) (map[string]*dto.MetricFamily, error) {
	p := expfmt.NewTextParser(model.UTF8Validation)
	mfs, err := p.TextToMetricFamilies(r)
	if err != nil {
		return nil, fmt.Errorf("bench: metrics: %w", err)
	}
	return mfs, nil
}

func ownLatencyOf(mfs map[string]*dto.MetricFamily) (p50, p99 time.Duration, err error) {
	m := single(mfs, "edgegate_ack_latency_seconds")
	if m == nil || m.GetHistogram() == nil {
		return 0, 0, fmt.Errorf("bench: metrics: no edgegate_ack_latency_seconds histogram")
	}
	h := m.GetHistogram()
	if h.GetSampleCount() == 0 {
		return 0, 0, nil
	}
	q := func(q float64) time.Duration { return time.Duration(quantile(q, h) * float64(time.Second)) }
	return q(0.5), q(0.99), nil
}

// quantile estimates the q-quantile of h as Prometheus's
// histogram_quantile does: linearly within the bucket it falls in, the
// largest finite bound when it falls beyond. NaN when h is empty.
func quantile(q float64, h *dto.Histogram) float64 {
	n := float64(h.GetSampleCount())
	if n == 0 {
		return math.NaN()
	}
	rank := q * n
	lower, below := 0.0, 0.0
	for _, b := range h.GetBucket() {
		upper, count := b.GetUpperBound(), float64(b.GetCumulativeCount())
		if count >= rank {
			if math.IsInf(upper, 1) {
				return lower
			}
			if count == below {
				return upper
			}
			return lower + (upper-lower)*(rank-below)/(count-below)
		}
		lower, below = upper, count
	}
	return lower
}
