package lease_test

import (
	"context"
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/edgegate/edgegate/internal/redistest"
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
	g, _ := s.Acquire(ctx, "c", "p", 10e9)
	srv.Restart()
	id2, err := s.RunID(ctx)
	if err != nil || id2 == id1 {
		t.Fatalf("run id after restart %q (before %q), %v: want a new one", id2, id1, err)
	}
	if st, err := s.Inspect(ctx, "c"); err != nil || st.Locked {
		t.Fatalf("after restart %+v, %v: want the lock gone (keys lost)", st, err)
	}
	g2, err := s.Acquire(ctx, "c", "p", 10e9)
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
	g3, err := s.Acquire(ctx, "c", "p", 10e9)
	if err != nil || g3.Fresh || g3.Epoch != "" {
		t.Fatalf("second grant %+v, %v: want neither fresh nor an epoch", g3, err)
	}
}

func TestRedisNotify(t *testing.T) {
	srv := redistest.Start(t)
	s := lease.NewRedis(srv.Client(), "", 0)
	ctx := context.Background()
	woken := make(chan string, 16)
	sub, err := s.Notify(ctx, func(id string) { woken <- id })
	if err != nil {
		t.Fatalf("Notify: %v", err)
	}
	defer sub.Close()
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
	if _, err := s.Acquire(ctx, "exp-1", "p", 100*time.Millisecond); err != nil {
		t.Fatal(err)
	}
	expect("exp-1")
	// A deleted lock wakes only when watched.
	sub.Add("rel-1")
	var g lease.Grant
	deadline := time.Now().Add(5 * time.Second)
	for { // Add is asynchronous: retry until the release is seen
		g, _ = s.Acquire(ctx, "rel-1", "p", time.Minute)
		s.Release(ctx, "rel-1", g.Token, 1)
		select {
		case got := <-woken:
			if got != "rel-1" {
				t.Fatalf("woken for %q", got)
			}
			return
		case <-time.After(50 * time.Millisecond):
		}
		if time.Now().After(deadline) {
			t.Fatal("release of a watched lock never woke")
		}
	}
}

// TestRedisNotifyAfterRestart: a Redis that restarted has lost its
// notify-keyspace-events; the first epoch read that finds its new run_id
// (a socket's check loop makes one every check interval) enables them
// again, and an expiring lock wakes the subscription as before.
func TestRedisNotifyAfterRestart(t *testing.T) {
	srv := redistest.Start(t)
	s := lease.NewRedis(srv.Client(), "", 0)
	ctx := context.Background()
	woken := make(chan string, 64)
	sub, err := s.Notify(ctx, func(id string) { woken <- id })
	if err != nil {
		t.Fatalf("Notify: %v", err)
	}
	defer sub.Close()
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
	// lock wakes once it has (retried until then, for at most 10s).
	deadline := time.Now().Add(10 * time.Second)
	for i := 0; ; i++ {
		id := fmt.Sprintf("after-%d", i)
		if _, err := s.Acquire(ctx, id, "p", 50*time.Millisecond); err != nil {
			t.Fatal(err)
		}
		select {
		case got := <-woken:
			if !strings.HasPrefix(got, "after-") {
				t.Fatalf("woken for %q", got)
			}
			return
		case <-time.After(500 * time.Millisecond):
		}
		if time.Now().After(deadline) {
			t.Fatal("no expiry woke the subscription after the restart")
		}
	}
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
			if err := s.ResetDone(context.Background(), id); err != nil {
				errs <- fmt.Errorf("%s: reset: %w", id, err)
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
				gr, err := s.Acquire(ctx, id, "o", 10*time.Second)
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
