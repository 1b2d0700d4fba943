package bench

import (
	"context"
	"testing"
	"time"
)

// TestPeer: the JetStream partitioned consumer group peer handles every
// message once and in order per controller (Peer fails otherwise), with
// one partition and with several.
func TestPeer(t *testing.T) {
	for _, c := range []int{1, 6} {
		ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
		r, err := Peer(ctx, Workload{Controllers: c, Messages: 150, Size: 64, Window: 16, Workers: 4})
		cancel()
		if err != nil {
			t.Fatalf("%d controllers: %v", c, err)
		}
		if r.Messages != int64(c*150) || r.Rate <= 0 || r.P50 <= 0 || r.P99 < r.P50 {
			t.Fatalf("%d controllers: result %+v", c, r)
		}
	}
}
