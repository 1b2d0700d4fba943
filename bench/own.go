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

// ownLatency is the appliance's own share of the ACK latency: its
// edgegate_ack_latency_seconds histogram (per batch, from reading the
// batch's first message to queueing its ACKs), read from its /metrics,
// with its GOMAXPROCS (go_sched_gomaxprocs_threads; 0 when not exported).
func ownLatency(metricsURL string) (p50, p99 time.Duration, procs int, err error) {
	resp, err := http.Get(metricsURL)
	if err != nil {
		return 0, 0, 0, err
	}
	defer resp.Body.Close()
	mfs, err := parseMetrics(resp.Body)
	if err != nil {
		return 0, 0, 0, err
	}
	if mf := mfs["go_sched_gomaxprocs_threads"]; mf != nil && len(mf.GetMetric()) == 1 {
		procs = int(mf.GetMetric()[0].GetGauge().GetValue())
	}
	p50, p99, err = ownLatencyOf(mfs)
	return p50, p99, procs, err
}

func parseOwnLatency(r io.Reader) (p50, p99 time.Duration, err error) {
	mfs, err := parseMetrics(r)
	if err != nil {
		return 0, 0, err
	}
	return ownLatencyOf(mfs)
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
	mf := mfs["edgegate_ack_latency_seconds"]
	if mf == nil || len(mf.GetMetric()) != 1 || mf.GetMetric()[0].GetHistogram() == nil {
		return 0, 0, fmt.Errorf("bench: metrics: no edgegate_ack_latency_seconds histogram")
	}
	h := mf.GetMetric()[0].GetHistogram()
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
