package lease_test

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/edgegate/edgegate/internal/redistest"
	"github.com/edgegate/edgegate/internal/wait"
	"github.com/edgegate/edgegate/lease"
)

func TestRedisStore(t *testing.T) {
	srv := redistest.Start(t)
	n := 0
	storeContract(t, func(t *testing.T) lease.Store {
		n++ // a fresh prefix per case: the same server, no shared keys
		return lease.NewRedis(srv.Client(), "t"+string(rune('a'+n)), 0)
	})
}

func TestRedisKeysShareASlot(t *testing.T) {
	s := lease.NewRedis(nil, "", 0)
	keys := s.Keys("imei:356938035643809")
	for _, k := range keys {
		if want := "edgegate:{imei:356938035643809}:"; k[:len(want)] != want {
			t.Fatalf("key %q lacks the hash tag prefix %q", k, want)
		}
	}
}

func TestRedisRunIDChangesOnRestart(t *testing.T) {
	srv := redistest.Start(t)
	s := lease.NewRedis(srv.Client(), "", 0)
	ctx := context.Background()
	id1, err := s.RunID(ctx)
	if err != nil || len(id1) != 40 {
		t.Fatalf("run id %q, %v", id1, err)
	}
	g, _ := s.Acquire(ctx, "c", "p", 10e9, lease.Session{})
	srv.Restart()
	id2, err := s.RunID(ctx)
	if err != nil || id2 == id1 {
		t.Fatalf("run id after restart %q (before %q), %v: want a new one", id2, id1, err)
	}
	if st, err := s.Inspect(ctx, "c"); err != nil || st.Locked {
		t.Fatalf("after restart %+v, %v: want the lock gone (keys lost)", st, err)
	}
	g2, err := s.Acquire(ctx, "c", "p", 10e9, lease.Session{})
	if err != nil || !g2.Fresh || g2.Token.Fence <= g.Token.Fence {
		t.Fatalf("grant after data loss %+v, %v: want fresh with a fence above %d", g2, err, g.Token.Fence)
	}
	// A fresh grant carries the epoch it was granted in; the socket
	// compares it instead of reading the run_id after the grant.
	if g.Epoch != id1 || g2.Epoch != id2 {
		t.Fatalf("fresh grants' epochs %q and %q, want the run_ids %q and %q", g.Epoch, g2.Epoch, id1, id2)
	}
	if err := s.Release(ctx, "c", g2.Token, 0); err != nil {
		t.Fatal(err)
	}
	g3, err := s.Acquire(ctx, "c", "p", 10e9, lease.Session{})
	if err != nil || g3.Fresh || g3.Epoch != "" {
		t.Fatalf("second grant %+v, %v: want neither fresh nor an epoch", g3, err)
	}
}

// notifying returns a Redis, a store on it and its subscription of
// wake-ups, which go to woken.
func notifying(t *testing.T) (*redistest.Server, *lease.Redis, lease.Subscription, chan string) {
	t.Helper()
	srv := redistest.Start(t)
	s := lease.NewRedis(srv.Client(), "", 0)
	woken := make(chan string, 64)
	sub, err := s.Notify(context.Background(), func(id string) { woken <- id })
	if err != nil {
		t.Fatalf("Notify: %v", err)
	}
	t.Cleanup(func() { sub.Close() })
	return srv, s, sub, woken
}

func TestRedisNotify(t *testing.T) {
	_, s, sub, woken := notifying(t)
	ctx := context.Background()
	expect := func(want string) {
		t.Helper()
		select {
		case got := <-woken:
			if got != want {
				t.Fatalf("woken for %q, want %q", got, want)
			}
		case <-time.After(5 * time.Second):
			t.Fatalf("no wake-up for %q", want)
		}
	}
	// An expiring lock wakes without watching.
	if _, err := s.Acquire(ctx, "exp-1", "p", 100*time.Millisecond, lease.Session{}); err != nil {
		t.Fatal(err)
	}
	expect("exp-1")
	// A deleted lock wakes only when watched.
	sub.Add("rel-1")
	// Add is asynchronous: acquire and release again until the release is
	// seen.
	wait.For(t, 5*time.Second, func() error {
		g, _ := s.Acquire(ctx, "rel-1", "p", time.Minute, lease.Session{})
		s.Release(ctx, "rel-1", g.Token, 1)
		select {
		case got := <-woken:
			if got != "rel-1" {
				t.Fatalf("woken for %q", got)
			}
			return nil
		case <-time.After(50 * time.Millisecond):
			return errors.New("release of a watched lock never woke")
		}
	})
}

