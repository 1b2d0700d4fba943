package appliance_test

import (
	"context"
	"fmt"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/edgegate/edgegate/appliance"
	"github.com/edgegate/edgegate/device"
	"github.com/edgegate/edgegate/internal/redistest"
	"github.com/edgegate/edgegate/internal/wait"
	"github.com/edgegate/edgegate/lease"
	"github.com/edgegate/edgegate/parser"
)

// startCluster runs n appliances in this process, routed over loopback and
// sharing one Redis, each with its own handler from the journal.
func startCluster(t *testing.T, n int, j *journal, mutate func(i int, cfg *appliance.Config)) []*appliance.Appliance {
	t.Helper()
	apps, _ := startClusterRedis(t, n, j, mutate)
	return apps
}

func startClusterRedis(t *testing.T, n int, j *journal, mutate func(i int, cfg *appliance.Config)) ([]*appliance.Appliance, *redistest.Server) {
	t.Helper()
	redis := redistest.Start(t)
	var apps []*appliance.Appliance
	var peers []string
	for i := 0; i < n; i++ {
		name := fmt.Sprintf("node-%d", i)
		cfg := testConfig(t, name)
		cfg.Lease.Redis = redis.URL()
		cfg.NATS.Cluster.Listen = "127.0.0.1:0"
		cfg.NATS.Cluster.Peers = append([]string(nil), peers...)
		cfg.NATS.Cluster.User, cfg.NATS.Cluster.Password = "route", "route-test-secret" // routes are authenticated
		cfg.Handler = j.on(name)
		if mutate != nil {
			mutate(i, &cfg)
		}
		a := start(t, cfg)
		apps = append(apps, a)
		peers = append(peers, a.ClusterAddr())
	}
	// Wait until every appliance sees every parser pool (routes are up and
	// the announcements crossed them).
	for _, a := range apps {
		wait.True(t, 15*time.Second, "parser pools visible across the cluster", func() bool {
			return a.SocketStats().Pools == n
		})
	}
	return apps, redis
}

// TestClusterSharedRedis: three appliances share one Redis; devices are
// spread over them; every message is handled in order, batches of one
// controller never overlap across appliances, and the busy appliance's
// controllers spill to the parsers of the others.
func TestClusterSharedRedis(t *testing.T) {
	if testing.Short() {
		t.Skip("long: a cluster of appliances")
	}
	const controllers, messages = 12, 150
	j := newJournal(parser.HandlerFunc(func(ctx context.Context, m *parser.Message) error {
		time.Sleep(200 * time.Microsecond) // the handler's work: node-0's one worker stays busy
		return nil
	}))
	apps := startCluster(t, 3, j, func(i int, cfg *appliance.Config) {
		if i == 0 {
			cfg.Parser.Workers = 1 // node-0 is small: its devices need the others' parsers
		}
	})
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	var wg sync.WaitGroup
	for k := 0; k < controllers; k++ {
		id := fmt.Sprintf("cl-%02d", k)
		a := apps[0]
		if k%3 != 0 {
			a = apps[k%3]
		}
		if k < 6 {
			a = apps[0] // half of the devices on the small appliance
		}
		c := dialDevice(t, device.Config{Addrs: []string{a.DeviceAddr()}, ID: id, Window: 32})
		wg.Go(func() {
			if err := sendAll(ctx, c, id, messages); err != nil {
				t.Error(err)
			}
		})
	}
	wg.Wait()
	for k := 0; k < controllers; k++ {
		id := fmt.Sprintf("cl-%02d", k)
		checkIncreasing(t, id, j.succeeded(id), messages)
	}
	overlaps, maxRunning := j.snapshot()
	if len(overlaps) > 0 {
		t.Errorf("%d overlaps, first: %s", len(overlaps), overlaps[0])
	}
	// Which appliances' parsers handled the small appliance's controllers?
	ranOn := map[string]int{}
	j.mu.Lock()
	for k := 0; k < 6; k++ {
		for _, c := range j.calls[fmt.Sprintf("cl-%02d", k)] {
			ranOn[c.app]++
		}
	}
	j.mu.Unlock()
	if ranOn["node-1"]+ranOn["node-2"] == 0 {
		t.Errorf("node-0's controllers ran only on node-0's single worker (%v): no spill to peers", ranOn)
	}
	// node-0's socket handed batches to its own pool directly and to the
	// others' over NATS.
	if st := apps[0].SocketStats(); st.Direct == 0 || st.Direct == st.Batches {
		t.Errorf("node-0 sent %d of %d batches to its own pool directly: want some, not all", st.Direct, st.Batches)
	}
	t.Logf("node-0's controllers ran on %v; max concurrent calls %d", ranOn, maxRunning)
}

