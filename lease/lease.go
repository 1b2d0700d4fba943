// Package lease holds per-controller leases: a lock with a fencing token,
// kept alive by heartbeats, and the controller's done record. Store has two
// implementations with the same semantics: Memory (one appliance) and Redis.
package lease

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"time"
)

// ErrHeld is returned by Acquire when another holder has the lock.
var ErrHeld = errors.New("lease: held by another holder")

// ErrLost is returned by Heartbeat and Release when the lock is gone or
// belongs to another token: the caller's work is fenced.
var ErrLost = errors.New("lease: lost")

// ErrSuperseded is returned by Acquire and Welcome when a newer device
// session of the controller was opened (anywhere in the cluster): the
// older session is taken over and may not dispatch any more. Keep returns
// it after recording done and releasing the lock: the batch is final, but
// the lease cannot carry the older session's next batch.
var ErrSuperseded = errors.New("lease: a newer session of the controller exists")

// Session identifies one device session of a controller in the store
// (Open). No grows with every session: a lease can only be acquired for
// the newest one, so a takeover holds even when its announcement to the
// older session's socket is lost. Gen is the seq generation: it changes
// when the seqs start again (a reset, a device without persistent seqs) or
// when the done record may lag what was acknowledged; done records and
// output message IDs belong to one generation, so that a seq of an older
// generation can neither move the done record of a newer one nor
// deduplicate its output.
type Session struct {
	No  uint64
	Gen uint64
}

// Token identifies one grant of a controller's lock. Fence increases with
// every grant of the same controller, so a consumer can reject output of an
// older grant.
type Token struct {
	Fence uint64
	Owner string // the parser pool the lease was granted for
}

// String returns the lock value, "<fence>:<owner>".
func (t Token) String() string { return strconv.FormatUint(t.Fence, 10) + ":" + t.Owner }

// ParseToken parses a lock value written by Token.String.
func ParseToken(s string) (Token, error) {
	f, owner, ok := strings.Cut(s, ":")
	if !ok {
		return Token{}, fmt.Errorf("lease: bad lock value %q", s)
	}
	n, err := strconv.ParseUint(f, 10, 64)
	if err != nil {
		return Token{}, fmt.Errorf("lease: bad fence in lock value %q", s)
	}
	return Token{Fence: n, Owner: owner}, nil
}

// Grant is the result of a successful Acquire.
type Grant struct {
	Token Token
	// Done is the controller's done record at the time of the grant: the last
	// seq handled, 0 if none. Nobody else can change it while the lease is held.
	Done uint64
	// Fresh is true when this grant created the controller's fence counter:
	// no earlier grant is recorded (a new controller, or a store that lost
	// its data). A fresh counter starts at the store's clock in unix
	// milliseconds times 1000, so fences keep increasing across data loss.
	Fresh bool
	// Epoch, on a fresh grant, is the store's epoch (see the Epoch
	// interface) read with the grant, atomically, when the store can; empty
	// when it cannot (Redis Cluster, whose epoch is every master's) or the
	// grant is not fresh.
	Epoch string
	// EpochStart is when, on the caller's clock and estimated late, the
	// store's current epoch began (a restart, a failover, a rollback to
	// older data): leases granted before it may be lost while their
	// holders still run, until a TTL after it. Zero when the store cannot
	// lose leases that way (in-process).
	EpochStart time.Time
}

// freshFence is the first fence of a new counter (see Grant.Fresh).
func freshFence(now time.Time) uint64 { return uint64(now.UnixMilli()) * 1000 }

// State is what Inspect reads of a controller, for failure detection and
// status.
type State struct {
	Locked    bool
	Token     Token     // valid when Locked
	Heartbeat time.Time // the last heartbeat (or the grant); zero if none
	Now       time.Time // the store's clock when it was read
	Done      uint64
	// Released is the fence of the last grant released with Release (not
	// Abandon), 0 if none: with the lock gone it tells a batch that finished
	// (its outcome is on its way) from a holder that died.
	Released uint64
}

// Stale reports whether the holder must be taken as dead: the lock is gone
// or its last heartbeat is older than ttl by the store's clock.
func (s State) Stale(ttl time.Duration) bool {
	return !s.Locked || s.Heartbeat.IsZero() || s.Now.Sub(s.Heartbeat) > ttl
}

// Store keeps the leases. Every method is atomic. An error other than ErrHeld
// and ErrLost means the outcome is unknown: callers never take it as "the
// holder died".
type Store interface {
	// Acquire grants the lock of controller id to owner for ttl, for a
	// batch of session sess, if nobody holds it: the fence grows and the
	// heartbeat is recorded. ErrSuperseded when a newer session exists.
	// Fences grow strictly across restarts, failovers and rollbacks of the
	// store: a grant's fence is above every fence granted in an earlier
	// epoch.
	Acquire(ctx context.Context, id, owner string, ttl time.Duration, sess Session) (Grant, error)
	// Heartbeat extends the lock held by tok for ttl and records a heartbeat.
	Heartbeat(ctx context.Context, id string, tok Token, ttl time.Duration) error
	// Keep records done as the last seq handled and sets the lock held by
	// tok to expire ttl from now, with a heartbeat: a batch finished, and
	// the holder keeps the lease for the controller's next batch. When a
	// newer session was opened since the grant, it records done, releases
	// the lock and returns ErrSuperseded.
	Keep(ctx context.Context, id string, tok Token, ttl time.Duration, done uint64) error
	// Release deletes the lock held by tok and records done as the last seq
	// handled.
	Release(ctx context.Context, id string, tok Token, done uint64) error
	// Abandon deletes the lock held by tok and leaves the done record as it
	// is (a batch handed back before any message was handled).
	Abandon(ctx context.Context, id string, tok Token) error
	// Inspect reads the lock, the last heartbeat and the done record.
	Inspect(ctx context.Context, id string) (State, error)
	// Open starts a device session of controller id. continues tells
	// whether its seqs continue the controller's (a persistent-seq device
	// that did not reset): then it keeps the generation, else it starts a
	// new one with an empty done record. Older sessions can no longer
	// acquire (ErrSuperseded), and their kept leases are released at their
	// next Keep.
	Open(ctx context.Context, id string, continues bool) (Session, error)
	// Welcome returns the done record of sess's generation for the
	// session's WELCOME, once no lease of id is held (ErrHeld while one
	// is), and moves the session to a new generation with the record
	// carried over. The record may lag what was stored under the old one
	// (the last lease expired without recording done, or the store lost
	// writes): a device that numbers on from it must not reuse those
	// messages' IDs. It returns the session with its new generation, or
	// ErrSuperseded when a newer session was opened meanwhile.
	Welcome(ctx context.Context, id string, sess Session) (Session, uint64, error)
}

// Notifier is implemented by stores that can wake a socket early when a
// lease is released or expires. It is an optimisation only: the check loop
// finds the same on its own, so a lost notification costs only time.
type Notifier interface {
	// Notify starts delivering wake-ups: wake(id) is called when id's lock
	// expires, and when it is deleted while id is watched (Subscription.Add),
	// or is found gone when the watch takes effect.
	// It returns an error when notifications are not available.
	Notify(ctx context.Context, wake func(id string)) (Subscription, error)
}

// Subscription selects the controllers whose lock deletions wake.
type Subscription interface {
	Add(id string)
	Remove(id string)
	Close() error
}

// Epoch is implemented by stores whose data can be lost as a whole (a Redis
// restart): the epoch changes then, and every lease must be taken as lost.
type Epoch interface {
	Epoch(ctx context.Context) (string, error)
}
