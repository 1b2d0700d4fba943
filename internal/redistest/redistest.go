// Package redistest starts real redis-server processes for tests, each on
// a free loopback port with its own directory.
package redistest

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/edgegate/edgegate/internal/faultproxy"
	"github.com/edgegate/edgegate/internal/wait"
)

// Server is a redis-server process owned by a test.
type Server struct {
	t    testing.TB
	dir  string
	port int
	cmd  *exec.Cmd
	exit chan struct{}
	args []string    // extra redis-server arguments, kept for Restart
	tls  *tls.Config // readiness checks dial with TLS when set
	conf string      // a Sentinel's config file: run as redis-server <conf> --sentinel
}

// Start starts redis-server on a free loopback port and stops it when the
// test ends. Without redis-server on PATH the test fails when
// EDGEGATE_REQUIRE_REDIS is set (CI sets it) and is skipped otherwise.
func Start(t testing.TB, args ...string) *Server {
	t.Helper()
	requireRedis(t)
	s := &Server{t: t, dir: t.TempDir(), args: args}
	s.port = freePort(t)
	s.start()
	t.Cleanup(s.Kill)
	return s
}

// StartTLS starts redis-server with TLS only (no plain port), requiring
// client certificates signed by caFile, with extra ACL lines such as
// "user default off". Readiness is checked over TLS without credentials:
// an authentication error means the server is up.
func StartTLS(t testing.TB, certFile, keyFile, caFile string, aclLines ...string) *Server {
	t.Helper()
	cert, err := tls.LoadX509KeyPair(certFile, keyFile)
	if err != nil {
		t.Fatalf("redistest: %v", err)
	}
	pem, err := os.ReadFile(caFile)
	if err != nil {
		t.Fatalf("redistest: %v", err)
	}
	roots := x509.NewCertPool()
	roots.AppendCertsFromPEM(pem)
	dir := t.TempDir()
	acl := filepath.Join(dir, "users.acl")
	if err := os.WriteFile(acl, []byte(strings.Join(aclLines, "\n")+"\n"), 0o600); err != nil {
		t.Fatalf("redistest: %v", err)
	}
	// The server's own certificate serves as the readiness check's client
	// certificate (the test CA signs it for both uses).
	port := freePort(t)
	args := []string{"--port", "0", "--tls-port", strconv.Itoa(port), "--tls-cert-file", certFile, "--tls-key-file", keyFile,
		"--tls-ca-cert-file", caFile, "--tls-auth-clients", "yes", "--aclfile", acl}
	if _, err := exec.LookPath("redis-server"); err != nil {
		return Start(t) // fails or skips with the message of Start
	}
	s := &Server{t: t, dir: dir, port: port, args: args,
		tls: &tls.Config{RootCAs: roots, Certificates: []tls.Certificate{cert}, ServerName: "127.0.0.1"}}
	s.start()
	t.Cleanup(s.Kill)
	return s
}

// requireRedis fails or skips the test without redis-server on PATH (see
// Start).
func requireRedis(t testing.TB) {
	t.Helper()
	if _, err := exec.LookPath("redis-server"); err != nil {
		if os.Getenv("EDGEGATE_REQUIRE_REDIS") != "" {
			t.Fatalf("redis-server not found on PATH and EDGEGATE_REQUIRE_REDIS is set: install it (apt-get install redis-server)")
		}
		t.Skip("redis-server not found on PATH: skipping this Redis test (install redis-server to run it; CI requires it)")
	}
}

func freePort(t testing.TB) int { return freePorts(t, 1)[0] }

