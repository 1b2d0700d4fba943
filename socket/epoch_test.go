package socket

import (
	"testing"
	"time"
)

// TestPauseOnNewStoreEpoch: a grant from a store whose epoch began less
// than a lease ago (a restart, a failover: a holder of a lease it forgot
// may still run) is abandoned, and nothing is dispatched until a TTL
// after the epoch began; then the batch goes under a grant of its own.
func TestPauseOnNewStoreEpoch(t *testing.T) {
	const ttl = time.Second
	epochStart := time.Now()
	store := newGrantStore(epochStart)
	pool := newFakePool(newHolders(t, store), "local", 4)
	h := start(t, Config{Local: pool, TTL: ttl}, store)
	h.announce(pool.id, testAppliance, 4)
	d := h.dial("c1", 0)
	d.send(1)

	b := pool.next(t)
	if end := epochStart.Add(ttl); b.at.Before(end) {
		t.Fatalf("batch offered %v before the pause ended", end.Sub(b.at))
	}
	g := store.granted()
	if len(g) < 2 || g[0].Token == b.a.Token || g[len(g)-1].Token != b.a.Token {
		t.Fatalf("grants %+v, batch under %v: want the grant made in the young epoch abandoned, the batch under a later one", g, b.a.Token)
	}
	if st := h.s.Stats(); st.Pauses != 1 {
		t.Fatalf("pauses %d, want 1", st.Pauses)
	}
	pool.end(t, store, b, false)
	d.waitAcks(1)
}
