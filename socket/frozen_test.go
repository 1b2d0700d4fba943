package socket

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/edgegate/edgegate/internal/redistest"
	"github.com/edgegate/edgegate/lease"
)

// TestCheckRoundsGoOnWhenRedisFreezes: a Redis that stops answering
// without closing its connections (a frozen host) must not stretch a
// check round to a timeout per controller in flight: the loop's silence
// is what Healthy, and so the watchdog, goes by. The appliance would be
// restarted, dropping every device, for an outage it can wait out.
func TestCheckRoundsGoOnWhenRedisFreezes(t *testing.T) {
	srv := redistest.Start(t)
	ctx := context.Background()
	if err := lease.SetEpochStart(ctx, srv.Client(), "ck", time.Now().Add(-time.Hour)); err != nil {
		t.Fatal(err)
	}
	px := srv.Proxy()
	store := lease.DialRedis(&redis.UniversalOptions{Addrs: []string{px.Addr()}}, "ck")
	t.Cleanup(func() { store.Client().Close() })
	// More controllers in flight than check intervals fit in Healthy's
	// bound (three intervals and a second): read one after another, each
	// to its timeout, a round would outlast it.
	const n = 40
	pool := newFakePool(newHolders(t, store), "local", n)
	h := start(t, Config{Local: pool}, store)
	h.announce(pool.id, testAppliance, n)
	for i := range n {
		d := h.dial(fmt.Sprintf("c%d", i), 0)
		d.send(1)
		pool.next(t) // in flight, never ended
	}
	px.Freeze()
	frozen := time.Now()
	tick := time.NewTicker(20 * time.Millisecond)
	defer tick.Stop()
	rounds := 0
	for last := h.s.lastCheck.Load(); time.Since(frozen) < 3*time.Second; <-tick.C {
		if err := h.s.Healthy(); err != nil {
			t.Fatalf("%v after Redis froze (%d check rounds ended): %v", time.Since(frozen).Round(time.Millisecond), rounds, err)
		}
		if l := h.s.lastCheck.Load(); l != last {
			last = l
			rounds++
		}
	}
	if rounds < 2 {
		t.Fatalf("%d check rounds ended in the 3s after Redis froze", rounds)
	}
}
