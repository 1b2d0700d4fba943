package socket

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

// makeRunnableLocked puts c in the run queue if it has messages to hand out
// and nothing handed out.
func (s *Server) makeRunnableLocked(c *controller) {
	if c.state != stIdle || len(c.q) == 0 || s.stopping.Load() {
		s.forgetIfIdleLocked(c)
		return
	}
	c.queued()
	s.mu.Lock()
	s.runq.push(c)
	s.runqLen.Store(int32(s.runq.len()))
	s.runCond.Signal()
	s.mu.Unlock()
}

// signalRun wakes a dispatcher: a controller or a worker may be free. A
// dispatcher checks under Server.mu before it waits, so the signal is sent
// under it too.
func (s *Server) signalRun() {
	s.mu.Lock()
	s.runCond.Signal()
	s.mu.Unlock()
}