// TestRedisNotifyReleasedBeforeWatch: a socket watches a lock after its
// acquire found it held, and the holder can release it in between. That
// release must wake it too, not only the next check interval.
func TestRedisNotifyReleasedBeforeWatch(t *testing.T) {
	_, s, sub, woken := notifying(t)
	ctx := context.Background()
	held, err := s.Acquire(ctx, "held", "p", time.Minute, lease.Session{})
	if err != nil {
		t.Fatal(err)
	}
	g, err := s.Acquire(ctx, "gone", "p", time.Minute, lease.Session{})
	if err != nil {
		t.Fatal(err)
	}
	if err := s.Release(ctx, "gone", g.Token, 1); err != nil {
		t.Fatal(err)
	}
	sub.Add("held")
	sub.Add("gone")
	select {
	case got := <-woken:
		if got != "gone" {
			t.Fatalf("woken for %q, want %q (a lock still held)", got, "gone")
		}
	case <-time.After(5 * time.Second):
		t.Fatal("a lock released before it was watched never woke")
	}
	// The held one wakes when it is released, not before.
	if err := s.Release(ctx, "held", held.Token, 1); err != nil {
		t.Fatal(err)
	}
	select {
	case got := <-woken:
		if got != "held" {
			t.Fatalf("woken for %q, want %q", got, "held")
		}
	case <-time.After(5 * time.Second):
		t.Fatal("the release of a watched lock never woke")
	}
}

// TestRedisNotifyAfterRestart: a Redis that restarted has lost its
// notify-keyspace-events; the first epoch read that finds its new run_id
// (a socket's check loop makes one every check interval) enables them
// again, and an expiring lock wakes the subscription as before.
func TestRedisNotifyAfterRestart(t *testing.T) {
	srv, s, _, woken := notifying(t)
	ctx := context.Background()
	srv.Restart()
	flags := func() string {
		v, err := srv.Client().ConfigGet(ctx, "notify-keyspace-events").Result()
		if err != nil {
			t.Fatal(err)
		}
		return v["notify-keyspace-events"]
	}
	if f := flags(); f != "" {
		t.Fatalf("a restarted Redis kept notify-keyspace-events %q: this test tests nothing", f)
	}
	if _, err := s.Epoch(ctx); err != nil {
		t.Fatal(err)
	}
	if f := flags(); !strings.ContainsRune(f, 'K') || !strings.ContainsRune(f, 'E') || !strings.ContainsRune(f, 'x') {
		t.Fatalf("notify-keyspace-events %q after the epoch read, want K, E and x", f)
	}
	// go-redis subscribes again after the restart on its own: an expiring
	// lock wakes once it has (retried until then).
	i := 0
	wait.For(t, 10*time.Second, func() error {
		id := fmt.Sprintf("after-%d", i)
		i++
		if _, err := s.Acquire(ctx, id, "p", 50*time.Millisecond, lease.Session{}); err != nil {
			t.Fatal(err)
		}
		select {
		case got := <-woken:
			if !strings.HasPrefix(got, "after-") {
				t.Fatalf("woken for %q", got)
			}
			return nil
		case <-time.After(500 * time.Millisecond):
			return errors.New("no expiry woke the subscription after the restart")
		}
	})
}