// TestClusterTakeover: a device that moves to another appliance takes its
// session over there; the old appliance closes the old session with ERROR
// taken over, and nothing is lost or reordered.
func TestClusterTakeover(t *testing.T) {
	if testing.Short() {
		t.Skip("long: a cluster of appliances")
	}
	j := newJournal(nil)
	apps, redis := startClusterRedis(t, 2, j, nil)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	c1 := dialDevice(t, device.Config{Addrs: []string{apps[0].DeviceAddr()}, ID: "mover", PersistentSeq: true})
	if err := sendAll(ctx, c1, "mover", 50); err != nil {
		t.Fatal(err)
	}
	// The done record follows the last ACKs by a Redis round trip (their
	// statuses went ahead of the keep that records it).
	store := lease.NewRedis(redis.Client(), "", 0)
	wait.True(t, 10*time.Second, "done 50 recorded", func() bool {
		d, err := store.Done(ctx, "mover")
		return err == nil && d == 50
	})
	c2 := dialDevice(t, device.Config{Addrs: []string{apps[1].DeviceAddr()}, ID: "mover", PersistentSeq: true})
	if w := c2.Welcome(); w.LastSeq != 50 {
		t.Fatalf("WELCOME last_seq %d on the other appliance, want 50 (from Redis)", w.LastSeq)
	}
	wait.True(t, 10*time.Second, "the old session taken over", func() bool { return apps[0].SocketStats().Takeovers == 1 })
	if _, err := c1.Send(ctx, []byte("late")); err == nil {
		if err := c1.Flush(ctx); err == nil {
			t.Fatalf("the old session still works after the takeover")
		}
	}
	if err := sendAll(ctx, c2, "mover", 50); err != nil {
		t.Fatal(err)
	}
	checkIncreasing(t, "mover", j.succeeded("mover"), 100)
}

// streamAll runs devices that stream messages each, spread over apps, and
// calls during once a third of the messages were sent.
func streamAll(t *testing.T, apps []*appliance.Appliance, addrs func(i int) []string, devices, messages int, during func()) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 90*time.Second)
	defer cancel()
	var wg, third sync.WaitGroup
	for k := 0; k < devices; k++ {
		id := fmt.Sprintf("d-%02d", k)
		c := dialDevice(t, device.Config{Addrs: addrs(k), ID: id, Window: 16, PersistentSeq: true, Reconnect: true})
		third.Add(1)
		wg.Go(func() {
			for i := 0; i < messages; i++ {
				if _, err := c.Send(ctx, []byte(fmt.Sprint(i))); err != nil {
					t.Errorf("%s: %v", id, err)
					break
				}
				if i == messages/3 {
					third.Done()
				}
			}
			if err := c.Flush(ctx); err != nil {
				t.Errorf("%s: flush: %v", id, err)
			}
		})
	}
	third.Wait()
	if during != nil {
		during()
	}
	wg.Wait()
}

func spread(apps []*appliance.Appliance) func(i int) []string {
	return func(i int) []string { return []string{apps[i%len(apps)].DeviceAddr()} }
}

// TestRedisRestartMidStream: Redis is killed and restarted empty while
// devices stream. The sockets notice (a new run_id, fresh fences) and pause
// dispatch for a lease, so that no controller is ever handled by two
// parsers at once; everything completes.
func TestRedisRestartMidStream(t *testing.T) {
	if testing.Short() {
		t.Skip("long: a cluster of appliances and a Redis restart")
	}
	const devices, messages = 9, 300
	j := newJournal(parser.HandlerFunc(func(ctx context.Context, m *parser.Message) error {
		time.Sleep(300 * time.Microsecond) // the handler's work: batches are in flight at the restart
		return nil
	}))
	apps, redis := startClusterRedis(t, 3, j, nil)
	streamAll(t, apps, spread(apps), devices, messages, func() { redis.Restart() })
	var pauses uint64
	for _, a := range apps {
		pauses += a.SocketStats().Pauses
	}
	if pauses == 0 {
		t.Errorf("no socket paused after the Redis restart")
	}
	for k := 0; k < devices; k++ {
		id := fmt.Sprintf("d-%02d", k)
		checkFirstHandlings(t, id, j.succeeded(id), messages, 64)
	}
	overlaps, _ := j.snapshot()
	if len(overlaps) > 0 {
		t.Errorf("%d overlaps after the Redis restart, first: %s", len(overlaps), overlaps[0])
	}
}

