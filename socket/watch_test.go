package socket

import (
	"context"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/edgegate/edgegate/internal/redistest"
	"github.com/edgegate/edgegate/internal/wait"
	"github.com/edgegate/edgegate/lease"
)

// TestWatchGoesWithItsController: a controller that waited for a lease
// held elsewhere (watched) and whose device then left is forgotten; its
// keyspace subscription goes with it. Else the subscriptions of a socket
// only grow as devices move between appliances, and every release of
// those locks wakes it.
func TestWatchGoesWithItsController(t *testing.T) {
	srv := redistest.Start(t)
	store := lease.DialRedis(&redis.UniversalOptions{Addrs: []string{srv.Addr()}}, "audit")
	t.Cleanup(func() { store.Client().Close() })
	h := start(t, Config{}, store)
	ctx := context.Background()
	if _, err := store.Acquire(ctx, "ctl-w", "elsewhere", time.Minute, lease.Session{}); err != nil {
		t.Fatal(err)
	}
	h.announce("pool-1", "other", 1)
	d := h.dial("ctl-w", 0)
	d.send(1)
	rc := srv.Client()
	channels := func() []string {
		ch, err := rc.PubSubChannels(ctx, "__keyspace@0__:*").Result()
		if err != nil {
			t.Fatal(err)
		}
		return ch
	}
	wait.True(t, timeout, "the waiting controller is watched", func() bool { return len(channels()) == 1 })
	d.send(3) // a protocol error: the session closes at once (no half-close linger)
	wait.True(t, timeout, "the controller is forgotten", func() bool {
		_, _, known := h.controller("ctl-w")
		return !known
	})
	wait.For(t, timeout, func() error {
		if ch := channels(); len(ch) != 0 {
			return fmt.Errorf("controller forgotten, still subscribed to %s", strings.Join(ch, ", "))
		}
		return nil
	})
}
