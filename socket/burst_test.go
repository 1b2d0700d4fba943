package socket

import (
	"bytes"
	"testing"

	"pgregory.net/rapid"
)

// TestBurstChunks: the bodies and records a burst hands out never overlap,
// have exactly the size asked for (an append to one cannot run into the
// next), and survive the burst's end.
func TestBurstChunks(t *testing.T) {
	rapid.Check(t, func(t *rapid.T) {
		var b burst
		var bodies [][]byte
		var want [][]byte
		msgs := map[*msg]bool{}
		steps := rapid.IntRange(1, 200).Draw(t, "steps")
		for i := range steps {
			n := rapid.IntRange(0, 300).Draw(t, "n")
			buffered := rapid.IntRange(0, 5000).Draw(t, "buffered")
			body := b.body(n, buffered)
			if len(body) != n || cap(body) != n {
				t.Fatalf("body of %d bytes: len %d cap %d", n, len(body), cap(body))
			}
			fill := bytes.Repeat([]byte{byte(i)}, n)
			copy(body, fill)
			bodies, want = append(bodies, body), append(want, fill)
			m := b.msg(rapid.IntRange(0, 100).Draw(t, "frames"))
			if msgs[m] {
				t.Fatalf("step %d: a msg record handed out twice", i)
			}
			msgs[m] = true
			m.seq = uint64(i)
			if rapid.Bool().Draw(t, "end") {
				b.end()
			}
		}
		for i := range bodies {
			if !bytes.Equal(bodies[i], want[i]) {
				t.Fatalf("body %d overwritten", i)
			}
		}
		seen := map[uint64]bool{}
		for m := range msgs {
			seen[m.seq] = true
		}
		if len(seen) != steps {
			t.Fatalf("%d distinct records hold %d seqs: a record was reused", steps, len(seen))
		}
	})
}
