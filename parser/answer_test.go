package parser

import (
	"context"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/edgegate/edgegate/coord"
	"github.com/edgegate/edgegate/internal/wait"
	"github.com/edgegate/edgegate/lease"
)

// TestAnswerBeforeOutcome: a pool's acceptance of an assignment reaches
// the socket before the batch's outcome, even when the worker finishes
// the batch before the goroutine that took it runs again (a busy box).
// The socket matches an answer by controller and fence only, and a lease
// kept after the batch carries the controller's next batch under the same
// fence: an acceptance arriving after the outcome would be taken as the
// next batch's, and a busy answer to that one then ignored, leaving it to
// wait for the lease to expire.
func TestAnswerBeforeOutcome(t *testing.T) {
	store := lease.NewMemory()
	var outcome atomic.Bool
	p, ns := startPoolSet(t, Config{Workers: 1, TTL: 10 * time.Second, Heartbeat: time.Second,
		Handler: HandlerFunc(func(context.Context, *Message) error { return nil })}, store, func(p *Pool) {
		p.afterTake = func() {
			// Held up until the batch's outcome is out.
			wait.True(t, 10*time.Second, "the batch's outcome", outcome.Load)
		}
	})
	nc, err := ns.Connect("socket")
	if err != nil {
		t.Fatal(err)
	}
	defer nc.Close()
	var mu sync.Mutex
	var kinds []byte
	if _, err := nc.Subscribe(coord.SocketSubject("s1")+".>", func(m *nats.Msg) {
		mu.Lock()
		kinds = append(kinds, coord.Kind(m.Data))
		mu.Unlock()
		if coord.Kind(m.Data) == coord.KindOutcome {
			outcome.Store(true)
		}
	}); err != nil {
		t.Fatal(err)
	}
	a := assignment(t, store, p, "ctl-1", 0, 1, 2, 3)
	if err := nc.PublishMsg(&nats.Msg{Subject: coord.PoolSubject(p.ID()), Reply: coord.SocketSubject("s1") + ".ctl-1", Data: coord.AppendAssign(nil, a)}); err != nil {
		t.Fatal(err)
	}
	wait.True(t, 10*time.Second, "an answer and an outcome", func() bool {
		mu.Lock()
		defer mu.Unlock()
		return len(kinds) >= 2 && outcome.Load()
	})
	mu.Lock()
	defer mu.Unlock()
	if kinds[0] != coord.KindAnswer {
		t.Fatalf("the batch's outcome reached the socket before the pool's acceptance (kinds of the replies: %v; answer %d, outcome %d)", kinds, coord.KindAnswer, coord.KindOutcome)
	}
}
