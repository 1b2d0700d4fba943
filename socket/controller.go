package socket

import (
	"sync"
	"sync/atomic"
	"time"

	"github.com/edgegate/edgegate/lease"
)

// state is where a controller is in the dispatch cycle.
type state uint8

const (
	stIdle        state = iota // nothing handed out; not in the run queue
	stRunnable                 // in the run queue
	stDispatching              // a dispatcher is acquiring the lease
	stAssigned                 // assignment sent, no answer yet
	stRunning                  // accepted by a parser
	stReleasing                // handed back (busy); the lease is being released
	stWaiting                  // the lease is held elsewhere; retried by the check loop
)

var stateNames = [...]string{"idle", "runnable", "dispatching", "assigned", "running", "releasing", "waiting"}

func (s state) String() string { return stateNames[s] }

// controller is the socket's view of one controller: its current session,
// its queue (q[:batchLen] is handed out to a parser) and its dispatch
// state. All fields are guarded by its shard's lock (sh.mu).
type controller struct {
	id       string
	sh       *shard
	sess     *session
	q        []*msg
	batchLen int // q[:batchLen] is the batch out: dispatching, assigned, running or abandoning
	slots    int // messages queued or reserved by a reader
	state    state
	space    *sync.Cond // the session's reader waits here for a queue slot

	// The batch handed out.
	tok         lease.Token
	grantDone   uint64
	pool        *pool
	sentAt      time.Time
	releaseSeen time.Time // the check loop saw the lease released without the outcome
	granted     bool      // a lease of this controller was granted to this socket before
	leaseSess   *session  // the session the batch out, or the kept lease, was taken for
	// kept: pool kept the lease after the last batch (coord.Outcome.Kept)
	// and no batch is out; the next one goes under tok without an acquire
	// (see Server.keptUsableUntil).
	kept bool
	// keptUntil is when the kept lease expires at the soonest: a Hold after
	// the last batch was sent, or earlier when its pool said so
	// (coord.Outcome.Until, then unrecorded: its done seq is recorded when
	// the lease is released).
	keptUntil  time.Time
	unrecorded bool
	lastEnd    time.Time // when the last batch's outcome arrived
	// resets counts the sessions that reset the seqs; sentResets is its
	// value when the batch out was taken from the queue. The lease of a
	// batch taken before a reset is not kept for the next one.
	resets, sentResets int
	// unansweredSince is set while its pool has not answered the batch it
	// was picked for (counted in pool.unanswered): pickedUnsent from the
	// pick, then the unix nanoseconds it was sent at (startLocked); 0
	// once answered. Written under the shard lock; the sender of a batch
	// clears it without the lock when the pool of this process took it.
	unansweredSince atomic.Int64
	watched         bool // its lock deletions wake this socket (while waiting)
}

// pickedUnsent is controller.unansweredSince of a batch picked for a pool
// and not sent yet.
const pickedUnsent = -1

// inFlight reports whether a parser may be running the controller's batch.
func (c *controller) inFlight() bool { return c.state == stAssigned || c.state == stRunning }

// controllerLocked returns id's controller, creating it; sh is id's shard,
// locked.
func (s *Server) controllerLocked(sh *shard, id string) *controller {
	c := sh.ctrls[id]
	if c == nil {
		c = &controller{id: id, sh: sh, space: sync.NewCond(&sh.mu)}
		sh.ctrls[id] = c
	}
	return c
}

// forgetIfIdleLocked drops c from the table when nothing refers to it.
func (s *Server) forgetIfIdleLocked(c *controller) {
	if c.state == stIdle && !c.kept && c.sess == nil && len(c.q) == 0 && c.slots == 0 {
		delete(c.sh.ctrls, c.id)
	}
}
