package socket

import (
	"sync"
	"sync/atomic"
	"time"

	"github.com/edgegate/edgegate/lease"
)

// msgOverhead is the memory accounted per queued message beyond its payload.
const msgOverhead = 64

// msg is a message received from a device and not yet acknowledged.
type msg struct {
	seq     uint64
	payload []byte
	recv    time.Time
	sess    *session // the session it arrived on; its ACK goes there
}

func (m *msg) size() int64 { return int64(len(m.payload)) + msgOverhead }

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
// its queue (q[:n] is handed out to a parser) and its dispatch state. All
// fields are guarded by its shard's lock (sh.mu).
type controller struct {
	id    string
	sh    *shard
	sess  *session
	q     []*msg
	n     int // q[:n] is dispatching, assigned or running
	slots int // messages queued or reserved by a reader
	state state
	space *sync.Cond // the session's reader waits here for a queue slot

	// The batch handed out.
	tok       lease.Token
	grantDone uint64
	pool      *pool
	sentAt    time.Time
	released  time.Time // the check loop saw the lease released without the outcome
	granted   bool      // a lease of this controller was granted to this socket before
	leaseSess *session  // the session the batch out, or the held lease, was taken for
	// held: pool kept the lease after the last batch (coord.Outcome.Kept)
	// and no batch is out; the next one goes under tok without an acquire
	// (see Server.holdEnds).
	held bool
	// holdUntil is when the held lease expires at the soonest: a Hold after
	// the last batch was sent, or earlier when its pool said so
	// (coord.Outcome.Until, then unrecorded: its done seq is recorded when
	// the lease is released).
	holdUntil  time.Time
	unrecorded bool
	lastEnd    time.Time // when the last batch's outcome arrived
	// resets counts the sessions that reset the seqs; sentResets is its
	// value when the batch out was taken from the queue. The lease of a
	// batch taken before a reset is not kept for the next one.
	resets, sentResets int
	// unseen is set while its pool has not answered the assignment it was
	// picked for: -1 from the pick, then the unix nanoseconds it was sent
	// at (startLocked). Written under the shard lock; the sender of a
	// batch clears it without the lock when the pool of this process took
	// it.
	unseen  atomic.Int64
	watched bool // its lock deletions wake this socket (while waiting)
}

// holdEnds is when c's held lease is too old to send under: two margins
// before it expires are left for the next batch to arrive and start
// without confirmation.
func (s *Server) holdEnds(c *controller) time.Time {
	return c.holdUntil.Add(-s.cfg.TTL / 5)
}

// inFlight reports whether a parser may be running the controller's batch.
func (c *controller) inFlight() bool { return c.state == stAssigned || c.state == stRunning }

// fifo is the run queue of controllers waiting for a dispatcher.
type fifo struct {
	buf        []*controller
	head, size int
}

func (f *fifo) push(c *controller) {
	f.grow()
	f.buf[(f.head+f.size)%len(f.buf)] = c
	f.size++
}

// pushFront puts c back at the head.
func (f *fifo) pushFront(c *controller) {
	f.grow()
	f.head = (f.head - 1 + len(f.buf)) % len(f.buf)
	f.buf[f.head] = c
	f.size++
}

// grow makes room for one more.
func (f *fifo) grow() {
	if f.size < len(f.buf) {
		return
	}
	nb := make([]*controller, max(16, 2*len(f.buf)))
	for i := 0; i < f.size; i++ {
		nb[i] = f.buf[(f.head+i)%len(f.buf)]
	}
	f.buf, f.head = nb, 0
}

func (f *fifo) pop() *controller {
	c := f.buf[f.head]
	f.buf[f.head] = nil
	f.head = (f.head + 1) % len(f.buf)
	f.size--
	return c
}

func (f *fifo) len() int { return f.size }

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

// makeRunnableLocked puts c in the run queue if it has messages to hand out
// and nothing handed out.
func (s *Server) makeRunnableLocked(c *controller) {
	if c.state != stIdle || len(c.q) == 0 || s.stopping.Load() {
		s.forgetIfIdleLocked(c)
		return
	}
	c.state = stRunnable
	s.mu.Lock()
	s.runq.push(c)
	s.runqLen.Store(int32(s.runq.len()))
	s.runCond.Signal()
	s.mu.Unlock()
}

// forgetIfIdleLocked drops c from the table when nothing refers to it.
func (s *Server) forgetIfIdleLocked(c *controller) {
	if c.state == stIdle && !c.held && c.sess == nil && len(c.q) == 0 && c.slots == 0 {
		delete(c.sh.ctrls, c.id)
	}
}

// signalRun wakes a dispatcher: a controller or a worker may be free. A
// dispatcher checks under Server.mu before it waits, so the signal is sent
// under it too.
func (s *Server) signalRun() {
	s.mu.Lock()
	s.runCond.Signal()
	s.mu.Unlock()
}

// endFlight counts a batch that is no longer in flight, waking the drain
// at the last.
func (s *Server) endFlight() {
	if s.inflight.Add(-1) == 0 && s.stopping.Load() {
		s.mu.Lock()
		s.idle.Broadcast()
		s.mu.Unlock()
	}
}

// isPaused reports whether dispatch is paused at now (see pause).
func (s *Server) isPaused(now time.Time) bool { return now.UnixNano() < s.paused.Load() }

