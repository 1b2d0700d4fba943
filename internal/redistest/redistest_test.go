package redistest_test

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/edgegate/edgegate/internal/redistest"
	"github.com/edgegate/edgegate/internal/wait"
)

// TestStartCluster: three masters share the slots; the URL parses as a
// cluster URL; each node keeps its nodes.conf in its own directory; a
// restarted node comes back as the same node with the same slots, a new
// run_id and none of its keys.
func TestStartCluster(t *testing.T) {
	if testing.Short() {
		t.Skip("long: a Redis Cluster")
	}
	start := time.Now()
	c := redistest.StartCluster(t, 3)
	t.Logf("cluster ok in %v", time.Since(start))
	ctx := context.Background()
	o, err := redis.ParseClusterURL(c.URL())
	if err != nil || !slices.Equal(o.Addrs, c.Addrs()) {
		t.Fatalf("URL %s parses to %v, %v: want the addresses %v", c.URL(), o.Addrs, err, c.Addrs())
	}
	for i, s := range c.Nodes {
		if _, err := os.Stat(filepath.Join(dirOf(t, s), "nodes.conf")); err != nil {
			t.Fatalf("node %d: %v", i, err)
		}
	}
	cc := c.Client()
	keys := map[int]string{} // a key on each node
	for k := 0; len(keys) < 3 && k < 1000; k++ {
		key := "k" + strings.Repeat("x", k)
		keys[c.NodeOf(key)] = key
	}
	if len(keys) != 3 {
		t.Fatalf("keys on %d nodes, want 3", len(keys))
	}
	for _, key := range keys {
		if err := cc.Set(ctx, key, "v", 0).Err(); err != nil {
			t.Fatal(err)
		}
	}

	node := c.Nodes[1].Client()
	id1, run1, slots1 := nodeState(t, node)
	start = time.Now()
	c.RestartNode(1)
	t.Logf("restarted node ok in %v", time.Since(start))
	id2, run2, slots2 := nodeState(t, node)
	if id2 != id1 || run2 == run1 || !slices.Equal(slots2, slots1) {
		t.Fatalf("after restart: node id %s (was %s), run_id %s (was %s), slots %v (were %v): want the same node and slots, a new run_id",
			id2, id1, run2, run1, slots2, slots1)
	}
	for i, key := range keys {
		want := int64(1)
		if i == 1 {
			want = 0
		}
		if n, err := cc.Exists(ctx, key).Result(); err != nil || n != want {
			t.Errorf("node %d: exists %s = %d, %v after node 1 restarted: want only node 1's key lost", i, key, n, err)
		}
	}
}

// TestStartSentinel: the URL parses as a failover URL naming the Sentinel
// and the master; a failover client writes through the master; after
// Failover the former replica is the master, with a run_id of its own and
// the key, and the client writes there.
func TestStartSentinel(t *testing.T) {
	start := time.Now()
	s := redistest.StartSentinel(t, "m")
	t.Logf("sentinel ready in %v", time.Since(start))
	o, err := redis.ParseFailoverURL(s.URL())
	if err != nil || o.MasterName != "m" || !slices.Equal(o.SentinelAddrs, []string{s.Addr()}) {
		t.Fatalf("URL %s parses to master %q, sentinels %v, %v: want m at %s", s.URL(), o.MasterName, o.SentinelAddrs, err, s.Addr())
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	fc := redis.NewFailoverClient(o)
	defer fc.Close()
	if err := fc.Set(ctx, "k", "before", 0).Err(); err != nil {
		t.Fatal(err)
	}
	master, replica := s.Master, s.Replica
	run1 := runIDOf(t, master.Client())
	// The key reaches the replica before the failover, so that it is not
	// lost in it.
	rc := replica.Client()
	wait.True(t, 30*time.Second, "the key reached the replica", func() bool {
		v, _ := rc.Get(ctx, "k").Result()
		return v == "before"
	})
	start = time.Now()
	s.Failover()
	t.Logf("failed over in %v", time.Since(start))
	if s.Master != replica || s.Replica != master {
		t.Fatalf("after Failover Master is %s and Replica %s: want them swapped (%s, %s)", s.Master.Addr(), s.Replica.Addr(), replica.Addr(), master.Addr())
	}
	if addr, err := s.Client().GetMasterAddrByName(ctx, "m").Result(); err != nil || strings.Join(addr, ":") != replica.Addr() {
		t.Fatalf("the sentinel names %v, %v as the master: want %s", addr, err, replica.Addr())
	}
	if run2 := runIDOf(t, s.Master.Client()); run2 == run1 {
		t.Errorf("the new master has the old master's run_id %s", run1)
	}
	// The failover client follows the Sentinel to the new master.
	mc := s.Master.Client()
	wait.For(t, 30*time.Second, func() error {
		if err := fc.Set(ctx, "k", "after", 0).Err(); err != nil {
			return fmt.Errorf("the failover client never wrote to the new master: %w", err)
		}
		if v, _ := mc.Get(ctx, "k").Result(); v != "after" {
			return fmt.Errorf("the failover client wrote, the new master holds %q", v)
		}
		return nil
	})
}

// runIDOf returns the run_id of INFO server.
func runIDOf(t *testing.T, c *redis.Client) string {
	t.Helper()
	info, err := c.Info(context.Background(), "server").Result()
	if err != nil {
		t.Fatal(err)
	}
	for _, line := range strings.Split(info, "\r\n") {
		if v, ok := strings.CutPrefix(line, "run_id:"); ok {
			return v
		}
	}
	t.Fatalf("no run_id in INFO server")
	return ""
}

// dirOf returns the directory of s: the --dir of its CONFIG.
func dirOf(t *testing.T, s *redistest.Server) string {
	t.Helper()
	cfg, err := s.Client().ConfigGet(context.Background(), "dir").Result()
	if err != nil {
		t.Fatal(err)
	}
	return cfg["dir"]
}

// nodeState returns a node's cluster id, run_id and the slot ranges it
// serves.
func nodeState(t *testing.T, c *redis.Client) (id, runID string, slots []string) {
	t.Helper()
	ctx := context.Background()
	id, err := c.ClusterMyID(ctx).Result()
	if err != nil {
		t.Fatal(err)
	}
	info, err := c.Info(ctx, "server").Result()
	if err != nil {
		t.Fatal(err)
	}
	for _, line := range strings.Split(info, "\r\n") {
		if v, ok := strings.CutPrefix(line, "run_id:"); ok {
			runID = v
		}
	}
	nodes, err := c.ClusterNodes(ctx).Result()
	if err != nil {
		t.Fatal(err)
	}
	for _, line := range strings.Split(nodes, "\n") {
		f := strings.Fields(line)
		if len(f) > 8 && f[0] == id {
			slots = f[8:]
		}
	}
	if runID == "" || len(slots) == 0 {
		t.Fatalf("node %s: run_id %q, slots %v", id, runID, slots)
	}
	return id, runID, slots
}
