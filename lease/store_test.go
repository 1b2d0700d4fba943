package lease_test

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/edgegate/edgegate/lease"
)

// storeContract runs the semantics every Store must have, against a fresh
// store from newStore. The Redis store runs the same table.
func storeContract(t *testing.T, newStore func(t *testing.T) lease.Store) {
	ctx := context.Background()
	const ttl = 300 * time.Millisecond
	tests := []struct {
		name string
		run  func(t *testing.T, s lease.Store)
	}{
		{"acquire then conflict", func(t *testing.T, s lease.Store) {
			g, err := s.Acquire(ctx, "c1", "poolA", ttl)
			if err != nil {
				t.Fatalf("first acquire: %v", err)
			}
			if g.Token.Fence == 0 || g.Token.Owner != "poolA" {
				t.Fatalf("grant %+v: want fence > 0 and owner poolA", g)
			}
			if _, err := s.Acquire(ctx, "c1", "poolB", ttl); !errors.Is(err, lease.ErrHeld) {
				t.Fatalf("second acquire: got %v, want ErrHeld", err)
			}
			if _, err := s.Acquire(ctx, "c2", "poolB", ttl); err != nil {
				t.Fatalf("other controller: %v", err)
			}
		}},
		{"fence increases with every grant", func(t *testing.T, s lease.Store) {
			var last uint64
			before := uint64(time.Now().Add(-time.Minute).UnixMilli()) * 1000
			for i := 0; i < 5; i++ {
				g, err := s.Acquire(ctx, "c1", "p", ttl)
				if err != nil {
					t.Fatalf("acquire %d: %v", i, err)
				}
				if g.Fresh != (i == 0) {
					t.Fatalf("grant %d: fresh %v, want %v", i, g.Fresh, i == 0)
				}
				if i == 0 && g.Token.Fence < before {
					t.Fatalf("first fence %d: want it seeded from the clock (>= %d)", g.Token.Fence, before)
				}
				if g.Token.Fence <= last {
					t.Fatalf("fence %d after %d: want increasing", g.Token.Fence, last)
				}
				last = g.Token.Fence
				if err := s.Release(ctx, "c1", g.Token, uint64(i)); err != nil {
					t.Fatalf("release %d: %v", i, err)
				}
			}
		}},
		{"a lease granted before a done reset records no done", func(t *testing.T, s lease.Store) {
			old, _ := s.Acquire(ctx, "c1", "p", ttl)
			if err := s.Keep(ctx, "c1", old.Token, ttl, 40); err != nil {
				t.Fatal(err)
			}
			if err := s.ResetDone(ctx, "c1"); err != nil {
				t.Fatal(err)
			}
			// The old session's batch ends after the reset.
			if err := s.Keep(ctx, "c1", old.Token, ttl, 50); err != nil {
				t.Fatalf("keep after the reset: %v (the lease itself is still held)", err)
			}
			if d, _ := s.Done(ctx, "c1"); d != 0 {
				t.Fatalf("done %d after a keep under a lease from before the reset, want 0", d)
			}
			if err := s.Release(ctx, "c1", old.Token, 60); err != nil {
				t.Fatal(err)
			}
			if d, _ := s.Done(ctx, "c1"); d != 0 {
				t.Fatalf("done %d after a release of a lease from before the reset, want 0", d)
			}
			g, err := s.Acquire(ctx, "c1", "p", ttl)
			if err != nil || g.Done != 0 {
				t.Fatalf("grant after the reset %+v (%v): want done 0", g, err)
			}
			if err := s.Keep(ctx, "c1", g.Token, ttl, 3); err != nil {
				t.Fatal(err)
			}
			if err := s.Release(ctx, "c1", g.Token, 4); err != nil {
				t.Fatal(err)
			}
			if d, _ := s.Done(ctx, "c1"); d != 4 {
				t.Fatalf("done %d under a lease granted after the reset, want 4", d)
			}
		}},
		{"release records done and frees the lock", func(t *testing.T, s lease.Store) {
			g, _ := s.Acquire(ctx, "c1", "p", ttl)
			if g.Done != 0 {
				t.Fatalf("fresh done %d, want 0", g.Done)
			}
			if err := s.Release(ctx, "c1", g.Token, 42); err != nil {
				t.Fatalf("release: %v", err)
			}
			if d, err := s.Done(ctx, "c1"); err != nil || d != 42 {
				t.Fatalf("done = %d, %v; want 42", d, err)
			}
			g2, err := s.Acquire(ctx, "c1", "p", ttl)
			if err != nil {
				t.Fatalf("acquire after release: %v", err)
			}
			if g2.Done != 42 {
				t.Fatalf("grant done %d, want 42", g2.Done)
			}
			st, err := s.Inspect(ctx, "c1")
			if err != nil || !st.Locked || st.Token != g2.Token || st.Released != g.Token.Fence {
				t.Fatalf("inspect %+v, %v: want locked by %v, released fence %d", st, err, g2.Token, g.Token.Fence)
			}
		}},
		{"release with a stale token fails and changes nothing", func(t *testing.T, s lease.Store) {
			g, _ := s.Acquire(ctx, "c1", "p", ttl)
			stale := lease.Token{Fence: g.Token.Fence - 1, Owner: "p"}
			if err := s.Release(ctx, "c1", stale, 99); !errors.Is(err, lease.ErrLost) {
				t.Fatalf("stale release: got %v, want ErrLost", err)
			}
			other := lease.Token{Fence: g.Token.Fence, Owner: "q"}
			if err := s.Release(ctx, "c1", other, 99); !errors.Is(err, lease.ErrLost) {
				t.Fatalf("wrong owner release: got %v, want ErrLost", err)
			}
			if d, _ := s.Done(ctx, "c1"); d != 0 {
				t.Fatalf("done %d after stale releases, want 0", d)
			}
			if st, _ := s.Inspect(ctx, "c1"); !st.Locked || st.Token != g.Token {
				t.Fatalf("lock %+v after stale releases, want still %v", st, g.Token)
			}
		}},
		{"keep records done and extends the same grant", func(t *testing.T, s lease.Store) {
			g, _ := s.Acquire(ctx, "c1", "p", ttl)
			// Kept past several TTLs, the lease stays with the same fence
			// and the done record follows every batch.
			end := time.Now().Add(2 * ttl)
			for i := uint64(1); time.Now().Before(end); i++ {
				if err := s.Keep(ctx, "c1", g.Token, ttl, 10*i); err != nil {
					t.Fatalf("keep %d: %v", i, err)
				}
				st, err := s.Inspect(ctx, "c1")
				if err != nil || !st.Locked || st.Token != g.Token || st.Done != 10*i || st.Stale(ttl) {
					t.Fatalf("after keep %d: %+v, %v; want locked by %v, done %d, not stale", i, st, err, g.Token, 10*i)
				}
				if _, err := s.Acquire(ctx, "c1", "q", ttl); !errors.Is(err, lease.ErrHeld) {
					t.Fatalf("acquire while kept: got %v, want ErrHeld", err)
				}
				time.Sleep(ttl / 5) // the batch period under test, not a readiness wait
			}
			stale := lease.Token{Fence: g.Token.Fence, Owner: "q"}
			if err := s.Keep(ctx, "c1", stale, ttl, 999); !errors.Is(err, lease.ErrLost) {
				t.Fatalf("keep with another token: got %v, want ErrLost", err)
			}
			if d, _ := s.Done(ctx, "c1"); d == 999 {
				t.Fatalf("a keep with another token recorded done %d", d)
			}
			// Released after the last keep, the next grant sees its done.
			if err := s.Abandon(ctx, "c1", g.Token); err != nil {
				t.Fatalf("abandon after keep: %v", err)
			}
			want, _ := s.Done(ctx, "c1")
			g2, err := s.Acquire(ctx, "c1", "q", ttl)
			if err != nil || g2.Done != want || g2.Token.Fence <= g.Token.Fence {
				t.Fatalf("grant after keep and abandon %+v, %v: want done %d, fence > %d", g2, err, want, g.Token.Fence)
			}
			if err := s.Keep(ctx, "c1", g.Token, ttl, 1); !errors.Is(err, lease.ErrLost) {
				t.Fatalf("keep of a released grant: got %v, want ErrLost", err)
			}
		}},
		{"abandon frees the lock and keeps done", func(t *testing.T, s lease.Store) {
			g, _ := s.Acquire(ctx, "c1", "p", ttl)
			s.Release(ctx, "c1", g.Token, 7)
			g, _ = s.Acquire(ctx, "c1", "p", ttl)
			if err := s.Abandon(ctx, "c1", g.Token); err != nil {
				t.Fatalf("abandon: %v", err)
			}
			st, _ := s.Inspect(ctx, "c1")
			if st.Locked || st.Done != 7 || st.Released == g.Token.Fence {
				t.Fatalf("after abandon %+v: want unlocked, done 7, released not %d", st, g.Token.Fence)
			}
			if err := s.Abandon(ctx, "c1", g.Token); !errors.Is(err, lease.ErrLost) {
				t.Fatalf("second abandon: got %v, want ErrLost", err)
			}
		}},
		{"heartbeat extends, expiry frees, heartbeat after loss fails", func(t *testing.T, s lease.Store) {
			g, _ := s.Acquire(ctx, "c1", "p", ttl)
			// Heartbeats keep the lease past its first TTL.
			end := time.Now().Add(2 * ttl)
			var beat time.Time // when the last heartbeat was sent: the TTL runs from there
			for time.Now().Before(end) {
				beat = time.Now()
				if err := s.Heartbeat(ctx, "c1", g.Token, ttl); err != nil {
					t.Fatalf("heartbeat: %v", err)
				}
				if _, err := s.Acquire(ctx, "c1", "q", ttl); !errors.Is(err, lease.ErrHeld) {
					t.Fatalf("acquire while heartbeating: got %v, want ErrHeld", err)
				}
				time.Sleep(ttl / 5) // the heartbeat period under test, not a readiness wait
			}
			st, _ := s.Inspect(ctx, "c1")
			if st.Stale(ttl) || st.Now.Sub(st.Heartbeat) > ttl {
				t.Fatalf("fresh lease reads stale: %+v", st)
			}
			// Without heartbeats it expires: poll until another owner gets it.
			var g2 lease.Grant
			var err error
			for deadline := time.Now().Add(10 * ttl); time.Now().Before(deadline); time.Sleep(ttl / 20) {
				if g2, err = s.Acquire(ctx, "c1", "q", ttl); err == nil {
					break
				}
			}
			if err != nil {
				t.Fatalf("lease never expired: %v", err)
			}
			// The store may round its clock to the millisecond, hence the slack.
			if waited := time.Since(beat); waited < ttl-10*time.Millisecond {
				t.Fatalf("lease expired %v after its last heartbeat, before its ttl %v", waited, ttl)
			}
			if g2.Token.Fence <= g.Token.Fence {
				t.Fatalf("fence after expiry %d, want > %d", g2.Token.Fence, g.Token.Fence)
			}
			if err := s.Heartbeat(ctx, "c1", g.Token, ttl); !errors.Is(err, lease.ErrLost) {
				t.Fatalf("heartbeat of the expired grant: got %v, want ErrLost", err)
			}
			if err := s.Release(ctx, "c1", g.Token, 5); !errors.Is(err, lease.ErrLost) {
				t.Fatalf("release of the expired grant: got %v, want ErrLost", err)
			}
		}},
		{"inspect reads an expired lock as stale", func(t *testing.T, s lease.Store) {
			st, err := s.Inspect(ctx, "never")
			if err != nil || st.Locked || !st.Stale(ttl) {
				t.Fatalf("unknown controller %+v, %v: want unlocked and stale", st, err)
			}
			s.Acquire(ctx, "c1", "p", ttl)
			// The heartbeat may read as older than the TTL a millisecond
			// before the lock itself expires: poll until both say so.
			var stale bool
			for deadline := time.Now().Add(10 * ttl); time.Now().Before(deadline) && !stale; time.Sleep(ttl / 20) {
				st, _ = s.Inspect(ctx, "c1")
				stale = st.Stale(ttl) && !st.Locked
			}
			if !stale || st.Locked {
				t.Fatalf("lock never read as expired: %+v", st)
			}
		}},
		{"reset done", func(t *testing.T, s lease.Store) {
			g, _ := s.Acquire(ctx, "c1", "p", ttl)
			s.Release(ctx, "c1", g.Token, 1000)
			if err := s.ResetDone(ctx, "c1"); err != nil {
				t.Fatalf("reset: %v", err)
			}
			if d, _ := s.Done(ctx, "c1"); d != 0 {
				t.Fatalf("done %d after reset, want 0", d)
			}
		}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			tt.run(t, newStore(t))
		})
	}
}

func TestMemoryStore(t *testing.T) {
	storeContract(t, func(*testing.T) lease.Store { return lease.NewMemory() })
}

func TestTokenString(t *testing.T) {
	tok := lease.Token{Fence: 17, Owner: "pool:x"}
	got, err := lease.ParseToken(tok.String())
	if err != nil || got != tok {
		t.Fatalf("ParseToken(%q) = %v, %v; want %v", tok.String(), got, err, tok)
	}
	for _, bad := range []string{"", "17", "x:pool", "-1:p"} {
		if _, err := lease.ParseToken(bad); err == nil {
			t.Errorf("ParseToken(%q): want an error", bad)
		}
	}
}
