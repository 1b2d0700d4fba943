package socket

import (
	"strings"
	"testing"
)

// TestTransitions: every event has a row; a move the table has is made,
// and one it lacks is refused, in a test binary by a panic naming it,
// before the state changes.
func TestTransitions(t *testing.T) {
	for ev, tr := range transitions {
		if tr.from == 0 || tr.name == "" {
			t.Errorf("event %d: no row (from %b, %q)", ev, tr.from, tr.name)
		}
	}
	c := &controller{id: "c1", state: stAssigned, batchLen: 3}
	c.accepted()
	if c.state != stRunning || c.batchLen != 3 {
		t.Fatalf("accepted: state %v, batch of %d; want running with its batch", c.state, c.batchLen)
	}
	c.ended()
	if c.state != stIdle || c.batchLen != 0 {
		t.Fatalf("ended: state %v, batch of %d; want idle, the queue's head let go", c.state, c.batchLen)
	}
	defer func() {
		r := recover()
		if r == nil || !strings.Contains(r.(error).Error(), "accepted in state idle") {
			t.Fatalf("accepted while idle: recovered %v; want a panic naming the move", r)
		}
		if c.state != stIdle {
			t.Fatalf("after the refused move: state %v, want idle still", c.state)
		}
	}()
	c.accepted()
}
