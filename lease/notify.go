package lease

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"sync"
	"time"

	"github.com/redis/go-redis/v9"
)

// Notify implements Notifier with Redis keyspace notifications: the
// key-event channel of expirations wakes for every expired lock, and the
// keyspace channel of a watched controller's lock wakes when it is deleted.
// It enables notify-keyspace-events (K, E, g, x) when it may; when CONFIG
// is refused, or with Redis Cluster (notifications are per node), it
// returns an error and the caller relies on polling.
func (s *Redis) Notify(ctx context.Context, wake func(id string)) (Subscription, error) {
	if s.cluster {
		return nil, errors.New("keyspace notifications are not used with Redis Cluster (they are per node)")
	}
	if err := s.enableNotifications(ctx); err != nil {
		return nil, err
	}
	on, _ := s.RunID(ctx) // "": the first epoch read enables them again
	ps := s.c.Subscribe(ctx, fmt.Sprintf("__keyevent@%d__:expired", s.db))
	if _, err := ps.Receive(ctx); err != nil {
		ps.Close()
		return nil, redisErr("subscribe", err)
	}
	s.notifyMu.Lock()
	s.notifying++
	s.notifiedOn = on
	s.notifyMu.Unlock()
	sub := &redisSub{s: s, ps: ps, wake: wake, ops: make(chan subOp, 1024), done: make(chan struct{})}
	sub.wg.Add(2)
	go sub.readLoop()
	go sub.opLoop()
	return sub, nil
}

// renotify enables keyspace notifications again on a Redis whose run_id,
// read by Epoch, is not the one they were enabled on: a restarted Redis,
// or the replica a failover promoted, has its own configuration, and its
// subscriptions (go-redis subscribes again) would hear nothing. Sockets
// would go on, waking only every check interval. A failure is retried on
// the next read.
func (s *Redis) renotify(ctx context.Context, runID string) {
	s.notifyMu.Lock()
	defer s.notifyMu.Unlock()
	if s.notifying == 0 || runID == s.notifiedOn {
		return
	}
	if s.enableNotifications(ctx) == nil {
		s.notifiedOn = runID
	}
}

// enableNotifications adds K, E, g and x to notify-keyspace-events.
func (s *Redis) enableNotifications(ctx context.Context) error {
	cur, err := s.c.ConfigGet(ctx, "notify-keyspace-events").Result()
	if err != nil {
		return fmt.Errorf("reading notify-keyspace-events: %w", err)
	}
	flags := cur["notify-keyspace-events"]
	want := flags
	for _, f := range "KEgx" {
		if strings.ContainsRune(want, f) || (f == 'g' || f == 'x') && strings.ContainsRune(want, 'A') {
			continue
		}
		want += string(f)
	}
	if want == flags {
		return nil
	}
	if err := s.c.ConfigSet(ctx, "notify-keyspace-events", want).Err(); err != nil {
		return fmt.Errorf("setting notify-keyspace-events to %q: %w", want, err)
	}
	return nil
}

// controllerOfLock returns the controller of a lock key, "" for other keys.
func (s *Redis) controllerOfLock(key string) string {
	rest, ok := strings.CutPrefix(key, s.prefix+":{")
	if !ok {
		return ""
	}
	id, ok := strings.CutSuffix(rest, "}:lock")
	if !ok {
		return ""
	}
	return id
}

type subOp struct {
	kind byte // opAdd, opRemove, opCheck
	id   string
}

const (
	opAdd = iota
	opRemove
	opCheck
)

type redisSub struct {
	s    *Redis
	ps   *redis.PubSub
	wake func(id string)
	ops  chan subOp
	done chan struct{}
	once sync.Once
	wg   sync.WaitGroup
}

func (r *redisSub) keyspace(id string) string {
	return fmt.Sprintf("__keyspace@%d__:%s", r.s.db, r.s.Keys(id)[1])
}

func (r *redisSub) readLoop() {
	defer r.wg.Done()
	keyspace := fmt.Sprintf("__keyspace@%d__:", r.s.db)
	for m := range r.ps.ChannelWithSubscriptions() {
		switch m := m.(type) {
		case *redis.Subscription:
			// A watch took effect (again, after a reconnect): a lock
			// deleted before it woke nobody, so look whether it is still
			// there. The lookup goes after the confirmation, so between
			// the two nothing is missed.
			key, ok := strings.CutPrefix(m.Channel, keyspace)
			if id := r.s.controllerOfLock(key); ok && m.Kind == "subscribe" && id != "" {
				select {
				case r.ops <- subOp{kind: opCheck, id: id}:
				default:
					r.wake(id) // a wake-up too many costs one acquire
				}
			}
		case *redis.Message:
			if key, ok := strings.CutPrefix(m.Channel, keyspace); ok {
				if m.Payload == "del" || m.Payload == "expired" {
					if id := r.s.controllerOfLock(key); id != "" {
						r.wake(id)
					}
				}
				continue
			}
			if id := r.s.controllerOfLock(m.Payload); id != "" {
				r.wake(id)
			}
		}
	}
}

// opLoop applies Add and Remove off the caller's goroutine, so that they
// never block a socket.
func (r *redisSub) opLoop() {
	defer r.wg.Done()
	for {
		select {
		case <-r.done:
			return
		case op := <-r.ops:
			ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
			switch op.kind {
			case opAdd:
				r.ps.Subscribe(ctx, r.keyspace(op.id))
			case opRemove:
				r.ps.Unsubscribe(ctx, r.keyspace(op.id))
			case opCheck:
				if n, err := r.s.c.Exists(ctx, r.s.Keys(op.id)[1]).Result(); err != nil || n == 0 {
					r.wake(op.id)
				}
			}
			cancel()
		}
	}
}

func (r *redisSub) send(op subOp) {
	select {
	case r.ops <- op:
	case <-r.done:
	default: // full: a lost watch costs a check interval, nothing else
	}
}

// Add implements Subscription.
func (r *redisSub) Add(id string) { r.send(subOp{kind: opAdd, id: id}) }

// Remove implements Subscription.
func (r *redisSub) Remove(id string) { r.send(subOp{kind: opRemove, id: id}) }

// Close implements Subscription.
func (r *redisSub) Close() error {
	var err error
	r.once.Do(func() {
		close(r.done)
		err = r.ps.Close()
		r.wg.Wait()
		r.s.notifyMu.Lock()
		r.s.notifying--
		r.s.notifyMu.Unlock()
	})
	return err
}
