package lease_test

import (
	"context"
	"testing"

	"github.com/edgegate/edgegate/internal/redistest"
	"github.com/edgegate/edgegate/lease"
)

func TestRedisStore(t *testing.T) {
	srv := redistest.Start(t)
	n := 0
	storeContract(t, func(t *testing.T) lease.Store {
		n++ // a fresh prefix per case: the same server, no shared keys
		return lease.NewRedis(srv.Client(), "t"+string(rune('a'+n)))
	})
}

func TestRedisKeysShareASlot(t *testing.T) {
	s := lease.NewRedis(nil, "")
	keys := s.Keys("imei:356938035643809")
	for _, k := range keys {
		if want := "edgegate:{imei:356938035643809}:"; k[:len(want)] != want {
			t.Fatalf("key %q lacks the hash tag prefix %q", k, want)
		}
	}
}

func TestRedisRunIDChangesOnRestart(t *testing.T) {
	srv := redistest.Start(t)
	s := lease.NewRedis(srv.Client(), "")
	ctx := context.Background()
	id1, err := s.RunID(ctx)
	if err != nil || len(id1) != 40 {
		t.Fatalf("run id %q, %v", id1, err)
	}
	g, _ := s.Acquire(ctx, "c", "p", 10e9)
	srv.Restart()
	id2, err := s.RunID(ctx)
	if err != nil || id2 == id1 {
		t.Fatalf("run id after restart %q (before %q), %v: want a new one", id2, id1, err)
	}
	if st, err := s.Inspect(ctx, "c"); err != nil || st.Locked {
		t.Fatalf("after restart %+v, %v: want the lock gone (keys lost)", st, err)
	}
	_ = g
}