// TestRedisConcurrentCallsPipelined: many goroutines resetting, acquiring,
// releasing and reading their done records at once (scripts and plain
// commands share pipelines), some giving up early, with Redis forgetting
// its scripts midway: every call that succeeds has its effect, none
// hangs, and the scripts are loaded again.
func TestRedisConcurrentCallsPipelined(t *testing.T) {
	srv := redistest.Start(t)
	c := srv.Client()
	s := lease.NewRedis(c, "pipe", 0)
	const goroutines, rounds = 48, 150
	var wg sync.WaitGroup
	errs := make(chan error, goroutines)
	deadline := time.Now().Add(time.Minute)
	for g := 0; g < goroutines; g++ {
		wg.Go(func() {
			id := fmt.Sprintf("ctrl-%d", g)
			sess, err := s.Open(context.Background(), id, false)
			if err != nil {
				errs <- fmt.Errorf("%s: open: %w", id, err)
				return
			}
			var done uint64
			for r := 0; r < rounds; r++ {
				if time.Now().After(deadline) {
					errs <- fmt.Errorf("%s: still running after a minute", id)
					return
				}
				if g%8 == 0 && r%10 == 0 {
					// A caller that gives up at once: its call may or may
					// not have been sent; the others must not be stuck.
					ctx, cancel := context.WithCancel(context.Background())
					cancel()
					s.Inspect(ctx, id)
				}
				ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
				gr, err := s.Acquire(ctx, id, "o", 10*time.Second, sess)
				if err == nil {
					done++
					err = s.Release(ctx, id, gr.Token, done)
				}
				if err == nil && r%10 == 5 {
					var got uint64
					if got, err = s.Done(ctx, id); err == nil && got != done {
						err = fmt.Errorf("done record %d, want %d", got, done)
					}
				}
				cancel()
				if err != nil {
					errs <- fmt.Errorf("%s round %d: %w", id, r, err)
					return
				}
			}
			got, err := s.Done(context.Background(), id)
			if err != nil || got != rounds {
				errs <- fmt.Errorf("%s: done record %d (%v), want %d", id, got, err, rounds)
			}
		})
		if g == goroutines/2 {
			c.ScriptFlush(context.Background()) // NOSCRIPT for what follows
		}
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
}

// TestRedisRollbackKeepsFencesAndStartsAnEpoch: Redis restarts from an
// older snapshot (RDB saved earlier, as Debian's redis.conf does) while a
// lease granted after the snapshot is held. A store that connects after
// the restart (an appliance started then) and one that was running both
// get grants with fences above every fence granted before, and an epoch
// start from the restart: a socket must wait a lease TTL from it before
// it dispatches, since the old holder may still run.
func TestRedisRollbackKeepsFencesAndStartsAnEpoch(t *testing.T) {
	srv := redistest.Start(t)
	ctx := context.Background()
	dial := func() *lease.Redis {
		s := dialStore(t, srv, "rb")
		return s
	}
	a := dial()
	sess, err := a.Open(ctx, "x", true)
	if err != nil {
		t.Fatal(err)
	}
	recordDone(t, a, sess, 1)
	if err := srv.Client().Save(ctx).Err(); err != nil {
		t.Fatalf("SAVE: %v", err)
	}
	var last lease.Grant
	for i := 0; i < 3; i++ {
		if last, err = a.Acquire(ctx, "x", "p", time.Minute, sess); err != nil {
			t.Fatal(err)
		}
		if i < 2 {
			a.Release(ctx, "x", last.Token, uint64(2+i))
		}
	}
	// last is held when Redis comes back with the snapshot.
	restarted := time.Now()
	srv.Restart()
	for name, s := range map[string]*lease.Redis{"running": a, "started after": dial()} {
		var gr lease.Grant
		// The running store's old connections fail once.
		wait.For(t, 10*time.Second, func() error {
			if gr, err = s.Acquire(ctx, "x", "q", time.Minute, sess); err != nil {
				return fmt.Errorf("%s: acquire after the rollback: %w", name, err)
			}
			return nil
		})
		if gr.Token.Fence <= last.Token.Fence {
			t.Errorf("%s: fence %d after the rollback, want above %d granted before it", name, gr.Token.Fence, last.Token.Fence)
		}
		if gr.EpochStart.Before(restarted) {
			t.Errorf("%s: epoch start %v, want no earlier than the restart at %v", name, gr.EpochStart, restarted)
		}
		s.Abandon(ctx, "x", gr.Token)
	}
}

// TestRedisRollbackStartsAGeneration: after Redis comes back with a
// snapshot older than the last release, a persistent session that
// continues is welcomed in a new generation. The snapshot's state is
// clean (its last grant released recording done), but its done record
// lags a message handled, stored and acknowledged since; a device that
// numbers on from that done record must not reuse the stored message's
// ID (controller, generation, seq) for another message.
func TestRedisRollbackStartsAGeneration(t *testing.T) {
	srv := redistest.Start(t)
	ctx := context.Background()
	s := dialStore(t, srv, "rg")
	sess, err := s.Open(ctx, "x", true)
	if err != nil {
		t.Fatal(err)
	}
	for _, done := range []uint64{64, 65} {
		recordDone(t, s, sess, done)
		if done == 64 {
			if err := srv.Client().Save(ctx).Err(); err != nil {
				t.Fatalf("SAVE: %v", err)
			}
		}
	}
	srv.Restart()
	var (
		got  lease.Session
		done uint64
	)
	wait.For(t, 10*time.Second, func() error {
		// The store's old connections fail once.
		got, done, err = s.Welcome(ctx, "x", sess)
		return err
	})
	if got.Gen == sess.Gen {
		t.Fatalf("welcomed in generation %d with done %d after the rollback: the generation of seq 65, stored since", got.Gen, done)
	}
}

// dialStore is a Redis lease store on srv with key prefix, closed with
// the test.
func dialStore(t *testing.T, srv *redistest.Server, prefix string) *lease.Redis {
	t.Helper()
	s := lease.DialRedis(&redis.UniversalOptions{Addrs: []string{srv.Addr()}}, prefix)
	t.Cleanup(func() { s.Client().Close() })
	return s
}

// recordDone records done for controller x of sess: a grant released
// with it.
func recordDone(t *testing.T, s *lease.Redis, sess lease.Session, done uint64) {
	t.Helper()
	ctx := context.Background()
	g, err := s.Acquire(ctx, "x", "p", time.Minute, sess)
	if err != nil {
		t.Fatal(err)
	}
	if err := s.Release(ctx, "x", g.Token, done); err != nil {
		t.Fatal(err)
	}
}

// TestRedisRollbackLosingASeqResetSuppressesNothing: a device with
// persistent seqs restarts and numbers from 1 again (a seq reset: a new
// generation, no done record), then Redis comes back with a snapshot from
// before the reset, which names the previous generation and its done
// record (480). When the device reconnects, its session continues; it
// must not take up that generation: the done record would cover its seqs
// up to 480, and the socket would acknowledge them as duplicates, never
// handled. It starts a generation of its own, with nothing to suppress.
func TestRedisRollbackLosingASeqResetSuppressesNothing(t *testing.T) {
	srv := redistest.Start(t)
	ctx := context.Background()
	s := dialStore(t, srv, "rr")
	old, err := s.Open(ctx, "x", true)
	if err != nil {
		t.Fatal(err)
	}
	recordDone(t, s, old, 480)
	if err := srv.Client().Save(ctx).Err(); err != nil {
		t.Fatalf("SAVE: %v", err)
	}
	if _, err := s.Open(ctx, "x", false); err != nil { // the restart: seqs from 1
		t.Fatal(err)
	}
	srv.Restart()
	var again lease.Session
	wait.For(t, 10*time.Second, func() error {
		// The store's old connections fail once.
		again, err = s.Open(ctx, "x", true)
		return err
	})
	if again.Gen == old.Gen {
		t.Errorf("the reconnected session took up generation %d, from before the rollback", old.Gen)
	}
	welcomed, done, err := s.Welcome(ctx, "x", again)
	if err != nil {
		t.Fatal(err)
	}
	g, err := s.Acquire(ctx, "x", "p", time.Minute, welcomed)
	if err != nil {
		t.Fatal(err)
	}
	if done != 0 || g.Done != 0 {
		t.Errorf("welcomed with done %d, granted with done %d: seqs the device sent again from 1 would be acknowledged unhandled", done, g.Done)
	}
}

// TestRedisEpochKnownToALaterStore: a store that connects to a server
// whose epoch began long ago (another appliance met it first) need not
// wait: the epoch's start is recorded in the server.
func TestRedisEpochKnownToALaterStore(t *testing.T) {
	srv := redistest.Start(t)
	ctx := context.Background()
	first := dialStore(t, srv, "ep")
	g1, err := first.Acquire(ctx, "x", "p", time.Minute, lease.Session{})
	if err != nil {
		t.Fatal(err)
	}
	later := dialStore(t, srv, "ep")
	first.Abandon(ctx, "x", g1.Token)
	g2, err := later.Acquire(ctx, "x", "p", time.Minute, lease.Session{})
	if err != nil {
		t.Fatal(err)
	}
	// The same epoch: the later store's estimate of its start is no
	// later than its own first connection, and close to the first's.
	if d := g2.EpochStart.Sub(g1.EpochStart); d > time.Second || d < -time.Second {
		t.Fatalf("epoch starts %v and %v: want the same epoch", g1.EpochStart, g2.EpochStart)
	}
}

// TestRedisFailoverBackKeepsFencesGrowing: Sentinel fails over from A to
// B, grants are made on B, and a second failover makes A master again
// before A was made B's replica (it kept its own data and epoch record).
// A grant on A must still be above every fence B granted, and carry an
// epoch that begins at the switch back: what B granted is not in A.
func TestRedisFailoverBackKeepsFencesGrowing(t *testing.T) {
	if testing.Short() {
		t.Skip("long: two Sentinel failovers")
	}
	sen := redistest.StartSentinel(t, "m")
	ctx := context.Background()
	s := lease.DialRedis(&redis.UniversalOptions{Addrs: []string{sen.Addr()}, MasterName: sen.Name()}, "fb")
	t.Cleanup(func() { s.Client().Close() })
	// grantOn acquires and releases x until the grant is made on node,
	// the master the client switched to.
	grantOn := func(node *redistest.Server) lease.Grant {
		t.Helper()
		var g lease.Grant
		wait.For(t, 30*time.Second, func() error {
			var err error
			if g, err = s.Acquire(ctx, "x", "p", time.Second, lease.Session{}); err != nil {
				return err
			}
			s.Release(ctx, "x", g.Token, 1)
			if f, _ := node.Client().Get(ctx, "fb:{x}:fence").Uint64(); f != g.Token.Fence {
				return fmt.Errorf("fence %d granted, %s holds %d: not switched yet", g.Token.Fence, node.Addr(), f)
			}
			return nil
		})
		return g
	}
	a := sen.Master
	grantOn(a)
	sen.Failover()
	b := sen.Master
	var onB lease.Grant
	for range 3 {
		onB = grantOn(b)
	}
	// As soon as the Sentinel takes it (it refuses while it finds no
	// replica to promote), not when A has synced from B.
	sc := sen.Client()
	wait.For(t, 30*time.Second, func() error { return sc.Failover(ctx, sen.Name()).Err() })
	back := time.Now()
	wait.For(t, 30*time.Second, func() error {
		addr, err := sc.GetMasterAddrByName(ctx, sen.Name()).Result()
		if err != nil {
			return err
		}
		if got := strings.Join(addr, ":"); got != a.Addr() {
			return fmt.Errorf("the Sentinel names %s, not %s", got, a.Addr())
		}
		return nil
	})
	onA := grantOn(a)
	if onA.Token.Fence <= onB.Token.Fence {
		t.Errorf("fence %d granted on %s after the failover back, below %d granted on %s before it", onA.Token.Fence, a.Addr(), onB.Token.Fence, b.Addr())
	}
	if onA.EpochStart.Before(back) {
		t.Errorf("epoch start %v after the failover back at %v: dispatch would not wait for B's leases", onA.EpochStart, back)
	}
}
