package socket

import (
	"time"
)

// writeTimeout bounds one write to a device.
const writeTimeout = 30 * time.Second

// writeBacklog is how many bytes may wait to be written to a device
// (ACKs, PONGs, ERRORs) before its reader stops reading: a device that
// does not take what it is sent then holds at most this and one answer
// (a PONG of up to max_frame), and TCP backpressure holds it back.
const writeBacklog = 64 << 10

// write appends to the session's output and wakes its writer.
func (sess *session) write(f func([]byte) []byte) {
	sess.wmu.Lock()
	if sess.wclose {
		sess.wmu.Unlock()
		return
	}
	sess.wbuf = f(sess.wbuf)
	sess.unlockAndWrite()
}

// unlockAndWrite releases wmu, held by the caller after appending to wbuf
// or setting wclose, and starts a writer unless one runs.
func (sess *session) unlockAndWrite() {
	if n := len(sess.wbuf) - sess.wcounted; n != 0 {
		sess.wcounted = len(sess.wbuf)
		sess.account(n)
	}
	start := !sess.writing
	sess.writing = true
	sess.wmu.Unlock()
	if start {
		go sess.writeLoop()
	}
}

// writeLoop writes what accumulated in wbuf, one write per round, until
// wbuf is empty; then it exits, so that an idle session has no writer
// goroutine (unlockAndWrite starts one again). Once wclose is set and everything
// is written, it closes the connection and stays the last writer.
func (sess *session) writeLoop() {
	for {
		sess.wmu.Lock()
		buf := sess.wbuf
		sess.wbuf, sess.spare = sess.spare[:0], nil
		sess.wcounted = 0 // buf stays counted until it is written
		closing := sess.wclose
		if len(buf) == 0 {
			if !closing {
				sess.writing = false // idle: no goroutine, no buffers kept
				sess.wbuf = nil
				sess.wmu.Unlock()
				return
			}
			sess.wmu.Unlock()
			sess.conn.Close()
			close(sess.written)
			return
		}
		sess.wmu.Unlock()
		// A device that does not read its ACKs for writeTimeout is
		// dropped: its unread ACKs would pile up here.
		deadline := time.Now().Add(writeTimeout)
		if closing {
			deadline = time.Now().Add(time.Second)
		}
		sess.conn.SetWriteDeadline(deadline)
		if _, err := sess.conn.Write(buf); err != nil {
			sess.s.closeSession(sess, 0, "")
			sess.wmu.Lock()
			sess.account(-len(buf) - sess.wcounted)
			sess.wbuf, sess.wcounted = nil, 0 // nothing more can be written
			sess.wmu.Unlock()
			continue // closing now: the next round closes
		}
		sess.wmu.Lock()
		sess.account(-len(buf))
		if cap(buf) <= 64<<10 {
			sess.spare = buf[:0]
		}
		sess.wmu.Unlock()
	}
}

// account adds n bytes (negative: written or dropped) to what is queued
// for writing to the device; wmu held.
func (sess *session) account(n int) {
	sess.wqueued += n
	sess.s.wqueued.Add(int64(n))
	over := sess.wqueued > writeBacklog
	if over != sess.wover.Load() {
		sess.wover.Store(over)
	}
	if !over && sess.drained != nil {
		close(sess.drained)
		sess.drained = nil
	}
}

// waitWritten waits, for the reader, while more than writeBacklog bytes
// are queued for the device. The writer takes them off as the device
// reads them, or drops them when a write fails (a device that reads
// nothing for writeTimeout), so the wait ends either way.
func (sess *session) waitWritten() {
	sess.wmu.Lock()
	if sess.wqueued <= writeBacklog {
		sess.wmu.Unlock()
		return
	}
	if sess.drained == nil {
		sess.drained = make(chan struct{})
	}
	ch := sess.drained
	sess.wmu.Unlock()
	sess.s.stats.writeWaits.Add(1)
	<-ch
}
