package bench

import (
	"context"
	"fmt"
	"math/rand/v2"
	"sort"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/redis/go-redis/v9"
)

// Seed runs w the way the seed design did: one message per Redis lock.
// A worker takes a controller's lock (SET NX PX), handles that
// controller's next message, and deletes the lock if it is still its own
// (compare-and-delete); a worker that finds the lock held waits for the
// keyspace notification of a lock's deletion. The devices are emulated
// in memory with the same window (a message becomes available when the
// one Window before it was handled), so no TCP or ACK path is measured:
// the figure is an upper bound of the scheme.
func Seed(ctx context.Context, w Workload, url string) (Result, error) {
	opts, err := redis.ParseURL(url)
	if err != nil {
		return Result{}, err
	}
	opts.PoolSize = w.Workers + 4
	c := redis.NewClient(opts)
	defer c.Close()
	if err := c.ConfigSet(ctx, "notify-keyspace-events", "Kgx").Err(); err != nil {
		return Result{}, fmt.Errorf("bench: seed: keyspace notifications: %w", err)
	}
	prefix := "seed-" + strconv.FormatInt(time.Now().UnixNano(), 36) + ":"
	sub := c.PSubscribe(ctx, fmt.Sprintf("__keyspace@%d__:%s*", opts.DB, prefix))
	defer sub.Close()
	if _, err := sub.Receive(ctx); err != nil {
		return Result{}, fmt.Errorf("bench: seed: subscribe: %w", err)
	}
	s := &seedRun{w: w, ctrls: make([]seedCtrl, w.Controllers), wake: make(chan struct{}), lat: make([]time.Duration, 0, w.Controllers*w.Messages)}
	go func() {
		for range sub.Channel() {
			s.notify()
		}
	}()
	start := time.Now()
	for i := range s.ctrls {
		s.ctrls[i].key = prefix + strconv.Itoa(i) + ":lock"
		n := min(w.Window, w.Messages)
		s.ctrls[i].avail = make([]time.Time, w.Messages)
		for k := 0; k < n; k++ {
			s.ctrls[i].avail[k] = start
		}
		s.ctrls[i].produced = n
	}
	rctx, cancel := context.WithCancel(ctx)
	defer cancel()
	var wg sync.WaitGroup
	errs := make(chan error, w.Workers)
	for g := 0; g < w.Workers; g++ {
		wg.Go(func() {
			if err := s.work(rctx, c, "w"+strconv.Itoa(g)); err != nil {
				errs <- err
				cancel()
			}
		})
	}
	wg.Wait()
	el := time.Since(start)
	close(errs)
	for err := range errs {
		return Result{}, fmt.Errorf("bench: seed: %w", err)
	}
	if ctx.Err() != nil {
		return Result{}, ctx.Err()
	}
	n := int64(w.Controllers * w.Messages)
	sort.Slice(s.lat, func(i, j int) bool { return s.lat[i] < s.lat[j] })
	q := func(p float64) time.Duration { return s.lat[min(len(s.lat)-1, int(p*float64(len(s.lat))))] }
	return Result{Scenario: "seed/redis-lock-per-message", Controllers: w.Controllers, Messages: n, Elapsed: el,
		Rate: float64(n) / el.Seconds(), P50: q(0.5), P99: q(0.99), P999: q(0.999), CPU: -1, RSS: -1,
		Note: "devices emulated in memory (no TCP, no ACK frames): an upper bound of the scheme"}, nil
}

type seedRun struct {
	w     Workload
	ctrls []seedCtrl
	done  atomic.Int64 // messages handled

	mu   sync.Mutex
	wake chan struct{} // closed and replaced on every notification
	lat  []time.Duration
}

type seedCtrl struct {
	key      string
	mu       sync.Mutex // for the race detector: the Redis lock is the exclusion
	active   atomic.Bool
	next     int         // next message to handle
	produced int         // messages the device has made available
	avail    []time.Time // when each message became available
}

func (s *seedRun) notify() {
	s.mu.Lock()
	close(s.wake)
	s.wake = make(chan struct{})
	s.mu.Unlock()
}

func (s *seedRun) waitNotify(ctx context.Context) {
	s.mu.Lock()
	w := s.wake
	s.mu.Unlock()
	t := time.NewTimer(50 * time.Millisecond) // a lost notification costs only time
	defer t.Stop()
	select {
	case <-w:
	case <-t.C:
	case <-ctx.Done():
	}
}

var compareAndDelete = redis.NewScript(`if redis.call("GET", KEYS[1]) == ARGV[1] then return redis.call("DEL", KEYS[1]) end return 0`)

// work is one worker: lock, one message, unlock, until every message is
// handled.
func (s *seedRun) work(ctx context.Context, c *redis.Client, name string) error {
	total := int64(len(s.ctrls) * s.w.Messages)
	var tokens uint64
	for s.done.Load() < total {
		if ctx.Err() != nil {
			return nil
		}
		i, ok := s.pick()
		if !ok {
			s.waitNotify(ctx)
			continue
		}
		cc := &s.ctrls[i]
		tokens++
		tok := name + ":" + strconv.FormatUint(tokens, 10)
		got, err := c.SetNX(ctx, cc.key, tok, 5*time.Second).Result()
		if err != nil {
			return err
		}
		if !got {
			s.waitNotify(ctx) // held: wait for its deletion
			continue
		}
		if err := s.handle(cc); err != nil {
			return err
		}
		if err := compareAndDelete.Run(ctx, c, []string{cc.key}, tok).Err(); err != nil {
			return err
		}
	}
	return nil
}

// pick returns a controller with a message available, from a random
// starting point.
func (s *seedRun) pick() (int, bool) {
	n := len(s.ctrls)
	off := rand.IntN(n)
	for k := 0; k < n; k++ {
		i := (off + k) % n
		cc := &s.ctrls[i]
		cc.mu.Lock()
		ok := cc.next < cc.produced
		cc.mu.Unlock()
		if ok {
			return i, true
		}
	}
	return 0, false
}

// handle handles cc's next message under its lock (a no-op handler) and
// makes the device's next message available.
func (s *seedRun) handle(cc *seedCtrl) error {
	if !cc.active.CompareAndSwap(false, true) {
		return fmt.Errorf("%s handled twice at once", cc.key)
	}
	defer cc.active.Store(false)
	now := time.Now()
	cc.mu.Lock()
	if cc.next >= cc.produced { // another worker took the last one between pick and lock
		cc.mu.Unlock()
		return nil
	}
	lat := now.Sub(cc.avail[cc.next])
	cc.next++
	if cc.produced < len(cc.avail) {
		cc.avail[cc.produced] = now
		cc.produced++
	}
	cc.mu.Unlock()
	s.done.Add(1)
	s.mu.Lock()
	s.lat = append(s.lat, lat)
	s.mu.Unlock()
	return nil
}
