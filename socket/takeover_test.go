package socket

import (
	"slices"
	"testing"

	"github.com/edgegate/edgegate/egp"
	"github.com/edgegate/edgegate/internal/wait"
)

// TestTakeoverWithBatchInFlight: a device that reconnects while its old
// session's batch runs takes the session over (the old one gets ERROR
// taken over, its messages not handed out are dropped), and its new
// messages wait for that batch: they go out only after its outcome, under
// a grant of their own, and the device gets their ACKs.
func TestTakeoverWithBatchInFlight(t *testing.T) {
	store := newGrantStore(zeroTime)
	pool := newFakePool(newHolders(t, store), "local", 4)
	h := start(t, Config{Local: pool, Batch: 2}, store)
	h.announce(pool.id, testAppliance, 4)
	old := h.dial("c1", 0)
	old.send(1, 2, 3)
	ba := pool.next(t)
	if !slices.Equal(ba.seqs(), []uint64{1, 2}) {
		t.Fatalf("old session's batch: seqs %v, want 1 and 2", ba.seqs())
	}

	d := h.dial("c1", 0)
	old.waitError(egp.CodeTakenOver)
	d.send(1)
	wait.True(t, timeout, "the new session's message queued", func() bool { return h.s.Stats().Received == 4 })
	if st, batchLen, _ := h.controller("c1"); st != stRunning || batchLen != 2 {
		t.Fatalf("while the old batch runs: state %v, batch of %d; want it running, alone", st, batchLen)
	}
	none(t, pool.batches, "the old session's batch runs")

	// The old batch's pool asks to keep the lease: the store, which knows
	// of the new session, lets it go instead.
	pool.end(t, store, ba, true)
	b := pool.next(t)
	if !slices.Equal(b.seqs(), []uint64{1}) || b.a.Token.Fence <= ba.a.Token.Fence {
		t.Fatalf("new session's batch: seqs %v under %v; want its seq 1 alone, under a grant after %v", b.seqs(), b.a.Token, ba.a.Token)
	}
	pool.end(t, store, b, false)
	d.waitAcks(1)
	if got := old.acked(); len(got) != 0 {
		t.Fatalf("the old session got ACKs %v after it was taken over", got)
	}
}
