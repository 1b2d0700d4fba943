package socket

import (
	"fmt"
	"math"
	"net"
	"time"

	"github.com/edgegate/edgegate/egp"
)

// readFrames reads DATA, PING and PONG frames until an error, or with
// lean until r has nothing buffered (errWait).
//
// The DATA frames of one read are queued without letting go of the shard
// lock, and their controller offered for dispatch once (flush): when
// nothing more is buffered, before anything that could block on the
// connection, and after a batch's worth.
func (sess *session) readFrames(r *egp.Reader, lean bool) error {
	s := sess.s
	var b burst
	// The clock is read once per read from the connection, not per
	// message: the messages of one read were received together. recv is
	// stale when the frame needed a read, or waited for queue space.
	var recv time.Time
	defer sess.flush()
	// Idleness is judged by the idle loop (idleLoop), not by read
	// deadlines: a deadline per frame costs a timer update and two clock
	// reads per message.
	for {
		if lean && r.Buffered() == 0 {
			return errWait
		}
		if sess.wover.Load() {
			// Nothing more is read before the device takes what it
			// was sent (PONGs of its PINGs, its ACKs).
			sess.flush()
			sess.waitWritten()
			recv = time.Time{} // what is buffered was received before the wait
		}
		stale := r.Buffered() < egp.HeaderSize
		if stale {
			sess.flush() // Next reads from the connection
		}
		h, err := r.Next()
		if err != nil {
			return err
		}
		if h.Type != egp.TypeData {
			sess.flush() // rare frames are read and answered unlocked
		}
		switch h.Type {
		case egp.TypeData:
			if h.Len < 8 {
				return &egp.Error{Code: egp.CodeProtocol, Reason: "DATA body shorter than its seq"}
			}
			size := int64(h.Len-8) + msgOverhead
			buffered := r.Buffered()
			var body []byte
			if buffered < int(h.Len) {
				// The body is still to come (a large frame, a slow
				// link), or never will: it is read before it takes its
				// queue slot and share of devices.memory, so that a
				// device that sends headers alone holds back nobody
				// else. Meanwhile it counts against bodies in transit.
				sess.flush() // BodyInto reads from the connection
				if !s.reserveTransit(sess, size) {
					return net.ErrClosed
				}
				body = b.body(int(h.Len), buffered)
				err := r.BodyInto(body)
				if err == nil {
					recv = time.Now()
					if ok, waited := sess.reserve(size); !ok {
						err = net.ErrClosed
					} else if waited {
						recv = time.Now()
					}
				}
				s.give(&s.transit, size)
				if err != nil {
					return err
				}
				sess.heard.Store(true)
			} else {
				ok, waited := sess.reserve(size)
				stale = stale || waited
				if !ok {
					return net.ErrClosed
				}
				sess.heard.Store(true) // the wait for queue space does not count
				body = b.body(int(h.Len), buffered)
				if err := r.BodyInto(body); err != nil {
					s.unreserveLocked(sess.ctrl, size)
					return err
				}
				if stale || recv.IsZero() {
					recv = time.Now()
				}
			}
			seq, payload, _ := egp.ParseData(body)
			if err := sess.follows(seq); err != nil {
				sess.lock()
				s.unreserveLocked(sess.ctrl, size)
				return err
			}
			sess.lock()
			sess.receiveLocked(b.msg(buffered/(egp.HeaderSize+int(h.Len))+1), seq, payload, size, recv)
			sess.heard.Store(true)
			if r.Buffered() == 0 {
				b.end()
			}
			if sess.pending >= s.cfg.Batch {
				sess.flush()
			}
		case egp.TypePing:
			b, err := r.Scratch(h)
			if err != nil {
				return err
			}
			sess.write(func(w []byte) []byte { return egp.AppendPong(w, b) })
			sess.heard.Store(true)
		case egp.TypePong:
			if _, err := r.Scratch(h); err != nil {
				return err
			}
			sess.heard.Store(true)
		default:
			return &egp.Error{Code: egp.CodeProtocol, Reason: h.Type.String() + " is not expected from a device after HELLO"}
		}
	}
}

