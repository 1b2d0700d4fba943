package socket

import (
	"context"
	"errors"
	"slices"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/edgegate/edgegate/internal/wait"
	"github.com/edgegate/edgegate/lease"
)

// TestBusyHandsBatchBack: a batch a pool answers busy goes back to the
// head of its controller's queue, its lease abandoned, and is dispatched
// again under a new grant; the device gets each ACK once, in order.
func TestBusyHandsBatchBack(t *testing.T) {
	t.Run("pool of this process", func(t *testing.T) {
		store := newGrantStore(zeroTime)
		pool := newFakePool(newHolders(t, store), "local", 4)
		pool.busy = 1
		h := start(t, Config{Local: pool}, store)
		h.announce(pool.id, testAppliance, 4)
		d := h.dial("c1", 0)
		d.send(1, 2)

		refused := pool.next(t)
		if refused.outcome != nil {
			t.Fatal("the first offer was accepted; the pool was to answer busy")
		}
		b := pool.next(t)
		checkHandedBack(t, h, store, refused, b)
		pool.end(t, store, b, false)
		d.waitAcks(1, 2)
	})
	t.Run("over NATS", func(t *testing.T) {
		store := newGrantStore(zeroTime)
		hs := newHolders(t, store)
		h := start(t, Config{}, store)
		pool := newNATSPool(t, h, hs, "remote")
		h.announce(pool.id, "elsewhere", 4)
		d := h.dial("c1", 0)
		d.send(1, 2)

		refused := pool.next(t)
		pool.answer(t, refused, false)
		// Busy leaves the pool without free workers as far as the socket
		// knows, until it announces itself again.
		wait.True(t, timeout, "the controller runnable again", func() bool {
			st, _, _ := h.controller("c1")
			return st == stRunnable
		})
		h.announce(pool.id, "elsewhere", 4)
		b := pool.next(t)
		checkHandedBack(t, h, store, refused, b)
		pool.answer(t, b, true)
		pool.end(t, store, b, false)
		d.waitAcks(1, 2)
	})
}

// checkHandedBack checks b, the batch dispatched after refused was
// answered busy: the same messages under a grant of their own, the
// refused one abandoned (nothing recorded done under it).
func checkHandedBack(t *testing.T, h *harness, store *grantStore, refused, b *batch) {
	t.Helper()
	if !slices.Equal(refused.seqs(), []uint64{1, 2}) || !slices.Equal(b.seqs(), refused.seqs()) {
		t.Fatalf("batches %v, then %v; want seqs 1 and 2 both times", refused.seqs(), b.seqs())
	}
	if g := store.granted(); len(g) != 2 || g[0].Token != refused.a.Token || g[1].Token != b.a.Token {
		t.Fatalf("grants %+v; want one for the refused batch and one for the batch sent again", g)
	}
	if st := h.lock("c1"); st.Done != 0 || st.Released != 0 {
		t.Fatalf("lease %+v after the busy answer: the refused grant was released, not abandoned", st)
	}
	// Given back at once, not left to expire: the acquire after it found
	// the lease free.
	if st := h.s.Stats(); st.Busy != 1 || st.LeaseHeld != 0 {
		t.Fatalf("busy answers %d, acquires that found the lease held %d; want 1 and 0", st.Busy, st.LeaseHeld)
	}
}

// TestNoRespondersHandsBatchToAnotherPool: an assignment to a pool that
// is gone (NATS answers "no responders") is handed back at once, the pool
// forgotten, and the batch goes to a pool that is there.
func TestNoRespondersHandsBatchToAnotherPool(t *testing.T) {
	store := newGrantStore(zeroTime)
	hs := newHolders(t, store)
	h := start(t, Config{}, store)
	there := newNATSPool(t, h, hs, "there")
	h.announce(there.id, "elsewhere", 1)
	// Nobody listens on the gone pool's subject. It is this appliance's,
	// with more free workers: the socket picks it first.
	h.announce("gone", testAppliance, 4)
	d := h.dial("c1", 0)
	d.send(1)

	b := there.next(t)
	g := store.granted()
	if len(g) != 2 || g[0].Token.Owner != "gone" || g[1].Token != b.a.Token {
		t.Fatalf("grants %+v; want one for the gone pool, then the batch's for pool %q", g, there.id)
	}
	if st := h.lock("c1"); st.Done != 0 || st.Released != 0 {
		t.Fatalf("lease %+v: the gone pool's grant was released, not abandoned", st)
	}
	if st := h.s.Stats(); st.Pools != 1 || st.LeaseHeld != 0 {
		t.Fatalf("%d pools known, %d acquires found the lease held; want 1 (the gone one forgotten) and 0 (its grant given back at once)", st.Pools, st.LeaseHeld)
	}
	there.answer(t, b, true)
	there.end(t, store, b, false)
	d.waitAcks(1)
}

