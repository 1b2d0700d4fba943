package lease_test

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/edgegate/edgegate/internal/redistest"
	"github.com/edgegate/edgegate/lease"
)

// TestRedisLostReplyNotSentAgain: a script whose reply is lost has run.
// Sent again, it would answer as if someone else had acted: a welcome
// that finds a newer session (the device is told it was taken over, and
// gives up), an acquire that finds its own lock held, a release that
// finds its lock gone. The call must fail as a store error instead.
func TestRedisLostReplyNotSentAgain(t *testing.T) {
	srv := redistest.Start(t)
	ctx := context.Background()
	if err := lease.SetEpochStart(ctx, srv.Client(), "lr", time.Now().Add(-time.Hour)); err != nil {
		t.Fatal(err)
	}
	px := srv.Proxy()
	s := lease.DialRedis(&redis.UniversalOptions{Addrs: []string{px.Addr()}, PoolSize: 1}, "lr")
	defer s.Client().Close()

	// Every script loaded first: a reply lost to SCRIPT LOAD is not what
	// this is about.
	warm, err := s.Open(ctx, "warm", true)
	if err != nil {
		t.Fatal(err)
	}
	if _, _, err := s.Welcome(ctx, "warm", warm); err != nil {
		t.Fatal(err)
	}
	g, err := s.Acquire(ctx, "warm", "p", time.Minute, warm)
	if err != nil {
		t.Fatal(err)
	}
	if err := s.Release(ctx, "warm", g.Token, 1); err != nil {
		t.Fatal(err)
	}

	sess, err := s.Open(ctx, "w", true)
	if err != nil {
		t.Fatal(err)
	}
	px.LoseNextReply()
	if _, _, err := s.Welcome(ctx, "w", sess); err == nil || errors.Is(err, lease.ErrSuperseded) {
		t.Errorf("welcome whose reply was lost: %v, want a store error (not ErrSuperseded: no newer session exists)", err)
	}

	px.LoseNextReply()
	if _, err := s.Acquire(ctx, "a", "p", time.Minute, lease.Session{}); err == nil || errors.Is(err, lease.ErrHeld) {
		t.Errorf("acquire whose reply was lost: %v, want a store error (not ErrHeld: the lock is its own)", err)
	}

	g, err = s.Acquire(ctx, "r", "p", time.Minute, lease.Session{})
	if err != nil {
		t.Fatal(err)
	}
	px.LoseNextReply()
	if err := s.Release(ctx, "r", g.Token, 7); err == nil || errors.Is(err, lease.ErrLost) {
		t.Errorf("release whose reply was lost: %v, want a store error (not ErrLost: the release happened)", err)
	}
}

// TestRedisCallEndsByItsDeadline: a Redis that stops answering without
// closing the connection (a frozen host) must not hold a call past its
// context's deadline: the socket's check loop and the parsers' heartbeats
// bound theirs by the lease.
func TestRedisCallEndsByItsDeadline(t *testing.T) {
	srv := redistest.Start(t)
	ctx := context.Background()
	px := srv.Proxy()
	s := lease.DialRedis(&redis.UniversalOptions{Addrs: []string{px.Addr()}, ReadTimeout: time.Minute}, "fz")
	defer s.Client().Close()
	if _, err := s.Inspect(ctx, "x"); err != nil {
		t.Fatal(err)
	}
	px.Freeze()
	for name, call := range map[string]func(context.Context) error{
		"inspect": func(ctx context.Context) error { _, err := s.Inspect(ctx, "x"); return err },
		"heartbeat": func(ctx context.Context) error {
			return s.Heartbeat(ctx, "x", lease.Token{Fence: 1, Owner: "p"}, 5*time.Second)
		},
	} {
		cctx, cancel := context.WithTimeout(ctx, 200*time.Millisecond)
		done := make(chan error, 1)
		go func() { done <- call(cctx) }()
		select {
		case err := <-done:
			if err == nil {
				t.Errorf("%s on a frozen link: no error", name)
			}
		case <-time.After(20 * time.Second):
			t.Fatalf("%s with a 200ms deadline on a frozen link: still running after 20s", name)
		}
		cancel()
	}
}