// seqAhead is how far beyond the WELCOME's last_seq a persistent-seq
// session of a controller with a done record may start. It is not
// last_seq + 1, where such a device resends from: the record may trail
// the ACKs the device had (a deferred keep, a release the lease store
// failed), with ack mode none what it sent, and a lease store that lost
// or rolled back its records (the in-process one forgets them at a
// restart) may be far behind. Far enough to never refuse those, it still
// keeps a seq near 2^64 (a corrupt counter; a rogue where devices.auth is
// open) off the done record, where every later message of the device
// would be taken for a duplicate.
const seqAhead = 1 << 32

// follows checks a DATA's seq (reader goroutine only): the first of a
// session is at least 1 and, for a persistent-seq device whose
// controller has a done record, at most seqAhead past it; every later
// one is the previous + 1; none is 2^64-1, after which the next would
// wrap to 0.
func (sess *session) follows(seq uint64) error {
	var why string
	switch {
	case seq == math.MaxUint64:
		why = "DATA seq 2^64-1: no seq can follow it"
	case sess.lastSeq != 0:
		if seq != sess.lastSeq+1 {
			why = fmt.Sprintf("DATA seq %d after %d: the seqs of a session follow each other", seq, sess.lastSeq)
		}
	case seq == 0:
		why = "DATA seq 0: seqs start at 1"
	case sess.persistent && sess.welcomed > 0 && seq > sess.welcomed && seq-sess.welcomed > seqAhead:
		why = fmt.Sprintf("DATA seq %d: a persistent-seq session starts at most %d past last_seq %d", seq, uint64(seqAhead), sess.welcomed)
	}
	if why != "" {
		return &egp.Error{Code: egp.CodeProtocol, Reason: why}
	}
	return nil
}

// readLines reads one message per line, its seq the line number, until
// an error, or with lean until r has nothing buffered (errWait).
func (sess *session) readLines(r *egp.LineReader, lean bool) error {
	s := sess.s
	defer sess.flush()
	for {
		if lean && r.Buffered() == 0 {
			return errWait
		}
		if sess.wover.Load() {
			sess.waitWritten() // no lock held: every line is flushed
		}
		line, err := r.ReadLine()
		if err != nil {
			return err
		}
		size := int64(len(line)) + msgOverhead
		sess.lock()
		if ok, _ := s.reserveLocked(sess, size); !ok {
			return net.ErrClosed
		}
		sess.line++ // a line's seq is its number in the connection
		sess.receiveLocked(new(msg), sess.line, line, size, time.Now())
		sess.flush()
	}
}

// receiveLocked queues a message whose slot is reserved, in m, received
// at recv; the reader's next flush offers its controller for dispatch.
func (sess *session) receiveLocked(m *msg, seq uint64, payload []byte, size int64, recv time.Time) {
	s := sess.s
	s.stats.received.Add(1)
	c := sess.ctrl
	sess.lastSeq = seq // follows checked it
	if sess.closed {
		s.unreserveLocked(c, size)
		return
	}
	*m = msg{seq: seq, payload: payload, recv: recv, sess: sess}
	c.q = append(c.q, m)
	sess.pending++
}

// reserve takes the shard lock, and with it reserves the queue slot and
// memory of a message of size bytes (reserveLocked); the idle loop meanwhile
// counts the session as waiting, not idle.
func (sess *session) reserve(size int64) (ok, waited bool) {
	sess.lock()
	sess.waiting = true
	ok, waited = sess.s.reserveLocked(sess, size)
	sess.waiting = false
	return ok, waited
}

// lock takes the shard lock for the reader, unless it holds it.
func (sess *session) lock() {
	if !sess.locked {
		sess.sh.mu.Lock()
		sess.locked = true
	}
}

// flush offers the controller of the messages the reader queued since the
// last flush for dispatch, and lets go of the shard lock if the reader
// has it. A lease kept by the pool of this process takes the next batch
// from here when no other controller waits (takeKeptInlineLocked): the
// reader hands it out itself instead of waking a dispatcher, as the
// outcome of a batch does.
func (sess *session) flush() {
	s := sess.s
	var next keptBatch
	ok := false
	if sess.pending > 0 {
		sess.pending = 0
		sess.lock()
		if c := sess.ctrl; !sess.closed && c.state == stIdle {
			if next, ok = s.takeKeptInlineLocked(c); !ok {
				s.makeRunnableLocked(c)
			}
		}
	}
	if sess.locked {
		sess.locked = false
		sess.sh.mu.Unlock()
	}
	if ok {
		s.sendKept(next)
	}
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
