package socket

import (
	"bytes"
	"slices"
	"testing"

	"github.com/edgegate/edgegate/coord"
	"github.com/edgegate/edgegate/egp"
	"github.com/edgegate/edgegate/internal/wait"
)

// TestBatchFitsOneNATSMessage: a controller's queued messages together
// larger than a NATS message (frames near max_frame) go to a pool of
// another appliance in several batches, each one NATS message, all in
// order; an assignment too large to publish would be handed back and
// dispatched again forever.
func TestBatchFitsOneNATSMessage(t *testing.T) {
	store := newGrantStore(zeroTime)
	hs := newHolders(t, store)
	h := start(t, Config{}, store)
	pool := newNATSPool(t, h, hs, "remote")
	d := h.dial("c1", 0)

	// Twelve frames of the largest body: 12 MiB, more than the 8 MiB of a
	// NATS message.
	const n = 12
	payload := bytes.Repeat([]byte{'x'}, egp.DefaultMaxFrame-8)
	var frames []byte
	for seq := uint64(1); seq <= n; seq++ {
		frames = egp.AppendData(frames, seq, payload)
	}
	go func() { d.conn.Write(frames) }() // the socket reads as it queues
	// No pool is known yet: all twelve wait in the queue, and the first
	// batch would take them all.
	wait.True(t, timeout, "twelve messages queued", func() bool {
		c, sh := h.s.lookup("c1")
		defer sh.mu.Unlock()
		return c != nil && len(c.q) == n
	})
	h.announce(pool.id, "elsewhere", 4)

	limit := int(h.nc.MaxPayload())
	var seqs, want []uint64
	for len(seqs) < n {
		b := pool.next(t)
		if size := len(coord.AppendAssign(nil, b.a)); size > limit {
			t.Fatalf("an assignment of %d bytes, over the %d of a NATS message", size, limit)
		}
		seqs = append(seqs, b.seqs()...)
		pool.answer(t, b, true)
		pool.end(t, store, b, false)
		h.announce(pool.id, "elsewhere", 4)
	}
	for seq := uint64(1); seq <= n; seq++ {
		want = append(want, seq)
	}
	if !slices.Equal(seqs, want) {
		t.Fatalf("batches carried seqs %v; want %v", seqs, want)
	}
	d.waitAcks(want...)
}
