package parser

import (
	"context"
	"sync/atomic"
	"testing"
	"time"

	"github.com/edgegate/edgegate/coord"
	"github.com/edgegate/edgegate/internal/wait"
	"github.com/edgegate/edgegate/lease"
)

// gatedStore holds every release and abandon until open is closed: a
// release racing what comes after it, made to lose the race.
type gatedStore struct {
	lease.Store
	open chan struct{}
}

func (g *gatedStore) Release(ctx context.Context, id string, tok lease.Token, done uint64) error {
	<-g.open
	return g.Store.Release(ctx, id, tok, done)
}

func (g *gatedStore) Abandon(ctx context.Context, id string, tok lease.Token) error {
	<-g.open
	return g.Store.Abandon(ctx, id, tok)
}

// TestSupersededLeaseNeverStarts: a pool releases a kept lease superseded
// by a new session on another socket, on a goroutine of its own. A
// batch the old socket sent under that lease meanwhile must not start,
// even when its confirming heartbeat lands before the release does (the
// release would then delete the lock under the running batch, and the new
// session's socket acquire while it runs).
func TestSupersededLeaseNeverStarts(t *testing.T) {
	var calls atomic.Int32
	mem := lease.NewMemory()
	store := &gatedStore{Store: mem, open: make(chan struct{})}
	p, ns := startPoolStore(t, Config{Workers: 2, TTL: 10 * time.Second, Heartbeat: time.Second,
		Handler: HandlerFunc(func(ctx context.Context, m *Message) error { calls.Add(1); return nil })}, store)
	defer close(store.open)
	outcomes := make(chan coord.Outcome, 8)
	out := func(o coord.Outcome) { outcomes <- o }
	a := assignment(t, mem, p, "ctl", 5*time.Second, 1, 2, 3)
	if !p.Offer(a, out) {
		t.Fatal("refused")
	}
	if _, o := waitBatch(t, outcomes); !o.Kept {
		t.Fatalf("outcome %+v: want the lease kept", o)
	}
	nc, err := ns.Connect("socket-2")
	if err != nil {
		t.Fatal(err)
	}
	defer nc.Close()
	if err := nc.Publish(coord.SessionSubject("ctl"), []byte("socket-2")); err != nil {
		t.Fatal(err)
	}
	// The pool has seen the session once a request it answers after it
	// came back (the pool handles its subscriptions in order).
	wait.True(t, 10*time.Second, "the pool took the kept lease for superseded", func() bool {
		p.mu.Lock()
		defer p.mu.Unlock()
		_, superseded := p.superseded["ctl"]
		return superseded
	})
	before := calls.Load()
	next := &coord.Assign{Controller: "ctl", Token: a.Token, Valid: 10 * time.Second, Hold: 5 * time.Second, Socket: "socket-1",
		Msgs: []coord.Msg{{Seq: 4, Received: time.Now(), Payload: []byte("x")}}}
	if !p.Offer(next, out) {
		t.Fatal("refused")
	}
	o := waitFinal(t, outcomes)
	if o.Released || len(o.Statuses) != 0 {
		t.Fatalf("outcome %+v of a batch under a superseded lease: want fenced (not released, no statuses)", o)
	}
	if n := calls.Load() - before; n != 0 {
		t.Fatalf("the handler ran %d times under a lease the pool had released as superseded", n)
	}
}
