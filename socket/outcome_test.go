package socket

import (
	"testing"

	"github.com/edgegate/edgegate/coord"
	"github.com/edgegate/edgegate/internal/wait"
)

// TestStaleOutcomeRefused: an outcome that is not the one of the batch in
// flight (an older fence, another pool, or over NATS for a batch of this
// process) acknowledges nothing, whatever it says; the batch's own outcome
// then does.
func TestStaleOutcomeRefused(t *testing.T) {
	t.Run("over NATS", func(t *testing.T) {
		store := newGrantStore(zeroTime)
		h := start(t, Config{}, store)
		pool := newNATSPool(t, h, newHolders(t, store), "remote")
		h.announce(pool.id, "elsewhere", 4)
		d := h.dial("c1", 0)
		d.send(1)
		b := pool.next(t)
		pool.answer(t, b, true)

		older := staleOutcome(b)
		older.Fence--
		refuse(t, h, b.reply, &older, 1)
		other := staleOutcome(b)
		other.Pool = "another"
		refuse(t, h, b.reply, &other, 2)

		pool.end(t, store, b, false)
		d.waitAcks(1)
	})
	t.Run("over NATS for a batch of this process", func(t *testing.T) {
		store := newGrantStore(zeroTime)
		pool := newFakePool(newHolders(t, store), "local", 4)
		h := start(t, Config{Local: pool}, store)
		h.announce(pool.id, testAppliance, 4)
		d := h.dial("c1", 0)
		d.send(1)
		b := pool.next(t)

		// Right fence, right pool: still not over NATS.
		forged := staleOutcome(b)
		refuse(t, h, coord.SocketSubject(h.s.id)+".c1", &forged, 1)

		pool.end(t, store, b, false)
		d.waitAcks(1)
	})
}

// staleOutcome is an outcome of b's controller, fence and pool that says
// every message was dead-lettered: if the socket took it, the device
// would get ACKs with status dead-lettered.
func staleOutcome(b *batch) coord.Outcome {
	return coord.Outcome{
		Controller: b.a.Controller, Fence: b.a.Token.Fence, Released: true, Done: b.a.Msgs[len(b.a.Msgs)-1].Seq,
		Statuses: []byte{1}, Pool: b.a.Token.Owner,
	}
}

// refuse publishes o to subject and waits until the socket counted it as
// the stale outcome number n, having acknowledged nothing.
func refuse(t *testing.T, h *harness, subject string, o *coord.Outcome, n uint64) {
	t.Helper()
	if err := h.nc.Publish(subject, coord.AppendOutcome(nil, o)); err != nil {
		t.Fatal(err)
	}
	wait.True(t, timeout, "the outcome refused as stale, or taken", func() bool {
		return h.s.stats.staleOutcomes.Load() == n || h.s.Stats().Acked != 0
	})
	if st, batchLen, _ := h.controller(o.Controller); h.s.stats.staleOutcomes.Load() != n || !st.inFlightState() || batchLen != 1 || h.s.Stats().Acked != 0 {
		t.Fatalf("after a stale outcome: state %v, batch of %d, %d acknowledged; want the batch still out, nothing acknowledged",
			st, batchLen, h.s.Stats().Acked)
	}
}
