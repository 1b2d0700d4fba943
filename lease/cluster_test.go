package lease_test

import (
	"context"
	"errors"
	"fmt"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/edgegate/edgegate/internal/redistest"
	"github.com/edgegate/edgegate/internal/wait"
	"github.com/edgegate/edgegate/lease"
)

// clusterStore returns a store on a client built from the cluster's URL
// the way the appliance builds it (lease.redis_mode cluster).
func clusterStore(t *testing.T, c *redistest.Cluster, prefix string) *lease.Redis {
	t.Helper()
	opts, err := lease.RedisOptions(c.URL(), "cluster")
	if err != nil {
		t.Fatalf("RedisOptions(%s): %v", c.URL(), err)
	}
	rc := redis.NewUniversalClient(opts)
	t.Cleanup(func() { rc.Close() })
	if _, ok := rc.(*redis.ClusterClient); !ok {
		t.Fatalf("client for %s is a %T, want a cluster client", c.URL(), rc)
	}
	return lease.NewRedis(rc, prefix, opts.DB)
}

// idsOnEveryNode returns a controller id whose keys node i serves, for
// every node i.
func idsOnEveryNode(t *testing.T, c *redistest.Cluster, s *lease.Redis) []string {
	t.Helper()
	ids := make([]string, len(c.Nodes))
	for k, found := 0, 0; found < len(ids); k++ {
		if k == 1000 {
			t.Fatalf("no controller on every node in %d ids: %v", k, ids)
		}
		id := fmt.Sprintf("ctl-%d", k)
		if i := c.NodeOf(s.Keys(id)[1]); ids[i] == "" {
			ids[i] = id
			found++
		}
	}
	return ids
}

// stableEpoch reads the epoch n times in a row and fails unless every
// read returns the same value, which it returns.
func stableEpoch(t *testing.T, s *lease.Redis, n int) string {
	t.Helper()
	ctx := context.Background()
	var first string
	for i := 0; i < n; i++ {
		e, err := s.Epoch(ctx)
		if err != nil {
			t.Fatalf("Epoch call %d: %v", i+1, err)
		}
		if i == 0 {
			first = e
		} else if e != first {
			t.Fatalf("Epoch call %d returned %q, call 1 %q: the epoch of a Redis Cluster changed with nothing restarted (every change pauses dispatch for a lease)", i+1, e, first)
		}
	}
	return first
}

// TestRedisClusterEpoch: over a Redis Cluster of three masters the epoch
// is the same on every call, changes when one master restarts (that
// master's leases are gone), and is stable again after.
func TestRedisClusterEpoch(t *testing.T) {
	if testing.Short() {
		t.Skip("long: a Redis Cluster")
	}
	c := redistest.StartCluster(t, 3)
	s := clusterStore(t, c, "")
	ctx := context.Background()
	before := stableEpoch(t, s, 20)

	ids := idsOnEveryNode(t, c, s)
	for _, id := range ids {
		if _, err := s.Acquire(ctx, id, "p", time.Minute, lease.Session{}); err != nil {
			t.Fatalf("acquire %s: %v", id, err)
		}
	}
	c.RestartNode(1)
	// The client may see the restarted node's closed connections first.
	var after string
	wait.For(t, 10*time.Second, func() error {
		var err error
		if after, err = s.Epoch(ctx); err != nil {
			return fmt.Errorf("Epoch after the restart: %w", err)
		}
		return nil
	})
	if after == before {
		t.Fatalf("epoch %q after master 1 restarted: unchanged, yet its leases are gone", after)
	}
	if again := stableEpoch(t, s, 20); again != after {
		t.Fatalf("epoch %q, then %q: want it stable after the restart", after, again)
	}
	for i, id := range ids {
		st, err := s.Inspect(ctx, id)
		if err != nil || st.Locked != (i != 1) {
			t.Errorf("%s on node %d after node 1 restarted: %+v, %v: want the lease gone only on node 1", id, i, st, err)
		}
	}
}

// TestRedisClusterLeases: controllers whose keys live on different
// masters are acquired, kept and released, each on its own node.
func TestRedisClusterLeases(t *testing.T) {
	if testing.Short() {
		t.Skip("long: a Redis Cluster")
	}
	c := redistest.StartCluster(t, 3)
	s := clusterStore(t, c, "")
	ctx := context.Background()
	const ttl = 10 * time.Second
	for i, id := range idsOnEveryNode(t, c, s) {
		g, err := s.Acquire(ctx, id, "poolA", ttl, lease.Session{})
		if err != nil || !g.Fresh || g.Done != 0 {
			t.Fatalf("%s (node %d): acquire %+v, %v: want a fresh grant", id, i, g, err)
		}
		if _, err := s.Acquire(ctx, id, "poolB", ttl, lease.Session{}); !errors.Is(err, lease.ErrHeld) {
			t.Fatalf("%s: second acquire: %v, want ErrHeld", id, err)
		}
		if err := s.Keep(ctx, id, g.Token, ttl, 5); err != nil {
			t.Fatalf("%s: keep: %v", id, err)
		}
		st, err := s.Inspect(ctx, id)
		if err != nil || !st.Locked || st.Token != g.Token || st.Done != 5 {
			t.Fatalf("%s: inspect %+v, %v: want locked by %v, done 5", id, st, err, g.Token)
		}
		if err := s.Release(ctx, id, g.Token, 7); err != nil {
			t.Fatalf("%s: release: %v", id, err)
		}
		g2, err := s.Acquire(ctx, id, "poolB", ttl, lease.Session{})
		if err != nil || g2.Fresh || g2.Done != 7 || g2.Token.Fence <= g.Token.Fence {
			t.Fatalf("%s: grant after release %+v, %v: want done 7, a fence above %d", id, g2, err, g.Token.Fence)
		}
		if err := s.Release(ctx, id, g2.Token, 8); err != nil {
			t.Fatalf("%s: release: %v", id, err)
		}
		// The keys are on node i itself: it answers for them without
		// a redirect.
		n, err := c.Nodes[i].Client().Exists(ctx, s.Keys(id)[0], s.Keys(id)[3], s.Keys(id)[4]).Result()
		if err != nil || n != 3 {
			t.Fatalf("%s: node %d holds %d of its fence, done and rel keys (%v), want 3", id, i, n, err)
		}
	}
}

// TestRedisClusterStore runs the Store contract over a Redis Cluster.
func TestRedisClusterStore(t *testing.T) {
	if testing.Short() {
		t.Skip("long: a Redis Cluster")
	}
	c := redistest.StartCluster(t, 3)
	n := 0
	storeContract(t, func(t *testing.T) lease.Store {
		n++ // a fresh prefix per case
		return clusterStore(t, c, fmt.Sprintf("tc%d", n))
	})
}