// TestRedisUnreachable: Redis cannot be reached for two leases while
// devices stream. Nothing is unlocked on the errors, intake backs up, and
// everything completes in order once Redis is back.
func TestRedisUnreachable(t *testing.T) {
	if testing.Short() {
		t.Skip("long: a cluster of appliances and a Redis outage")
	}
	const devices, messages = 6, 200
	j := newJournal(nil)
	redis := redistest.Start(t)
	px := newProxy(t, redis.Addr())
	var apps []*appliance.Appliance
	var peers []string
	for i := 0; i < 2; i++ {
		cfg := testConfig(t, fmt.Sprintf("unreach-%d", i))
		cfg.Lease.Redis = "redis://" + px.Addr() + "/0?dial_timeout=300ms&read_timeout=300ms&write_timeout=300ms"
		cfg.NATS.Cluster.Listen = "127.0.0.1:0"
		cfg.NATS.Cluster.Peers = peers
		cfg.NATS.Cluster.User, cfg.NATS.Cluster.Password = "route", "route-test-secret"
		cfg.Handler = j.on(cfg.Name)
		a := start(t, cfg)
		apps = append(apps, a)
		peers = append(peers, a.ClusterAddr())
	}
	streamAll(t, apps, spread(apps), devices, messages, func() {
		px.Block()
		// Two leases without Redis: parsers lose their leases (no heartbeat
		// confirmed), sockets can neither acquire nor judge. The outage's
		// length is the scenario, not a wait for something.
		time.Sleep(2 * testConfig(t, "x").Lease.TTL)
		px.Unblock()
	})
	for k := 0; k < devices; k++ {
		id := fmt.Sprintf("d-%02d", k)
		checkFirstHandlings(t, id, j.succeeded(id), messages, 64)
	}
	overlaps, _ := j.snapshot()
	if len(overlaps) > 0 {
		t.Errorf("%d overlaps, first: %s", len(overlaps), overlaps[0])
	}
	var errs uint64
	for _, a := range apps {
		errs += a.SocketStats().StoreErrors
	}
	if errs == 0 {
		t.Errorf("no lease store errors counted while Redis was unreachable")
	}
}

// TestFreshControllerAfterRedisRestart: right after Redis restarted empty,
// the first grant of a controller this socket never had is fresh like
// every grant; the socket checks the run_id then, instead of waiting for
// its check loop, and pauses for a lease before dispatching it (another
// appliance's parser might still work under a lease Redis forgot).
func TestFreshControllerAfterRedisRestart(t *testing.T) {
	if testing.Short() {
		t.Skip("long: waits a lease after a Redis restart")
	}
	redis := redistest.Start(t)
	var pausedBefore atomic.Int64 // pauses seen when "after" was first handled; -1: not yet
	pausedBefore.Store(-1)
	var a *appliance.Appliance
	var ready atomic.Bool
	cfg := testConfig(t, "fresh")
	cfg.Lease.Redis = redis.URL()
	cfg.Lease.CheckInterval = time.Hour // only the fresh grant can notice the restart
	cfg.Handler = parser.HandlerFunc(func(_ context.Context, m *parser.Message) error {
		if m.Controller == "after" && ready.Load() {
			pausedBefore.CompareAndSwap(-1, int64(a.SocketStats().Pauses))
		}
		return nil
	})
	a = start(t, cfg)
	ready.Store(true)
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	first := dialDevice(t, device.Config{Addrs: []string{a.DeviceAddr()}, ID: "before"})
	if err := sendAll(ctx, first, "before", 5); err != nil {
		t.Fatal(err)
	}
	// A Redis met for the first time counts as just restarted: the first
	// grants waited a lease. One more pause, for the restart, must come
	// before the new controller is handled.
	base := int64(a.SocketStats().Pauses)
	redis.Restart()
	c := dialDevice(t, device.Config{Addrs: []string{a.DeviceAddr()}, ID: "after"})
	if err := sendAll(ctx, c, "after", 5); err != nil {
		t.Fatal(err)
	}
	if p := pausedBefore.Load() - base; p != 1 {
		t.Errorf("the new controller was handled after %d pauses, want 1: dispatched before the socket knew of the restart", p)
	}
}
