package bench

import (
	"bytes"
	"io"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/common/expfmt"
)

// TestOwnLatency: the quantiles estimated from an ACK latency histogram
// (the socket's buckets) as exposed on /metrics tell a p99 of 1 ms from
// one of 20 ms. TestBenchCommand reads the appliance's own.
func TestOwnLatency(t *testing.T) {
	for _, tt := range []struct {
		slow     int // of 1,000 batches at 20 ms, the rest at 1 ms
		p99, tol time.Duration
	}{{5, time.Millisecond, time.Millisecond / 2}, {20, 20 * time.Millisecond, 10 * time.Millisecond}} {
		h := prometheus.NewHistogram(prometheus.HistogramOpts{Name: "edgegate_ack_latency_seconds", Help: "h",
			Buckets: prometheus.ExponentialBucketsRange(50e-6, 10, 31)})
		for i := range 1000 {
			d := time.Millisecond
			if i < tt.slow {
				d = 20 * time.Millisecond
			}
			h.Observe(d.Seconds())
		}
		reg := prometheus.NewRegistry()
		reg.MustRegister(h)
		mfs, err := reg.Gather()
		if err != nil {
			t.Fatal(err)
		}
		var b bytes.Buffer
		enc := expfmt.NewEncoder(&b, expfmt.NewFormat(expfmt.TypeTextPlain))
		for _, mf := range mfs {
			enc.Encode(mf)
		}
		p50, p99, err := parseOwnLatency(&b)
		if err != nil {
			t.Fatal(err)
		}
		if p50 < time.Millisecond/2 || p50 > 2*time.Millisecond {
			t.Errorf("%d slow: p50 %v, want about 1ms", tt.slow, p50)
		}
		if p99 < tt.p99-tt.tol || p99 > tt.p99+tt.tol {
			t.Errorf("%d slow: p99 %v, want %v ± %v", tt.slow, p99, tt.p99, tt.tol)
		}
	}
}

// parseOwnLatency reads the own latency off a /metrics page.
func parseOwnLatency(r io.Reader) (p50, p99 time.Duration, err error) {
	mfs, err := parseMetrics(r)
	if err != nil {
		return 0, 0, err
	}
	return ownLatencyOf(mfs)
}
