package device

import (
	"testing"
	"time"
)

func TestHistogramQuantiles(t *testing.T) {
	var h histogram
	for i := 1; i <= 1000; i++ {
		h.record(time.Duration(i) * time.Microsecond)
	}
	for _, tt := range []struct {
		q    float64
		want time.Duration
	}{{0.5, 500 * time.Microsecond}, {0.9, 900 * time.Microsecond}, {0.99, 990 * time.Microsecond}} {
		got := h.quantile(tt.q)
		if diff := float64(got-tt.want) / float64(tt.want); diff < -0.07 || diff > 0.07 {
			t.Errorf("quantile(%v) = %v, want %v ± 7%%", tt.q, got, tt.want)
		}
	}
	if h.max() != time.Millisecond {
		t.Errorf("max %v, want 1ms", h.max())
	}
	for _, ns := range []uint64{0, 1, 15, 16, 17, 31, 32, 1000, 1 << 40} {
		b := bucket(ns)
		if lo, hi := bucketLow(b), bucketLow(b+1); ns < lo || ns >= hi {
			t.Errorf("bucket(%d) = %d covers [%d, %d)", ns, b, lo, hi)
		}
	}
}
