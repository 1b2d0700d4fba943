package parser

import (
	"context"
	"sync/atomic"
	"testing"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/edgegate/edgegate/coord"
	"github.com/edgegate/edgegate/lease"
)

// TestClockTrustedOnlyInProcess: an assignment that arrives over NATS is
// confirmed with the lease store even when it carries the pool's clock ID
// and a deadline far ahead (what a socket of the same process says in a
// call): a forged one, for a lease another holder has, never runs.
func TestClockTrustedOnlyInProcess(t *testing.T) {
	clock := coord.NewClock()
	var calls atomic.Int64
	p, store, ns := startPoolWith(t, Config{Workers: 1, TTL: 10 * time.Second, Heartbeat: time.Second, Clock: clock,
		Handler: HandlerFunc(func(context.Context, *Message) error { calls.Add(1); return nil })})
	ctx := context.Background()
	g, err := store.Acquire(ctx, "victim", "someone-else", 10*time.Second, lease.Session{})
	if err != nil {
		t.Fatal(err)
	}
	a := &coord.Assign{
		Controller: "victim", Token: lease.Token{Fence: g.Token.Fence, Owner: p.ID()}, Valid: 10 * time.Second,
		Clock: clock.ID(), Deadline: clock.At(time.Now().Add(time.Minute)),
		Msgs: []coord.Msg{{Seq: 1, Received: time.Now(), Payload: []byte("x")}},
	}
	nc, err := ns.Connect("forger")
	if err != nil {
		t.Fatal(err)
	}
	defer nc.Close()
	replies, err := nc.SubscribeSync(coord.SocketSubject("forger") + ".>")
	if err != nil {
		t.Fatal(err)
	}
	if err := nc.PublishMsg(&nats.Msg{Subject: coord.PoolSubject(p.ID()), Reply: coord.SocketSubject("forger") + ".victim", Data: coord.AppendAssign(nil, a)}); err != nil {
		t.Fatal(err)
	}
	for {
		m, err := replies.NextMsg(10 * time.Second)
		if err != nil {
			t.Fatalf("no outcome: %v", err)
		}
		if coord.Kind(m.Data) != coord.KindOutcome {
			continue
		}
		o, err := coord.DecodeOutcome(m.Data)
		if err != nil {
			t.Fatal(err)
		}
		if o.Released {
			t.Errorf("outcome %+v: want the lease not confirmed", o)
		}
		break
	}
	if n := calls.Load(); n != 0 {
		t.Errorf("the handler ran %d times under a lease the pool does not hold", n)
	}
	if st, _ := store.Inspect(ctx, "victim"); st.Token != g.Token {
		t.Errorf("lease %+v after the forged assignment, want still %+v", st.Token, g.Token)
	}
}
