package socket

import (
	"fmt"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/edgegate/edgegate/lease"
)

// state is where a controller is in the dispatch cycle.
type state uint8

const (
	stIdle        state = iota // nothing handed out; not in the run queue
	stRunnable                 // in the run queue
	stDispatching              // a batch is taken: its lease is being acquired, or it is being sent
	stAssigned                 // sent over NATS, not answered yet
	stRunning                  // accepted by a parser pool
	stAbandoning               // handed back (busy, no responders): its lease is being abandoned
	stWaiting                  // the lease is held elsewhere, or the store failed; retried by the check loop
)

var stateNames = [...]string{"idle", "runnable", "dispatching", "assigned", "running", "abandoning", "waiting"}

func (s state) String() string { return stateNames[s] }

// event is what moves a controller from one state to another: one row of
// transitions.
type event uint8

const (
	evQueued event = iota
	evEmptied
	evTaken
	evSent
	evStarted
	evAccepted
	evHandedBack
	evNotSent
	evLeaseUnavailable
	evAbandoned
	evEnded
	evRetry
)

// states is a set of states.
type states uint8

func in(ss ...state) states {
	var set states
	for _, s := range ss {
		set |= 1 << s
	}
	return set
}

type transition struct {
	from states
	to   state
	name string
}

// transitions is the controller's state machine, one row per event: the
// states it may come in (from), the state it leads to, and what it is.
// Every change of controller.state is one of these rows, made by the
// method named after its event (below), which checks the row. A socket
// has at most one batch of a controller out (dispatching to abandoning);
// across sockets the lease sees to the same.
var transitions = [...]transition{
	evQueued:           {in(stIdle), stRunnable, "messages queued, nothing out"},
	evEmptied:          {in(stRunnable), stIdle, "nothing left to send (its session closed)"},
	evTaken:            {in(stRunnable, stIdle), stDispatching, "a batch taken for a pool (from idle: under the lease its pool kept)"},
	evSent:             {in(stDispatching), stAssigned, "sent over NATS"},
	evStarted:          {in(stDispatching), stRunning, "offered to the pool of this process"},
	evAccepted:         {in(stAssigned), stRunning, "accepted"},
	evHandedBack:       {in(stAssigned, stRunning), stAbandoning, "busy, no responders, or the send failed"},
	evNotSent:          {in(stDispatching), stIdle, "not sent: a newer session, a pause"},
	evLeaseUnavailable: {in(stDispatching, stAbandoning), stWaiting, "lease held elsewhere, a store error, lost data; or the abandon failed"},
	evAbandoned:        {in(stAbandoning, stDispatching), stIdle, "lease abandoned: nobody worked under it (from dispatching: every message a duplicate)"},
	evEnded:            {in(stAssigned, stRunning), stIdle, "outcome, or its parser presumed dead"},
	evRetry:            {in(stWaiting), stIdle, "the lease may be free: a check round, a store notification"},
}

func (c *controller) queued()           { c.move(evQueued) }
func (c *controller) emptied()          { c.move(evEmptied) }
func (c *controller) taken()            { c.move(evTaken) }
func (c *controller) sent()             { c.move(evSent) }
func (c *controller) started()          { c.move(evStarted) }
func (c *controller) accepted()         { c.move(evAccepted) }
func (c *controller) handedBack()       { c.move(evHandedBack) }
func (c *controller) notSent()          { c.move(evNotSent) }
func (c *controller) leaseUnavailable() { c.move(evLeaseUnavailable) }
func (c *controller) abandoned()        { c.move(evAbandoned) }
func (c *controller) ended()            { c.move(evEnded) }
func (c *controller) retry()            { c.move(evRetry) }

// move makes ev's transition, under the shard lock. Back to idle or
// waiting, the batch no longer holds the head of the queue (batchLen 0).
//
// A controller in none of ev's from states is a bug of this package. In a
// test binary it panics, so that the test that got there fails where it
// happened. A running appliance logs it and moves anyway: the lease and
// its fence, not this state, keep two parsers off one controller, and a
// controller left in a state its caller does not expect would never be
// dispatched again, its device unacknowledged until it reconnects.
func (c *controller) move(ev event) {
	t := &transitions[ev]
	if t.from&(1<<c.state) == 0 {
		err := fmt.Errorf("socket: controller %s: %s in state %s, which the state machine does not allow", c.id, t.name, c.state)
		if testing.Testing() {
			panic(err)
		}
		c.sh.log.Error(err.Error(), "controller", c.id, "state", c.state.String(), "to", t.to.String())
	}
	c.state = t.to
	if t.to == stIdle || t.to == stWaiting {
		c.batchLen = 0
	}
}

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
		if c.watched {
			// Else every later release of its lock, anywhere in the
			// cluster, would wake this socket for nothing.
			c.watched = false
			s.watch.Remove(c.id)
		}
	}
}