func (s *Server) start() {
	s.t.Helper()
	var args []string
	if s.conf != "" {
		// The config file must be the first argument; the options below
		// apply to a Sentinel too (it rewrites them into the file).
		args = []string{s.conf, "--sentinel"}
	}
	args = append(args,
		"--port", strconv.Itoa(s.port), "--bind", "127.0.0.1",
		"--save", "", "--appendonly", "no", "--dir", s.dir,
		"--protected-mode", "no", "--loglevel", "warning",
	)
	args = append(args, s.args...) // a later --port wins
	s.cmd = exec.Command("redis-server", args...)
	logf, err := os.OpenFile(s.dir+"/redis.log", os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o600)
	if err != nil {
		s.t.Fatalf("redistest: %v", err)
	}
	defer logf.Close()
	s.cmd.Stdout, s.cmd.Stderr = logf, logf
	if err := s.cmd.Start(); err != nil {
		s.t.Fatalf("redistest: start redis-server: %v", err)
	}
	s.exit = make(chan struct{})
	go func(cmd *exec.Cmd, exit chan struct{}) { cmd.Wait(); close(exit) }(s.cmd, s.exit)
	c := redis.NewClient(&redis.Options{Addr: s.Addr(), TLSConfig: s.tls})
	defer c.Close()
	wait.For(s.t, 10*time.Second, func() error {
		ctx, cancel := context.WithTimeout(context.Background(), time.Second)
		err := c.Ping(ctx).Err()
		cancel()
		var rerr redis.Error
		if err == nil || errors.As(err, &rerr) { // NOAUTH and the like: it answers
			return nil
		}
		select {
		case <-s.exit:
			s.t.Fatalf("redistest: redis-server exited at start (port %d taken?)", s.port)
		default:
		}
		return fmt.Errorf("redistest: redis-server not answering PING: %w", err)
	})
}

// Addr returns host:port.
func (s *Server) Addr() string { return fmt.Sprintf("127.0.0.1:%d", s.port) }

// URL returns redis://host:port/0.
func (s *Server) URL() string { return "redis://" + s.Addr() + "/0" }

// Client returns a client closed at the end of the test.
// Proxy starts a fault-injection relay to s, closed at cleanup: dial its
// Addr to reach s through faults.
func (s *Server) Proxy() *faultproxy.Proxy {
	s.t.Helper()
	p, err := faultproxy.New(s.Addr())
	if err != nil {
		s.t.Fatal(err)
	}
	s.t.Cleanup(p.Close)
	return p
}

func (s *Server) Client() *redis.Client {
	c := redis.NewClient(&redis.Options{Addr: s.Addr()})
	s.t.Cleanup(func() { c.Close() })
	return c
}

// Kill stops the server with SIGKILL (all keys are lost: nothing is saved).
func (s *Server) Kill() {
	if s.cmd == nil || s.cmd.Process == nil {
		return
	}
	s.cmd.Process.Kill()
	<-s.exit
}

// Restart kills the server and starts a new one on the same port: a new
// run_id and no keys.
func (s *Server) Restart() {
	s.t.Helper()
	s.Kill()
	s.start()
}

// clusterSlots is the number of hash slots of a Redis Cluster.
const clusterSlots = 16384

// Cluster is a Redis Cluster of masters without replicas, each a Server
// with its own directory, where its nodes.conf lives.
type Cluster struct {
	t     testing.TB
	Nodes []*Server
	bus   []int    // the cluster bus port of each node
	probe []string // a key served by each node, for the readiness check
	// Replicas[i] replicates Nodes[i] (nil: none). Failover swaps them.
	Replicas []*Server
}

