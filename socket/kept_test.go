package socket

import (
	"slices"
	"testing"
)

// TestKeptLeaseCarriesNextBatch: a lease its pool kept after a batch
// carries the controller's next batch, with no acquire: the same token,
// one grant for both, and the device's ACKs in seq order.
func TestKeptLeaseCarriesNextBatch(t *testing.T) {
	store := newGrantStore(zeroTime)
	pool := newFakePool(newHolders(t, store), "local", 4)
	h := start(t, Config{Local: pool, Batch: 1}, store)
	h.announce(pool.id, testAppliance, 4)
	d := h.dial("c1", 0)
	d.send(1, 2)

	b1 := pool.next(t)
	if !slices.Equal(b1.seqs(), []uint64{1}) || b1.a.Hold == 0 {
		t.Fatalf("first batch: seqs %v, hold %v; want seq 1 and a keep asked for (more is queued)", b1.seqs(), b1.a.Hold)
	}
	pool.end(t, store, b1, true)
	b2 := pool.next(t)
	if !slices.Equal(b2.seqs(), []uint64{2}) || b2.a.Token != b1.a.Token {
		t.Fatalf("second batch: seqs %v under %v; want seq 2 under the kept lease %v", b2.seqs(), b2.a.Token, b1.a.Token)
	}
	if st := h.s.Stats(); len(store.granted()) != 1 || st.Acquired != 1 || st.Continued != 1 {
		t.Fatalf("%d grants, stats %+v; want one grant and one batch continued under it", len(store.granted()), st)
	}
	pool.end(t, store, b2, false)
	d.waitAcks(1, 2)
	if st := h.lock("c1"); st.Locked || st.Done != 2 {
		t.Fatalf("lease after the last batch: %+v; want released with done 2", st)
	}
}
