package lease_test

import (
	"context"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/edgegate/edgegate/internal/redistest"
	"github.com/edgegate/edgegate/internal/wait"
	"github.com/edgegate/edgegate/lease"
)

// nodePool returns the pool stats of the ClusterClient's node client for
// addr (found among masters and replicas), and whether it has one.
func nodePool(t *testing.T, cc *redis.ClusterClient, addr string) (*redis.PoolStats, bool) {
	t.Helper()
	ctx := context.Background()
	var st *redis.PoolStats
	look := func(ctx context.Context, c *redis.Client) error {
		if c.Options().Addr == addr {
			st = c.PoolStats()
		}
		return nil
	}
	var mu sync.Mutex
	var seen []string
	lookAll := func(ctx context.Context, c *redis.Client) error {
		mu.Lock()
		defer mu.Unlock()
		seen = append(seen, c.Options().Addr)
		return look(ctx, c)
	}
	err1 := cc.ForEachMaster(ctx, lookAll)
	err2 := cc.ForEachSlave(ctx, lookAll)
	if st == nil {
		t.Logf("nodePool %s: not among %v (%v, %v)", addr, seen, err1, err2)
	}
	return st, st != nil
}

// failoverStore is a DialRedis store (so OnConnect reads epochs) over the
// cluster, with one grant made and released for each id.
func failoverStore(t *testing.T, c *redistest.Cluster, prefix string, ids []string) (*lease.Redis, *redis.ClusterClient) {
	t.Helper()
	s := lease.DialRedis(&redis.UniversalOptions{Addrs: c.Addrs(), IsClusterMode: true}, prefix)
	t.Cleanup(func() { s.Client().Close() })
	ctx := context.Background()
	for _, id := range ids {
		g, err := s.Acquire(ctx, id, "p", time.Second, lease.Session{})
		if err != nil {
			t.Fatalf("acquire %s: %v", id, err)
		}
		if err := s.Release(ctx, id, g.Token, 1); err != nil {
			t.Fatalf("release %s: %v", id, err)
		}
	}
	return s, s.Client().(*redis.ClusterClient)
}

// grantOnNode acquires and releases id until the grant is made on node.
func grantOnNode(t *testing.T, s *lease.Redis, node *redistest.Server, id string) lease.Grant {
	t.Helper()
	ctx := context.Background()
	var g lease.Grant
	nc := node.Client()
	wait.For(t, 30*time.Second, func() error {
		var err error
		if g, err = s.Acquire(ctx, id, "p", time.Second, lease.Session{}); err != nil {
			return err
		}
		s.Release(ctx, id, g.Token, 1)
		if f, _ := nc.Get(ctx, s.Keys(id)[0]).Uint64(); f != g.Token.Fence {
			return fmt.Errorf("fence %d granted, %s holds %d: not on it yet", g.Token.Fence, node.Addr(), f)
		}
		return nil
	})
	return g
}

