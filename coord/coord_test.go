package coord

import (
	"bytes"
	"errors"
	"testing"
	"time"

	"pgregory.net/rapid"

	"github.com/edgegate/edgegate/lease"
)

func TestAssignRoundTrip(t *testing.T) {
	rapid.Check(t, func(t *rapid.T) {
		a := &Assign{
			Controller: rapid.StringMatching(`[A-Za-z0-9_:-]{1,128}`).Draw(t, "id"),
			Token:      lease.Token{Fence: rapid.Uint64().Draw(t, "fence"), Owner: rapid.StringMatching(`[A-Za-z0-9]{0,30}`).Draw(t, "owner")},
			Valid:      time.Duration(rapid.Int64Range(0, int64(time.Hour)).Draw(t, "valid")),
			Clock:      rapid.Uint64().Draw(t, "clock"),
			Deadline:   rapid.Int64().Draw(t, "deadline"),
			Hold:       time.Duration(rapid.Int64Range(0, int64(time.Hour)).Draw(t, "hold")),
		}
		n := rapid.IntRange(0, 20).Draw(t, "n")
		for i := 0; i < n; i++ {
			a.Msgs = append(a.Msgs, Msg{
				Seq:      rapid.Uint64().Draw(t, "seq"),
				Received: time.Unix(0, rapid.Int64Range(0, 1<<62).Draw(t, "recv")),
				Payload:  rapid.SliceOfN(rapid.Byte(), 0, 300).Draw(t, "payload"),
			})
		}
		got, err := DecodeAssign(AppendAssign(nil, a))
		if err != nil {
			t.Fatalf("decode: %v", err)
		}
		if got.Controller != a.Controller || got.Token != a.Token || got.Valid != a.Valid || got.Hold != a.Hold || len(got.Msgs) != len(a.Msgs) {
			t.Fatalf("got %+v, want %+v", got, a)
		}
		// The clock lets a pool skip the lease check: never on the wire.
		if got.Clock != 0 || got.Deadline != 0 {
			t.Fatalf("clock %x, deadline %d came through the encoding", got.Clock, got.Deadline)
		}
		for i := range a.Msgs {
			g, w := got.Msgs[i], a.Msgs[i]
			if g.Seq != w.Seq || !g.Received.Equal(w.Received) || !bytes.Equal(g.Payload, w.Payload) {
				t.Fatalf("msg %d: got %+v, want %+v", i, g, w)
			}
		}
	})
}

func TestAnswerOutcomeRoundTrip(t *testing.T) {
	ans := Answer{Controller: "c-1", Fence: 9, Accepted: true, Pool: "P"}
	if got, err := DecodeAnswer(AppendAnswer(nil, &ans)); err != nil || got != ans {
		t.Fatalf("answer: got %+v, %v; want %+v", got, err, ans)
	}
	for _, o := range []Outcome{
		{Controller: "c-1", Fence: 9, Released: true, Done: 77, Statuses: []byte{0, 1, 0}, Pool: "P"},
		{Controller: "c-1", Fence: 9, Released: true, Kept: true, Done: 78, Statuses: []byte{0}, Pool: "P"},
		{Controller: "c-2", Fence: 10},
	} {
		got, err := DecodeOutcome(AppendOutcome(nil, &o))
		if err != nil || got.Controller != o.Controller || got.Fence != o.Fence || got.Released != o.Released || got.Kept != o.Kept || got.Done != o.Done || !bytes.Equal(got.Statuses, o.Statuses) || got.Pool != o.Pool {
			t.Fatalf("outcome: got %+v, %v; want %+v", got, err, o)
		}
	}
}

func TestDecodeMalformed(t *testing.T) {
	good := AppendAssign(nil, &Assign{Controller: "c", Msgs: []Msg{{Seq: 1, Payload: []byte("hi")}}})
	tests := map[string][]byte{
		"empty":          nil,
		"wrong kind":     AppendAnswer(nil, &Answer{Controller: "c"}),
		"truncated":      good[:len(good)-1],
		"trailing bytes": append(append([]byte(nil), good...), 0),
		"huge count":     func() []byte { b := AppendAssign(nil, &Assign{Controller: "c"}); b[len(b)-1] = 0xff; return b }(),
	}
	for name, b := range tests {
		t.Run(name, func(t *testing.T) {
			if _, err := DecodeAssign(b); !errors.Is(err, ErrMalformed) {
				t.Fatalf("got %v, want ErrMalformed", err)
			}
		})
	}
}

func FuzzDecode(f *testing.F) {
	f.Add(AppendAssign(nil, &Assign{Controller: "c", Msgs: []Msg{{Seq: 1, Payload: []byte("x")}}}))
	f.Add(AppendOutcome(nil, &Outcome{Controller: "c", Statuses: []byte{0}}))
	f.Add(AppendAnswer(nil, &Answer{Controller: "c"}))
	f.Fuzz(func(t *testing.T, b []byte) {
		DecodeAssign(b)
		DecodeAnswer(b)
		DecodeOutcome(b)
	})
}
