package socket

import (
	"testing"

	"pgregory.net/rapid"
)

// TestFifo: the run queue keeps the order of a slice model through pushes,
// pushes to the front (a controller put back after a lost pick) and pops,
// across growths and wrap-arounds.
func TestFifo(t *testing.T) {
	rapid.Check(t, func(t *rapid.T) {
		var f fifo
		var model []*controller
		steps := rapid.IntRange(1, 300).Draw(t, "steps")
		for i := range steps {
			switch op := rapid.IntRange(0, 2).Draw(t, "op"); {
			case op == 0:
				c := &controller{id: string(rune('a' + i%26))}
				f.push(c)
				model = append(model, c)
			case op == 1:
				c := &controller{}
				f.pushFront(c)
				model = append([]*controller{c}, model...)
			case len(model) > 0:
				got := f.pop()
				if got != model[0] {
					t.Fatalf("step %d: pop returned another controller than the model's head", i)
				}
				model = model[1:]
			}
			if f.len() != len(model) {
				t.Fatalf("step %d: len %d, want %d", i, f.len(), len(model))
			}
		}
		for len(model) > 0 {
			if f.pop() != model[0] {
				t.Fatal("drain: order differs from the model")
			}
			model = model[1:]
		}
	})
}
