package lease_test

import (
	"context"
	"errors"
	"fmt"
	"testing"
	"time"

	"github.com/edgegate/edgegate/internal/wait"
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
			g, err := s.Acquire(ctx, "c1", "poolA", ttl, lease.Session{})
			if err != nil {
				t.Fatalf("first acquire: %v", err)
			}
			if g.Token.Fence == 0 || g.Token.Owner != "poolA" {
				t.Fatalf("grant %+v: want fence > 0 and owner poolA", g)
			}
			if _, err := s.Acquire(ctx, "c1", "poolB", ttl, lease.Session{}); !errors.Is(err, lease.ErrHeld) {
				t.Fatalf("second acquire: got %v, want ErrHeld", err)
			}
			if _, err := s.Acquire(ctx, "c2", "poolB", ttl, lease.Session{}); err != nil {
				t.Fatalf("other controller: %v", err)
			}
		}},
		{"fence increases with every grant", func(t *testing.T, s lease.Store) {
			var last uint64
			before := uint64(time.Now().Add(-time.Minute).UnixMilli()) * 1000
			for i := 0; i < 5; i++ {
				g, err := s.Acquire(ctx, "c1", "p", ttl, lease.Session{})
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
		{"a lease of an older generation records no done", func(t *testing.T, s lease.Store) {
			s1, _ := s.Open(ctx, "c1", true)
			old, _ := s.Acquire(ctx, "c1", "p", ttl, s1)
			if err := s.Keep(ctx, "c1", old.Token, ttl, 40); err != nil {
				t.Fatal(err)
			}
			// The device resets its seqs in a new session elsewhere.
			s2, err := s.Open(ctx, "c1", false)
			if err != nil || s2.Gen == s1.Gen || s2.No <= s1.No {
				t.Fatalf("open after a reset %+v (%v): want a new generation and a newer session than %+v", s2, err, s1)
			}
			// The old session's batch ends after the reset: its keep
			// records nothing for the new generation and lets the lease go.
			if err := s.Keep(ctx, "c1", old.Token, ttl, 50); !errors.Is(err, lease.ErrSuperseded) {
				t.Fatalf("keep of an older session: got %v, want ErrSuperseded", err)
			}
			if d := doneOf(t, s, "c1"); d != 0 {
				t.Fatalf("done %d after a keep under a lease of the older generation, want 0", d)
			}
			if _, err := s.Acquire(ctx, "c1", "p", ttl, s1); !errors.Is(err, lease.ErrSuperseded) {
				t.Fatalf("acquire for the older session: got %v, want ErrSuperseded", err)
			}
			g, err := s.Acquire(ctx, "c1", "p", ttl, s2)
			if err != nil || g.Done != 0 || g.Token.Fence <= old.Token.Fence {
				t.Fatalf("grant after the reset %+v (%v): want done 0, fence > %d", g, err, old.Token.Fence)
			}
			if err := s.Keep(ctx, "c1", g.Token, ttl, 3); err != nil {
				t.Fatal(err)
			}
			if err := s.Release(ctx, "c1", g.Token, 4); err != nil {
				t.Fatal(err)
			}
			if d := doneOf(t, s, "c1"); d != 4 {
				t.Fatalf("done %d under a lease of the new generation, want 4", d)
			}
			// A release of the older generation arriving late changes nothing.
			if err := s.Release(ctx, "c1", old.Token, 99); !errors.Is(err, lease.ErrLost) {
				t.Fatalf("late release: got %v, want ErrLost", err)
			}
		}},
		{"welcome waits for the lease and never lags what it recorded", func(t *testing.T, s lease.Store) {
			s1, _ := s.Open(ctx, "c1", true)
			g, _ := s.Acquire(ctx, "c1", "p", ttl, s1)
			if err := s.Keep(ctx, "c1", g.Token, ttl, 10); err != nil {
				t.Fatal(err)
			}
			// The device reconnects at once, its old session's lease held.
			s2, err := s.Open(ctx, "c1", true)
			if err != nil || s2.Gen != s1.Gen {
				t.Fatalf("open %+v (%v): want generation %d kept", s2, err, s1.Gen)
			}
			if _, _, err := s.Welcome(ctx, "c1", s2); !errors.Is(err, lease.ErrHeld) {
				t.Fatalf("welcome while the old lease is held: got %v, want ErrHeld", err)
			}
			// The old batch ends: done recorded, the lease let go.
			if err := s.Keep(ctx, "c1", g.Token, ttl, 20); !errors.Is(err, lease.ErrSuperseded) {
				t.Fatalf("keep of the older session: got %v, want ErrSuperseded", err)
			}
			got, done, err := s.Welcome(ctx, "c1", s2)
			if err != nil || done != 20 || got.Gen <= s1.Gen {
				t.Fatalf("welcome = %+v, %d, %v; want done 20 carried into a generation after %d", got, done, err, s1.Gen)
			}
			if _, _, err := s.Welcome(ctx, "c1", s1); !errors.Is(err, lease.ErrSuperseded) {
				t.Fatalf("welcome of the older session: got %v, want ErrSuperseded", err)
			}
		}},
		{"an expired lease starts a new generation carrying done", func(t *testing.T, s lease.Store) {
			s1, _ := s.Open(ctx, "c1", true)
			g, _ := s.Acquire(ctx, "c1", "p", ttl, s1)
			if err := s.Keep(ctx, "c1", g.Token, ttl, 5); err != nil {
				t.Fatal(err)
			}
			// The holder dies: it may have acknowledged seqs after 5.
			s2, _ := s.Open(ctx, "c1", true)
			var (
				got  lease.Session
				done uint64
				err  error
			)
			// Polling the store until the lock expires, as a socket does.
			wait.For(t, 10*ttl, func() error {
				if got, done, err = s.Welcome(ctx, "c1", s2); errors.Is(err, lease.ErrHeld) {
					return err
				}
				return nil
			})
			if err != nil || got.Gen == s1.Gen || done != 5 {
				t.Fatalf("welcome after expiry = %+v, %d, %v; want a generation other than %d, done 5", got, done, err, s1.Gen)
			}
			g2, err := s.Acquire(ctx, "c1", "p", ttl, got)
			if err != nil || g2.Done != 5 {
				t.Fatalf("grant in the new generation %+v (%v): want done 5 carried", g2, err)
			}
			// After a clean end too, the next session has a generation
			// of its own, with the done record.
			if err := s.Release(ctx, "c1", g2.Token, 6); err != nil {
				t.Fatal(err)
			}
			s3, _ := s.Open(ctx, "c1", true)
			if g3, done, err := s.Welcome(ctx, "c1", s3); err != nil || g3.Gen <= got.Gen || done != 6 {
				t.Fatalf("welcome after a release = %+v, %d, %v; want a generation after %d, done 6", g3, done, err, got.Gen)
			}
		}},
		{"release records done and frees the lock", func(t *testing.T, s lease.Store) {
			g, _ := s.Acquire(ctx, "c1", "p", ttl, lease.Session{})
			if g.Done != 0 {
				t.Fatalf("fresh done %d, want 0", g.Done)
			}
			if err := s.Release(ctx, "c1", g.Token, 42); err != nil {
				t.Fatalf("release: %v", err)
			}
			if d := doneOf(t, s, "c1"); d != 42 {
				t.Fatalf("done = %d; want 42", d)
			}
			g2, err := s.Acquire(ctx, "c1", "p", ttl, lease.Session{})
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
			g, _ := s.Acquire(ctx, "c1", "p", ttl, lease.Session{})
			stale := lease.Token{Fence: g.Token.Fence - 1, Owner: "p"}
			if err := s.Release(ctx, "c1", stale, 99); !errors.Is(err, lease.ErrLost) {
				t.Fatalf("stale release: got %v, want ErrLost", err)
			}
			other := lease.Token{Fence: g.Token.Fence, Owner: "q"}
			if err := s.Release(ctx, "c1", other, 99); !errors.Is(err, lease.ErrLost) {
				t.Fatalf("wrong owner release: got %v, want ErrLost", err)
			}
			if d := doneOf(t, s, "c1"); d != 0 {
				t.Fatalf("done %d after stale releases, want 0", d)
			}
			if st, _ := s.Inspect(ctx, "c1"); !st.Locked || st.Token != g.Token {
				t.Fatalf("lock %+v after stale releases, want still %v", st, g.Token)
			}
		}},
		{"keep records done and extends the same grant", func(t *testing.T, s lease.Store) {
			g, _ := s.Acquire(ctx, "c1", "p", ttl, lease.Session{})
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
				if _, err := s.Acquire(ctx, "c1", "q", ttl, lease.Session{}); !errors.Is(err, lease.ErrHeld) {
					t.Fatalf("acquire while kept: got %v, want ErrHeld", err)
				}
				time.Sleep(ttl / 5) // the batch period under test, not a readiness wait
			}
			stale := lease.Token{Fence: g.Token.Fence, Owner: "q"}
			if err := s.Keep(ctx, "c1", stale, ttl, 999); !errors.Is(err, lease.ErrLost) {
				t.Fatalf("keep with another token: got %v, want ErrLost", err)
			}
			if d := doneOf(t, s, "c1"); d == 999 {
				t.Fatalf("a keep with another token recorded done %d", d)
			}
			// Released after the last keep, the next grant sees its done.
			if err := s.Abandon(ctx, "c1", g.Token); err != nil {
				t.Fatalf("abandon after keep: %v", err)
			}
			want := doneOf(t, s, "c1")
			g2, err := s.Acquire(ctx, "c1", "q", ttl, lease.Session{})
			if err != nil || g2.Done != want || g2.Token.Fence <= g.Token.Fence {
				t.Fatalf("grant after keep and abandon %+v, %v: want done %d, fence > %d", g2, err, want, g.Token.Fence)
			}
			if err := s.Keep(ctx, "c1", g.Token, ttl, 1); !errors.Is(err, lease.ErrLost) {
				t.Fatalf("keep of a released grant: got %v, want ErrLost", err)
			}
		}},
		{"abandon frees the lock and keeps done", func(t *testing.T, s lease.Store) {
			g, _ := s.Acquire(ctx, "c1", "p", ttl, lease.Session{})
			s.Release(ctx, "c1", g.Token, 7)
			g, _ = s.Acquire(ctx, "c1", "p", ttl, lease.Session{})
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
			g, _ := s.Acquire(ctx, "c1", "p", ttl, lease.Session{})
			// Heartbeats keep the lease past its first TTL.
			end := time.Now().Add(2 * ttl)
			var beat time.Time // when the last heartbeat was sent: the TTL runs from there
			for time.Now().Before(end) {
				beat = time.Now()
				if err := s.Heartbeat(ctx, "c1", g.Token, ttl); err != nil {
					t.Fatalf("heartbeat: %v", err)
				}
				if _, err := s.Acquire(ctx, "c1", "q", ttl, lease.Session{}); !errors.Is(err, lease.ErrHeld) {
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
			wait.For(t, 10*ttl, func() error {
				var err error
				if g2, err = s.Acquire(ctx, "c1", "q", ttl, lease.Session{}); err != nil {
					return fmt.Errorf("lease never expired: %w", err)
				}
				return nil
			})
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
			s.Acquire(ctx, "c1", "p", ttl, lease.Session{})
			// The heartbeat may read as older than the TTL a millisecond
			// before the lock itself expires: poll until both say so.
			wait.For(t, 10*ttl, func() error {
				if st, _ = s.Inspect(ctx, "c1"); !st.Stale(ttl) || st.Locked {
					return fmt.Errorf("lock never read as expired: %+v", st)
				}
				return nil
			})
		}},
		{"a session that does not continue starts empty", func(t *testing.T, s lease.Store) {
			s1, _ := s.Open(ctx, "c1", true)
			g, _ := s.Acquire(ctx, "c1", "p", ttl, s1)
			s.Release(ctx, "c1", g.Token, 1000)
			s2, err := s.Open(ctx, "c1", false)
			if err != nil {
				t.Fatalf("open: %v", err)
			}
			if _, done, err := s.Welcome(ctx, "c1", s2); err != nil || done != 0 {
				t.Fatalf("welcome = %d, %v; want 0", done, err)
			}
			if d := doneOf(t, s, "c1"); d != 0 {
				t.Fatalf("done %d after a reset, want 0", d)
			}
		}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			tt.run(t, newStore(t))
		})
	}
}

// doneOf reads id's done record.
func doneOf(t *testing.T, s lease.Store, id string) uint64 {
	t.Helper()
	d, err := s.(interface {
		Done(context.Context, string) (uint64, error)
	}).Done(context.Background(), id)
	if err != nil {
		t.Fatalf("done: %v", err)
	}
	return d
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