// TestRedisClusterFailoverToPooledReplica: a ClusterClient holds a pooled
// connection to a replica (made when it loaded the cluster state from
// it). The replica is promoted (CLUSTER FAILOVER). A grant on it must
// carry an epoch start at or after the failover and a fence above the
// floor of the new epoch, as a grant after a Sentinel failover does.
func TestRedisClusterFailoverToPooledReplica(t *testing.T) {
	c := redistest.StartCluster(t, 3)
	replica := c.AddReplica(1)
	ids := idsOnEveryNode(t, c, lease.NewRedis(nil, "cf", 0))

	// withConn: a store whose client holds a connection to the replica;
	// control: one that holds none when the failover happens.
	var s, control *lease.Redis
	var cc, ccControl *redis.ClusterClient
	s, cc = failoverStore(t, c, "cf", ids)
	// The client connects (or tries to) to the replica when it loads the
	// cluster state from it: reloaded until it has.
	reloads := 0
	wait.For(t, 30*time.Second, func() error {
		if st, ok := nodePool(t, cc, replica.Addr()); ok && st.Misses > 0 {
			return nil
		}
		reloads++
		cc.ReloadState(context.Background())
		return fmt.Errorf("the client never connected to the replica %s (%d state reloads)", replica.Addr(), reloads)
	})
	st, _ := nodePool(t, cc, replica.Addr())
	t.Logf("store: pooled connections to replica %s after %d state reloads: %+v", replica.Addr(), reloads, *st)
	for try := 0; ; try++ {
		control, ccControl = failoverStore(t, c, "cf", ids)
		if st, ok := nodePool(t, ccControl, replica.Addr()); !ok || st.TotalConns == 0 {
			break
		}
		if try == 10 {
			t.Fatalf("control store keeps getting a replica connection")
		}
	}
	before := grantOnNode(t, s, c.Nodes[1], ids[1])
	t.Logf("before failover: grant on %s: fence %d, epoch start %v", c.Nodes[1].Addr(), before.Token.Fence, before.EpochStart.Format(time.RFC3339Nano))

	failover := time.Now()
	c.Failover(1)
	t.Logf("failover: %s promoted at about %v", c.Nodes[1].Addr(), failover.Format(time.RFC3339Nano))

	for _, tc := range []struct {
		name string
		s    *lease.Redis
		cc   *redis.ClusterClient
	}{{"store with pooled replica conn", s, cc}, {"control (no pooled replica conn)", control, ccControl}} {
		g := grantOnNode(t, tc.s, c.Nodes[1], ids[1])
		st, _ := nodePool(t, tc.cc, c.Nodes[1].Addr())
		t.Logf("%s: grant on promoted %s: fence %d (floor of the failover %d), epoch start %v; pool of that node %+v",
			tc.name, c.Nodes[1].Addr(), g.Token.Fence, uint64(failover.UnixMilli())*1000, g.EpochStart.Format(time.RFC3339Nano), st)
		if g.EpochStart.Before(failover) {
			t.Errorf("%s: epoch start %v, before the failover at %v: dispatch would not wait for leases the promotion may have lost", tc.name, g.EpochStart, failover)
		}
		if g.Token.Fence <= uint64(failover.UnixMilli())*1000 {
			t.Errorf("%s: fence %d after the failover, not above the new epoch's floor %d", tc.name, g.Token.Fence, uint64(failover.UnixMilli())*1000)
		}
	}
}

// TestRedisClusterFailoverBackPooledMaster: a store's client holds
// connections to master A. A fails over to its replica B (A becomes B's
// replica), then back to A. A grant on A after the failback must carry
// an epoch start at or after it: what B granted meanwhile may be lost
// (not here: a manual failover loses nothing, but the store cannot tell).
func TestRedisClusterFailoverBackPooledMaster(t *testing.T) {
	c := redistest.StartCluster(t, 3)
	c.AddReplica(1)
	ids := idsOnEveryNode(t, c, lease.NewRedis(nil, "fb", 0))
	s, cc := failoverStore(t, c, "fb", ids)
	a := c.Nodes[1]
	grantOnNode(t, s, a, ids[1])
	st, _ := nodePool(t, cc, a.Addr())
	t.Logf("before: pool of A %s: %+v", a.Addr(), *st)

	first := time.Now()
	c.Failover(1)
	b := c.Nodes[1]
	onB := grantOnNode(t, s, b, ids[1])
	t.Logf("on B %s after the failover: fence %d, epoch start %v (failover at %v)", b.Addr(), onB.Token.Fence, onB.EpochStart.Format(time.RFC3339Nano), first.Format(time.RFC3339Nano))
	if onB.EpochStart.Before(first) {
		t.Errorf("on B: epoch start %v before the failover at %v", onB.EpochStart, first)
	}
	st, _ = nodePool(t, cc, a.Addr())
	t.Logf("A demoted: pool of A: %+v", st)

	back := time.Now()
	c.Failover(1)
	t.Logf("failback to A asked at %v, done at %v", back.Format(time.RFC3339Nano), time.Now().Format(time.RFC3339Nano))
	onA := grantOnNode(t, s, a, ids[1])
	st, _ = nodePool(t, cc, a.Addr())
	t.Logf("on A after the failback: fence %d (floor %d), epoch start %v (failback at %v); pool of A %+v",
		onA.Token.Fence, uint64(back.UnixMilli())*1000, onA.EpochStart.Format(time.RFC3339Nano), back.Format(time.RFC3339Nano), st)
	if onA.EpochStart.Before(back) {
		t.Errorf("on A: epoch start %v before the failback at %v: dispatch would not wait for B's leases", onA.EpochStart, back)
	}
	if onA.Token.Fence <= uint64(back.UnixMilli())*1000 {
		t.Errorf("on A: fence %d not above the failback's floor %d", onA.Token.Fence, uint64(back.UnixMilli())*1000)
	}
}