// abandonFails is a store whose Abandon fails: the store is unreachable.
type abandonFails struct{ *grantStore }

func (abandonFails) Abandon(context.Context, string, lease.Token) error {
	return errors.New("lease store unreachable")
}

// TestAbandonFailureWaitsForExpiry: when the lease of a batch handed back
// cannot be abandoned (a store error), nothing is taken as given back:
// the controller waits, the error is counted and logged, and the batch
// goes out again only under a new grant, once the refused one expired.
func TestAbandonFailureWaitsForExpiry(t *testing.T) {
	const ttl = time.Second
	store := abandonFails{newGrantStore(zeroTime)}
	pool := newFakePool(newHolders(t, store), "local", 4)
	pool.busy = 1
	h := start(t, Config{Local: pool, TTL: ttl}, store)
	h.announce(pool.id, testAppliance, 4)
	d := h.dial("c1", 0)
	d.send(1)

	refused := pool.next(t)
	wait.True(t, timeout, "the controller waiting for its lease", func() bool {
		st, _, _ := h.controller("c1")
		return st == stWaiting
	})
	if st := h.s.Stats(); st.StoreErrors != 1 || !strings.Contains(h.logs.String(), "lease store abandon failed") {
		t.Fatalf("store errors %d, log:\n%s\nwant the failed abandon counted and logged", st.StoreErrors, h.logs)
	}
	b := pool.next(t)
	if b.a.Token == refused.a.Token || b.at.Before(refused.at.Add(ttl)) {
		t.Fatalf("batch under %v %v after the refused one under %v: want a new grant, after the refused one expired",
			b.a.Token, b.at.Sub(refused.at), refused.a.Token)
	}
	pool.end(t, store, b, false)
	d.waitAcks(1)
}

// slowAbandonStore is a lease store whose Abandon takes until release is
// closed, and which records whether one was under way when Run returned.
type slowAbandonStore struct {
	*lease.Memory
	started, release chan struct{}
	running          atomic.Int32
}

func (s *slowAbandonStore) Abandon(ctx context.Context, id string, tok lease.Token) error {
	s.running.Add(1)
	defer s.running.Add(-1)
	close(s.started)
	<-s.release
	return s.Memory.Abandon(ctx, id, tok)
}

// TestRunWaitsForItsStoreCalls: a store call the socket made on a
// goroutine of its own (here, giving back the lease of a batch a pool
// answered busy) has ended when Run returns. The appliance closes the
// lease store's client right after; a call still running then fails, and
// its lock is left to expire.
func TestRunWaitsForItsStoreCalls(t *testing.T) {
	store := &slowAbandonStore{Memory: lease.NewMemory(), started: make(chan struct{}), release: make(chan struct{})}
	hs := newHolders(t, store)
	h := start(t, Config{}, store)
	pool := newNATSPool(t, h, hs, "remote")
	h.announce(pool.id, "elsewhere", 4)
	d := h.dial("c1", 0)
	d.send(1)
	pool.answer(t, pool.next(t), false)
	select {
	case <-store.started:
	case <-time.After(timeout):
		t.Fatal("the busy batch's lease was not given back")
	}
	// Released a while after the socket was told to stop: Run must wait
	// for it, however long it takes.
	time.AfterFunc(500*time.Millisecond, func() { close(store.release) })
	if err := h.stop(); err != nil {
		t.Fatalf("Run: %v", err)
	}
	if n := store.running.Load(); n != 0 {
		t.Fatalf("Run returned with %d store calls of its own still running", n)
	}
}
