package socket

import (
	"testing"

	"github.com/edgegate/edgegate/coord"
	"github.com/edgegate/edgegate/egp"
	"github.com/edgegate/edgegate/lease"
)

// TestLateAnnouncementClosesNoNewerSession: a device moves from appliance
// A to B; A's announcement of the session it had opened before can reach
// B after B opened the newer one. B must keep it (the device would be
// told it was taken over, and stop); an announcement of a newer session
// closes it.
func TestLateAnnouncementClosesNoNewerSession(t *testing.T) {
	store := lease.NewMemory()
	pool := newFakePool(newHolders(t, store), "local", 4)
	h := start(t, Config{Local: pool}, store)
	h.announce(pool.id, testAppliance, 4)
	d := h.dial("ctl-m", 0)
	var no uint64
	h.s.mu.Lock()
	for sess := range h.s.sessions {
		if sess.id == "ctl-m" {
			no = sess.lease.No
		}
	}
	h.s.mu.Unlock()
	if no == 0 {
		t.Fatal("the session has no number")
	}
	if err := h.nc.Publish(coord.SessionSubject("ctl-m"), coord.SessionAnnouncement("socket-a", no-1)); err != nil {
		t.Fatal(err)
	}
	d.send(1)
	pool.end(t, store, pool.next(t), false)
	d.waitAcks(1)
	if err := h.nc.Publish(coord.SessionSubject("ctl-m"), coord.SessionAnnouncement("socket-a", no+1)); err != nil {
		t.Fatal(err)
	}
	d.waitError(egp.CodeTakenOver)
}
