package appliance_test

import (
	"context"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/edgegate/edgegate/device"
	"github.com/edgegate/edgegate/internal/redistest"
	"github.com/edgegate/edgegate/lease"
	"github.com/edgegate/edgegate/parser"
)

// TestRedisClusterLeaseStore: one appliance with a Redis Cluster of three
// masters as its lease store; devices whose leases live on every master
// stream. Every message is handled and acknowledged in order, and nothing
// restarted, so dispatch never pauses (a socket pauses for a lease
// whenever the store's epoch changes).
func TestRedisClusterLeaseStore(t *testing.T) {
	if testing.Short() {
		t.Skip("long: a Redis Cluster")
	}
	const controllers, messages = 20, 200
	rc := redistest.StartCluster(t, 3)
	// 2ms a message: 4000 messages on 8 workers take a second or more,
	// long enough for the socket to read the store's epoch several times
	// (every check interval, and after fresh grants).
	j := newJournal(parser.HandlerFunc(func(ctx context.Context, m *parser.Message) error {
		time.Sleep(2 * time.Millisecond)
		return nil
	}))
	cfg := testConfig(t, "rcluster")
	cfg.Lease.Redis = rc.URL()
	cfg.Lease.RedisMode = "cluster"
	cfg.Handler = j
	a := start(t, cfg)

	ids := make([]string, controllers)
	onNode := map[int]int{}
	keys := lease.NewRedis(nil, cfg.Lease.RedisPrefix, 0)
	for i := range ids {
		ids[i] = fmt.Sprintf("rc-%02d", i)
		onNode[rc.NodeOf(keys.Keys(ids[i])[1])]++
	}
	if len(onNode) != len(rc.Nodes) {
		t.Fatalf("controllers' leases on %d of %d masters (%v): pick ids on every master", len(onNode), len(rc.Nodes), onNode)
	}

	// A pause stops the test at once: it means the epoch changed with
	// nothing restarted, and what remains would crawl at a batch a lease.
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	watched := make(chan struct{})
	go func() {
		defer close(watched)
		tick := time.NewTicker(20 * time.Millisecond)
		defer tick.Stop()
		for {
			select {
			case <-ctx.Done():
				return
			case <-tick.C:
				if a.SocketStats().Pauses > 0 {
					cancel()
					return
				}
			}
		}
	}()
	begin := time.Now()
	acks := make([]ackLog, controllers)
	errs := make([]error, controllers)
	var wg sync.WaitGroup
	for i, id := range ids {
		c := dialDevice(t, device.Config{Addrs: []string{a.DeviceAddr()}, ID: id, Window: 32, OnAck: acks[i].onAck})
		wg.Go(func() { errs[i] = sendAll(ctx, c, id, messages) })
	}
	wg.Wait()
	elapsed := time.Since(begin)
	cancel()
	<-watched

	st := a.SocketStats()
	if st.Pauses > 0 {
		t.Fatalf("dispatch paused %d times over a healthy Redis Cluster (the lease store's epoch changed with nothing restarted); %d of %d messages acknowledged after %v",
			st.Pauses, st.Acked, controllers*messages, elapsed.Round(time.Millisecond))
	}
	for i, id := range ids {
		if errs[i] != nil {
			t.Fatal(errs[i])
		}
		checkIncreasing(t, id, j.succeeded(id), messages)
		acks[i].checkProcessed(t, id, messages)
	}
	if min := 4 * cfg.Lease.CheckInterval; elapsed < min {
		t.Errorf("the devices were done in %v, before %v: too soon to have seen the epoch read several times", elapsed, min)
	}
	if st.Acked != controllers*messages || st.StoreErrors != 0 {
		t.Errorf("socket stats %+v: want %d acked, no lease store errors", st, controllers*messages)
	}
	t.Logf("%d messages of %d controllers (leases on masters %v) acknowledged in %v", controllers*messages, controllers, onNode, elapsed.Round(time.Millisecond))
}