// keepQueue is the largest backing array an emptied queue keeps: a busy
// controller's queue empties after every batch at moderate load, and
// regrowing it from nothing would cost several allocations per batch.
const keepQueue = 64

// popLocked removes the first k messages of c's queue, moving the rest to
// the front of its backing array.
func (s *Server) popLocked(c *controller, k int) {
	for i := 0; i < k; i++ {
		s.unreserveLocked(c, c.q[i].size())
	}
	n := copy(c.q, c.q[k:])
	clear(c.q[n:])
	c.q = c.q[:n]
	if n == 0 && cap(c.q) > keepQueue {
		c.q = nil // let a large backing array go
	}
}

// pruneLocked drops messages that will never be acknowledged: those of a
// closed session beyond the handed-out prefix (the device resends them to
// its new session). With NoAck nothing is dropped: nobody would resend.
func (s *Server) pruneLocked(c *controller) {
	if s.cfg.NoAck {
		return
	}
	keep := c.q[:c.n]
	for _, m := range c.q[c.n:] {
		if m.sess.closed {
			s.unreserveLocked(c, m.size())
			s.stats.dropped.Add(1)
			continue
		}
		keep = append(keep, m)
	}
	for i := len(keep); i < len(c.q); i++ {
		c.q[i] = nil
	}
	c.q = keep
}

// reserveLocked waits until c has a free queue slot and size bytes of
// memory are free, then reserves them. ok is false when the session
// closed meanwhile; waited tells whether it had to wait. The caller holds
// the shard lock, which a wait for memory gives up meanwhile.
func (s *Server) reserveLocked(sess *session, size int64) (ok, waited bool) {
	c := sess.ctrl
	for !sess.closed {
		full := c.slots >= s.cfg.Queue
		if !full && s.takeMemory(size) {
			c.slots++
			return true, waited
		}
		if sess.pending > 0 {
			// What the reader queued must go out before it waits for space.
			sess.pending = 0
			s.makeRunnableLocked(c)
		}
		waited = true
		if full {
			c.space.Wait()
		} else {
			s.waitMemory(sess, size)
		}
	}
	return false, waited
}

// takeMemory reserves size bytes of the global memory limit, if they are
// free (or nothing is queued: one message always fits).
func (s *Server) takeMemory(size int64) bool {
	for {
		m := s.mem.Load()
		if m > 0 && m+size > s.cfg.Memory {
			return false
		}
		if s.mem.CompareAndSwap(m, m+size) {
			return true
		}
	}
}

// waitMemory waits, without sess's shard lock, until memory was freed or
// sess closed (or a moment that looks like it).
func (s *Server) waitMemory(sess *session, size int64) {
	sh := sess.sh
	sh.mu.Unlock()
	s.mu.Lock()
	s.memWait.Add(1)
	// Dekker with unreserveLocked: it lowers mem, then looks at memWait.
	if m := s.mem.Load(); !sess.gone && m > 0 && m+size > s.cfg.Memory {
		s.memCond.Wait()
	}
	s.memWait.Add(-1)
	s.mu.Unlock()
	sh.mu.Lock()
}

// unreserveLocked gives back a queue slot and size bytes of memory.
func (s *Server) unreserveLocked(c *controller, size int64) {
	c.slots--
	s.mem.Add(-size)
	c.space.Broadcast() // the reader, or a session lingering after a half-close

	if s.memWait.Load() > 0 {
		s.mu.Lock()
		s.memCond.Broadcast()
		s.mu.Unlock()
	}
}

// unrecordedMargin is how much earlier than holdEnds the check loop
// releases c's held lease: a check interval when the lease's done seq is
// not recorded yet (see controller.unrecorded), else nothing.
func (s *Server) unrecordedMargin(c *controller) time.Duration {
	if c.unrecorded {
		return s.cfg.CheckInterval
	}
	return 0
}

// burst hands out the bodies and msg records of the DATA frames a reader
// has buffered together from shared allocations: one of each per read
// instead of one of each per message. Each chunk is sized to what is
// buffered, and the reader drops both when its buffer runs dry (end), so
// an idle connection pins none; a chunk lives on until the last message
// in it is acknowledged, which in a controller's ordered queue comes soon
// after the first.
type burst struct {
	buf  []byte
	msgs []msg
}

// maxBurstMsgs bounds one chunk of msg records.
const maxBurstMsgs = 64

// body returns n bytes for a frame body, with buffered bytes (this body
// and what follows it) in the reader's buffer.
func (b *burst) body(n, buffered int) []byte {
	if n > cap(b.buf)-len(b.buf) {
		b.buf = make([]byte, 0, max(n, buffered))
	}
	i := len(b.buf)
	b.buf = b.buf[:i+n]
	return b.buf[i : i+n : i+n]
}

// msg returns a record for a message, with about frames more frames
// (this one included) in the reader's buffer.
func (b *burst) msg(frames int) *msg {
	if len(b.msgs) == 0 {
		b.msgs = make([]msg, min(max(frames, 1), maxBurstMsgs))
	}
	m := &b.msgs[0]
	b.msgs = b.msgs[1:]
	return m
}

// end drops the chunks: the reader's buffer is empty.
func (b *burst) end() { b.buf, b.msgs = nil, nil }
