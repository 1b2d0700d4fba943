package device

import (
	"math/rand/v2"
	"testing"
	"time"
)

// TestQuantileNeverAboveMax: a quantile is the middle of its bucket, which
// in the top bucket can lie above every value recorded; it is held at the
// max. 983,041ns is just above the low end of its bucket (whose middle is
// 999,424ns).
func TestQuantileNeverAboveMax(t *testing.T) {
	var h histogram
	for range 999 {
		h.record(time.Microsecond)
	}
	h.record(983041 * time.Nanosecond)
	if got := h.quantile(0.9999); got != h.max() {
		t.Errorf("p99.99 = %v with max %v: want the max", got, h.max())
	}
	var one histogram
	one.record(983041 * time.Nanosecond)
	for _, q := range []float64{0, 0.5, 0.999, 1} {
		if got := one.quantile(q); got != one.max() {
			t.Errorf("one value: quantile(%v) = %v, want the value %v", q, got, one.max())
		}
	}

	rng := rand.New(rand.NewPCG(1, 2))
	for run := range 200 {
		var h histogram
		n := 1 + rng.IntN(2000)
		for range n {
			h.record(time.Duration(rng.ExpFloat64() * float64(time.Duration(1+rng.IntN(5000))*time.Microsecond)))
		}
		prev := time.Duration(0)
		for _, q := range []float64{0.5, 0.9, 0.99, 0.999, 1} {
			got := h.quantile(q)
			if got > h.max() {
				t.Fatalf("run %d: quantile(%v) = %v above the max %v", run, q, got, h.max())
			}
			if got < prev {
				t.Fatalf("run %d: quantile(%v) = %v below a lower quantile's %v", run, q, got, prev)
			}
			prev = got
		}
	}
}
