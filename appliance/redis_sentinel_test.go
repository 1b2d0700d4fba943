package appliance_test

import (
	"context"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/edgegate/edgegate/device"
	"github.com/edgegate/edgegate/internal/redistest"
	"github.com/edgegate/edgegate/internal/wait"
	"github.com/edgegate/edgegate/lease"
	"github.com/edgegate/edgegate/parser"
)

// TestRedisSentinelFailover: one appliance whose lease store is Redis
// behind a Sentinel; controllers stream while the Sentinel fails the
// master over to its replica, a server with a run_id of its own. Nothing
// pauses before the failover; after it the socket notices the new run_id
// and pauses dispatch for a lease, then goes on: every message is handled
// in order and acknowledged in order, no controller's calls overlap, and
// the controllers' lease records are on the new master.
func TestRedisSentinelFailover(t *testing.T) {
	if testing.Short() {
		t.Skip("long: a Redis Sentinel failover")
	}
	const controllers, messages = 20, 300
	rs := redistest.StartSentinel(t, "m")
	// 2ms a message: 6000 messages on 8 workers take 1.5s or more, so
	// that batches are in flight when the failover begins.
	j := newJournal(parser.HandlerFunc(func(ctx context.Context, m *parser.Message) error {
		time.Sleep(2 * time.Millisecond)
		return nil
	}))
	// The fresh master held no lease before: without this its first
	// grants would wait a lease, as after a restart.
	if err := lease.SetEpochStart(context.Background(), rs.Master.Client(), "", time.Now().Add(-time.Hour)); err != nil {
		t.Fatal(err)
	}
	cfg := testConfig(t, "rsentinel")
	cfg.Lease.Redis = rs.URL()
	cfg.Lease.RedisMode = "sentinel"
	cfg.Handler = j
	a := start(t, cfg)

	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	// The devices send their last third only once the failover is done,
	// so that some of every controller's messages are handled after it.
	failedOver := make(chan struct{})
	ids := make([]string, controllers)
	acks := make([]ackLog, controllers)
	errs := make([]error, controllers)
	var wg sync.WaitGroup
	for i := range ids {
		ids[i] = fmt.Sprintf("rs-%02d", i)
		id := ids[i]
		c := dialDevice(t, device.Config{Addrs: []string{a.DeviceAddr()}, ID: id, Window: 32,
			PersistentSeq: true, Reconnect: true, OnAck: acks[i].onAck})
		wg.Go(func() {
			for k := 0; k < messages; k++ {
				if k == 2*messages/3 {
					select {
					case <-failedOver:
					case <-ctx.Done():
						errs[i] = fmt.Errorf("%s: waiting for the failover: %w", id, ctx.Err())
						return
					}
				}
				if _, err := c.Send(ctx, []byte(fmt.Sprint(k))); err != nil {
					errs[i] = fmt.Errorf("%s: send %d: %w", id, k, err)
					return
				}
			}
			if err := c.Flush(ctx); err != nil {
				errs[i] = fmt.Errorf("%s: flush: %w", id, err)
			}
		})
	}
	wait.True(t, 30*time.Second, "a third of the messages acknowledged", func() bool {
		return a.SocketStats().Acked >= controllers*messages/3
	})
	before := a.SocketStats()
	begin := time.Now()
	rs.Failover()
	tookFailover := time.Since(begin)
	close(failedOver)
	wg.Wait()
	for _, err := range errs {
		if err != nil {
			t.Fatal(err)
		}
	}
	if before.Pauses != 0 {
		t.Errorf("dispatch paused %d times before the failover: the lease store's epoch changed with nothing restarted", before.Pauses)
	}
	// The check loop reads the run_id every check interval, with traffic
	// or without.
	wait.True(t, 10*cfg.Lease.CheckInterval, "a dispatch pause after the failover", func() bool {
		return a.SocketStats().Pauses > before.Pauses
	})

	var dups int
	for i, id := range ids {
		// A batch whose lease the failover lost may have been handled
		// again, right after its first handling.
		dups += checkFirstHandlings(t, id, j.succeeded(id), messages, 64)
		acks[i].checkProcessed(t, id, messages)
	}
	overlaps, _ := j.snapshot()
	if len(overlaps) > 0 {
		t.Errorf("%d overlaps across the failover, first: %s", len(overlaps), overlaps[0])
	}

	// The records written after the failover are on the new master: every
	// controller's fence counter, and its done seq, which follows the last
	// ACKs by a round trip (their statuses went ahead of the keep that
	// records it).
	master := rs.Master.Client()
	store := lease.NewRedis(master, cfg.Lease.RedisPrefix, 0)
	for _, id := range ids {
		if n, err := master.Exists(ctx, store.Keys(id)[0]).Result(); err != nil || n != 1 {
			t.Errorf("%s: fence counter on the new master %s: exists %d, %v", id, rs.Master.Addr(), n, err)
		}
		wait.True(t, 10*time.Second, id+": done "+fmt.Sprint(messages)+" on the new master", func() bool {
			d, err := store.Done(ctx, id)
			return err == nil && d == messages
		})
	}
	st := a.SocketStats()
	if st.Acked != controllers*messages {
		t.Errorf("socket stats %+v: want %d acked", st, controllers*messages)
	}
	t.Logf("failover in %v with %d of %d messages acknowledged; %d pauses, %d lease store errors, %d duplicate handlings",
		tookFailover.Round(time.Millisecond), before.Acked, controllers*messages, st.Pauses, st.StoreErrors, dups)
}
