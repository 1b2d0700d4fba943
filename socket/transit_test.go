package socket

import (
	"encoding/binary"
	"fmt"
	"testing"
	"time"

	"github.com/edgegate/edgegate/egp"
	"github.com/edgegate/edgegate/internal/wait"
	"github.com/edgegate/edgegate/lease"
)

// TestHeadersAloneHoldBackNobody: devices that send the header of a
// large DATA frame and never its body (a hostile host where tokens are
// shared, or a broken device) must not take devices.memory from every
// other device until they are idle-closed.
func TestHeadersAloneHoldBackNobody(t *testing.T) {
	store := lease.NewMemory()
	pool := newFakePool(newHolders(t, store), "local", 4)
	const frame = 64 << 10
	h := start(t, Config{Local: pool, MaxFrame: frame, Memory: 4 * frame, IdleTimeout: time.Hour}, store)
	h.announce("local", testAppliance, 4)

	// All of devices.memory announced in headers alone, but for less
	// than the victim's messages need.
	remaining, announced := int64(4*frame), int64(0)
	for i := 0; remaining >= 2*msgOverhead && i < 10; i++ {
		n := min(int64(frame), remaining-msgOverhead+8)
		remaining -= n - 8 + msgOverhead
		announced += n - 8 + msgOverhead
		d := h.dial(fmt.Sprintf("attacker-%d", i), 0)
		hdr := binary.BigEndian.AppendUint32([]byte{egp.Magic, byte(egp.TypeData)}, uint32(n))
		if _, err := d.conn.Write(hdr); err != nil {
			t.Fatal(err)
		}
	}
	// The headers are read: their bodies reserved devices.memory, or
	// wait in transit.
	wait.True(t, timeout, "the attackers' headers read", func() bool {
		return h.s.mem.Load() >= announced || h.s.transit.Load() > 0
	})

	victim := h.dial("victim", 0)
	victim.send(1, 2, 3)
	select {
	case b := <-pool.batches:
		if got := b.seqs(); len(got) == 0 || got[0] != 1 {
			t.Fatalf("victim's first batch %v", got)
		}
	case <-time.After(timeout):
		t.Fatalf("victim's messages not dispatched: held back by %d bytes of devices.memory and %d in transit, reserved for bodies that never come", h.s.mem.Load(), h.s.transit.Load())
	}
}
