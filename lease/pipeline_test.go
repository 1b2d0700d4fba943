package lease

import (
	"context"
	"testing"
	"time"
)

func TestPipelineDeadline(t *testing.T) {
	at := func(d time.Duration) *pcall {
		ctx, cancel := context.WithDeadline(context.Background(), time.Unix(1000, 0).Add(d))
		t.Cleanup(cancel)
		return &pcall{ctx: ctx}
	}
	none := &pcall{ctx: context.Background()}
	if d, ok := pipelineDeadline([]*pcall{at(time.Second), at(3 * time.Second), at(2 * time.Second)}); !ok || !d.Equal(time.Unix(1003, 0)) {
		t.Errorf("deadline %v %v, want the latest, 1003s", d, ok)
	}
	// A call without a deadline, batched with calls whose deadline has
	// passed, must not fail by theirs.
	if d, ok := pipelineDeadline([]*pcall{at(0), none, at(time.Second)}); ok {
		t.Errorf("deadline %v with a caller that has none", d)
	}
}