// StartCluster starts a Redis Cluster of n masters and stops it when the
// test ends. Node i serves the i-th of n even ranges of the 16384 slots.
// It returns once every node says the cluster is ok and knows all n
// nodes, and a cluster client can write to every node. Without
// redis-server it fails or skips like Start.
func StartCluster(t testing.TB, n int) *Cluster {
	t.Helper()
	requireRedis(t)
	if n < 1 || n > clusterSlots {
		t.Fatalf("redistest: a cluster of %d nodes", n)
	}
	c := &Cluster{t: t}
	for i := 0; i < n; i++ {
		// The bus port is chosen too: the default, port+10000, may be
		// taken or above 65535. nodes.conf is relative to --dir, so it
		// stays in the node's directory and Restart finds it again.
		ports := freePorts(t, 2)
		s := &Server{t: t, dir: t.TempDir(), port: ports[0], args: []string{
			"--cluster-enabled", "yes", "--cluster-config-file", "nodes.conf",
			"--cluster-node-timeout", "5000", "--cluster-port", strconv.Itoa(ports[1]),
		}}
		s.start()
		t.Cleanup(s.Kill)
		c.Nodes = append(c.Nodes, s)
		c.bus = append(c.bus, ports[1])
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	for i, s := range c.Nodes {
		rc := redis.NewClient(&redis.Options{Addr: s.Addr()})
		lo, hi := c.slots(i)
		err := rc.Do(ctx, "cluster", "addslotsrange", lo, hi).Err()
		// Every node meets all those before it, rather than waiting for
		// gossip to introduce them. MEET takes the bus port: it is not
		// port+10000.
		for j := 0; j < i && err == nil; j++ {
			err = rc.Do(ctx, "cluster", "meet", "127.0.0.1", c.Nodes[j].port, c.bus[j]).Err()
		}
		rc.Close()
		if err != nil {
			t.Fatalf("redistest: cluster node %d (%s): %v", i, s.Addr(), err)
		}
	}
	c.probe = make([]string, n)
	rc := redis.NewClient(&redis.Options{Addr: c.Nodes[0].Addr()})
	defer rc.Close()
	for k, found := 0, 0; found < n; k++ {
		if k == 100*n+1000 {
			t.Fatalf("redistest: no probe key for every node in %d keys", k)
		}
		key := fmt.Sprintf("redistest:probe:%d", k)
		slot, err := rc.ClusterKeySlot(ctx, key).Result()
		if err != nil {
			t.Fatalf("redistest: cluster keyslot: %v", err)
		}
		if i := c.nodeOfSlot(int(slot)); c.probe[i] == "" {
			c.probe[i] = key
			found++
		}
	}
	c.waitOK()
	return c
}

// waitOK waits until every node says cluster_state:ok and knows every
// node, and a new cluster client can SET and GET a key on every node.
func (c *Cluster) waitOK() {
	c.t.Helper()
	waitFor(c.t, 30*time.Second, "the cluster", c.check)
}

// freePorts returns k distinct free loopback ports.
func freePorts(t testing.TB, k int) []int {
	t.Helper()
	var ports []int
	for range k {
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		defer ln.Close() // held until all are chosen, so they differ
		ports = append(ports, ln.Addr().(*net.TCPAddr).Port)
	}
	return ports
}

// slots returns the range of slots node i serves.
func (c *Cluster) slots(i int) (lo, hi int) {
	n := len(c.Nodes)
	return i * clusterSlots / n, (i+1)*clusterSlots/n - 1
}

func (c *Cluster) nodeOfSlot(slot int) int {
	for i := range c.Nodes {
		if _, hi := c.slots(i); slot <= hi {
			return i
		}
	}
	return len(c.Nodes) - 1
}

// check returns why the cluster is not ready, nil when it is.
func (c *Cluster) check(ctx context.Context) error {
	known := len(c.Nodes)
	for _, r := range c.Replicas {
		if r != nil {
			known++
		}
	}
	want := fmt.Sprintf("cluster_known_nodes:%d", known)
	for i, s := range c.Nodes {
		rc := redis.NewClient(&redis.Options{Addr: s.Addr()})
		info, err := rc.ClusterInfo(ctx).Result()
		rc.Close()
		if err != nil {
			return fmt.Errorf("node %d: cluster info: %w", i, err)
		}
		if l := missingLine(info, "cluster_state:ok", want); l != "" {
			return fmt.Errorf("node %d: cluster info without %s:\n%s", i, l, info)
		}
	}
	cc := redis.NewClusterClient(&redis.ClusterOptions{Addrs: c.Addrs(), MaxRetries: -1})
	defer cc.Close()
	for i, key := range c.probe {
		if err := cc.Set(ctx, key, i, 0).Err(); err != nil {
			return fmt.Errorf("node %d: set %s: %w", i, key, err)
		}
		if v, err := cc.Get(ctx, key).Int(); err != nil || v != i {
			return fmt.Errorf("node %d: get %s: %d, %v", i, key, v, err)
		}
	}
	return nil
}

// Addrs returns host:port of every node.
func (c *Cluster) Addrs() []string {
	var out []string
	for _, s := range c.Nodes {
		out = append(out, s.Addr())
	}
	return out
}

// URL returns the cluster URL of lease.redis_mode cluster and go-redis
// ParseClusterURL: redis://host1:port1?addr=host2:port2&addr=host3:port3.
func (c *Cluster) URL() string {
	u, sep := "redis://"+c.Nodes[0].Addr(), "?"
	for _, s := range c.Nodes[1:] {
		u += sep + "addr=" + s.Addr()
		sep = "&"
	}
	return u
}

// Client returns a cluster client closed at the end of the test.
func (c *Cluster) Client() *redis.ClusterClient {
	cc := redis.NewClusterClient(&redis.ClusterOptions{Addrs: c.Addrs()})
	c.t.Cleanup(func() { cc.Close() })
	return cc
}

// NodeOf returns the index in Nodes of the node that serves key.
func (c *Cluster) NodeOf(key string) int {
	c.t.Helper()
	rc := redis.NewClient(&redis.Options{Addr: c.Nodes[0].Addr()})
	defer rc.Close()
	slot, err := rc.ClusterKeySlot(context.Background(), key).Result()
	if err != nil {
		c.t.Fatalf("redistest: cluster keyslot %s: %v", key, err)
	}
	return c.nodeOfSlot(int(slot))
}

// RestartNode kills node i and starts it again on the same ports with its
// nodes.conf: it rejoins as the same node with the same slots, a new
// run_id and no keys (a master that restarted). It returns once the
// cluster is ok again (a restarted master waits about 2s before it takes
// writes).
func (c *Cluster) RestartNode(i int) {
	c.t.Helper()
	c.Nodes[i].Restart()
	c.waitOK()
}

// Sentinel is a master, one replica of it and one Redis Sentinel that
// monitors them under a master name (lease.redis_mode sentinel), each a
// Server with its own directory.
type Sentinel struct {
	t    testing.TB
	name string
	// Master is the master. Failover swaps Master and Replica.
	Master *Server
	// Replica replicates Master. After a Failover it is the former
	// master, which the Sentinel turns into a replica of the new one some
	// seconds later.
	Replica  *Server
	sentinel *Server
}

// StartSentinel starts a master, a replica and a Sentinel monitoring them
// as name with a quorum of 1, and stops them when the test ends. It
// returns once the replica's link to the master is up and the Sentinel
// names the master and knows the replica as a healthy one (a replica it
// could promote). Without redis-server it fails or skips like Start.
func StartSentinel(t testing.TB, name string) *Sentinel {
	t.Helper()
	requireRedis(t)
	// Without a delay a master starts a replica's full sync at once, not
	// after 5s in case more replicas come (both may be the master).
	nodelay := []string{"--repl-diskless-sync-delay", "0"}
	master := Start(t, nodelay...)
	replica := Start(t, append(nodelay, "--replicaof", "127.0.0.1", strconv.Itoa(master.port))...)
	waitFor(t, 10*time.Second, "the replica's link to the master", func(ctx context.Context) error {
		return checkRole(ctx, replica, "slave", "master_link_status:up")
	})
	// The Sentinel starts after the link is up: its first INFO of the
	// master lists the replica (the next comes 10s later).
	dir := t.TempDir()
	conf := filepath.Join(dir, "sentinel.conf")
	lines := []string{
		fmt.Sprintf("sentinel monitor %s 127.0.0.1 %d 1", name, master.port),
		fmt.Sprintf("sentinel down-after-milliseconds %s 2000", name),
		fmt.Sprintf("sentinel failover-timeout %s 5000", name),
	}
	if err := os.WriteFile(conf, []byte(strings.Join(lines, "\n")+"\n"), 0o600); err != nil {
		t.Fatalf("redistest: %v", err)
	}
	sen := &Server{t: t, dir: dir, port: freePort(t), conf: conf}
	sen.start()
	t.Cleanup(sen.Kill)
	s := &Sentinel{t: t, name: name, Master: master, Replica: replica, sentinel: sen}
	waitFor(t, 20*time.Second, "the Sentinel knowing the master and its replica", s.checkReplica)
	return s
}

// Name returns the master name.
func (s *Sentinel) Name() string { return s.name }

// Addr returns the Sentinel's host:port.
func (s *Sentinel) Addr() string { return s.sentinel.Addr() }

// URL returns the URL of lease.redis_mode sentinel and go-redis
// ParseFailoverURL: redis://host:port?master_name=name, host:port being
// the Sentinel's.
func (s *Sentinel) URL() string { return "redis://" + s.Addr() + "?master_name=" + s.name }

// Client returns a client of the Sentinel itself, closed at the end of the
// test.
func (s *Sentinel) Client() *redis.SentinelClient {
	c := redis.NewSentinelClient(&redis.Options{Addr: s.Addr()})
	s.t.Cleanup(func() { c.Close() })
	return c
}

// Failover makes the Sentinel fail over (SENTINEL FAILOVER) and returns
// once it names the former replica as the master and that node says it
// is one; then Master and Replica are swapped. The new master has a run_id
// of its own, and holds what had reached it by replication.
func (s *Sentinel) Failover() {
	s.t.Helper()
	sc := redis.NewSentinelClient(&redis.Options{Addr: s.Addr()})
	defer sc.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	err := sc.Failover(ctx, s.name).Err()
	cancel()
	if err != nil {
		s.t.Fatalf("redistest: sentinel failover %s: %v", s.name, err)
	}
	next := s.Replica
	waitFor(s.t, 20*time.Second, "the failover to "+next.Addr(), func(ctx context.Context) error {
		if err := s.checkMaster(ctx, next); err != nil {
			return err
		}
		return checkRole(ctx, next, "master")
	})
	s.Master, s.Replica = s.Replica, s.Master
}

// ReadyToFailover returns why the Sentinel would not fail over yet (it
// does not know Master and a healthy Replica), nil when it would.
func (s *Sentinel) ReadyToFailover(ctx context.Context) error { return s.checkReplica(ctx) }

// checkReplica returns why the Sentinel does not know Master and a
// healthy Replica yet, nil when it does.
func (s *Sentinel) checkReplica(ctx context.Context) error {
	if err := s.checkMaster(ctx, s.Master); err != nil {
		return err
	}
	sc := redis.NewSentinelClient(&redis.Options{Addr: s.Addr()})
	defer sc.Close()
	replicas, err := sc.Replicas(ctx, s.name).Result()
	if err != nil {
		return fmt.Errorf("sentinel replicas %s: %w", s.name, err)
	}
	want := strconv.Itoa(s.Replica.port)
	for _, r := range replicas {
		if r["ip"] != "127.0.0.1" || r["port"] != want {
			continue
		}
		// The flags are exactly "slave": no s_down, disconnected or the
		// like. A run_id and a link status come with the Sentinel's first
		// INFO of the replica, which it needs before it can promote it.
		if r["flags"] != "slave" || r["runid"] == "" || r["master-link-status"] != "ok" {
			return fmt.Errorf("sentinel replicas %s: %s has flags %q, run_id %q, master link %q", s.name, s.Replica.Addr(), r["flags"], r["runid"], r["master-link-status"])
		}
		return nil
	}
	return fmt.Errorf("sentinel replicas %s: %s not among %v", s.name, s.Replica.Addr(), replicas)
}

// checkMaster returns nil when the Sentinel names want as the master.
func (s *Sentinel) checkMaster(ctx context.Context, want *Server) error {
	sc := redis.NewSentinelClient(&redis.Options{Addr: s.Addr()})
	defer sc.Close()
	addr, err := sc.GetMasterAddrByName(ctx, s.name).Result()
	if err != nil {
		return fmt.Errorf("sentinel get-master-addr-by-name %s: %w", s.name, err)
	}
	if got := strings.Join(addr, ":"); got != want.Addr() {
		return fmt.Errorf("sentinel get-master-addr-by-name %s: %s, want %s", s.name, got, want.Addr())
	}
	return nil
}

// checkRole returns nil when s's INFO replication has role:<role> and
// every one of lines.
func checkRole(ctx context.Context, s *Server, role string, lines ...string) error {
	c := redis.NewClient(&redis.Options{Addr: s.Addr()})
	defer c.Close()
	info, err := c.Info(ctx, "replication").Result()
	if err != nil {
		return fmt.Errorf("%s: info replication: %w", s.Addr(), err)
	}
	if l := missingLine(info, append([]string{"role:" + role}, lines...)...); l != "" {
		return fmt.Errorf("%s: info replication without %s:\n%s", s.Addr(), l, info)
	}
	return nil
}

// missingLine returns the first of lines that is not a line of info (an
// INFO reply), "" when none is missing.
func missingLine(info string, lines ...string) string {
	have := strings.Split(strings.ReplaceAll(info, "\r", ""), "\n")
	for _, l := range lines {
		if !slices.Contains(have, l) {
			return l
		}
	}
	return ""
}

// waitFor is wait.For with each call of check bounded by 2s.
func waitFor(t testing.TB, d time.Duration, what string, check func(ctx context.Context) error) {
	t.Helper()
	wait.For(t, d, func() error {
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		defer cancel()
		if err := check(ctx); err != nil {
			return fmt.Errorf("redistest: %s: %w", what, err)
		}
		return nil
	})
}

// AddReplica starts a replica of master i and returns once it is linked
// to the master and the cluster is ok.
func (c *Cluster) AddReplica(i int) *Server {
	c.t.Helper()
	ports := freePorts(c.t, 2)
	r := &Server{t: c.t, dir: c.t.TempDir(), port: ports[0], args: []string{
		"--cluster-enabled", "yes", "--cluster-config-file", "nodes.conf",
		"--cluster-node-timeout", "5000", "--cluster-port", strconv.Itoa(ports[1]),
		"--repl-diskless-sync-delay", "0",
	}}
	r.start()
	c.t.Cleanup(r.Kill)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	rc := redis.NewClient(&redis.Options{Addr: r.Addr()})
	defer rc.Close()
	mc := redis.NewClient(&redis.Options{Addr: c.Nodes[i].Addr()})
	defer mc.Close()
	id, err := mc.Do(ctx, "cluster", "myid").Text()
	if err == nil {
		err = rc.Do(ctx, "cluster", "meet", "127.0.0.1", c.Nodes[i].port, c.bus[i]).Err()
	}
	if err != nil {
		c.t.Fatalf("redistest: replica of %d: %v", i, err)
	}
	// REPLICATE needs the master known to the new node.
	waitFor(c.t, 20*time.Second, "the replica knowing its master", func(ctx context.Context) error {
		return rc.Do(ctx, "cluster", "replicate", id).Err()
	})
	for len(c.Replicas) < len(c.Nodes) {
		c.Replicas = append(c.Replicas, nil)
	}
	c.Replicas[i] = r
	waitFor(c.t, 20*time.Second, "the replica's link to the master", func(ctx context.Context) error {
		return checkRole(ctx, r, "slave", "master_link_status:up")
	})
	c.waitOK()
	// A node lists a replica in CLUSTER SLOTS once gossip told it the
	// replica's replication offset: until then a client may not know it.
	waitFor(c.t, 20*time.Second, "every node listing the replica", func(ctx context.Context) error {
		for _, n := range append(slices.Clone(c.Nodes), r) {
			nc := redis.NewClient(&redis.Options{Addr: n.Addr()})
			slots, err := nc.ClusterSlots(ctx).Result()
			nc.Close()
			if err != nil {
				return err
			}
			found := false
			for _, sl := range slots {
				for _, x := range sl.Nodes {
					found = found || x.Addr == r.Addr()
				}
			}
			if !found {
				return fmt.Errorf("%s does not list %s in CLUSTER SLOTS", n.Addr(), r.Addr())
			}
		}
		return nil
	})
	return r
}

// Failover runs CLUSTER FAILOVER on the replica of master i and returns
// once it is a master and the cluster is ok; then Nodes[i] and
// Replicas[i] are swapped.
func (c *Cluster) Failover(i int) {
	c.t.Helper()
	r := c.Replicas[i]
	// A manual failover needs the replica in sync (a former master
	// becomes a replica and syncs some time after the failover).
	waitFor(c.t, 20*time.Second, "the replica's link to the master", func(ctx context.Context) error {
		return checkRole(ctx, r, "slave", "master_link_status:up")
	})
	rc := redis.NewClient(&redis.Options{Addr: r.Addr()})
	defer rc.Close()
	// Masters vote for a replica of the same master at most once in
	// 2 node timeouts: a failover back soon after the last one times
	// out (a manual failover gives up after 5s) and is asked again.
	var asked time.Time
	waitFor(c.t, 60*time.Second, "the failover to "+r.Addr(), func(ctx context.Context) error {
		if checkRole(ctx, r, "master") == nil {
			return nil
		}
		if time.Since(asked) > 6*time.Second {
			asked = time.Now()
			if err := rc.Do(ctx, "cluster", "failover").Err(); err != nil {
				return fmt.Errorf("cluster failover on %s: %w", r.Addr(), err)
			}
		}
		return errors.New("not master yet")
	})
	c.Nodes[i], c.Replicas[i] = r, c.Nodes[i]
	c.waitOK()
}
