package socket

import "sync"

// background runs the store calls a socket makes on goroutines of their
// own (a lease given back, a wake-up's check, a kept lease released), so
// that Run can wait for them before it returns: the lease store may be
// closed right after, and a call on it then would leave a lock to expire.
// Once closed it starts nothing: what comes after Run ends (a late answer
// from another appliance, a notification) is dropped, its lock left to
// expire as after a crash.
type background struct {
	mu     sync.Mutex
	closed bool
	wg     sync.WaitGroup
}

// Go runs f on a goroutine of its own, unless the socket stopped.
func (b *background) Go(f func()) {
	b.mu.Lock()
	defer b.mu.Unlock()
	if !b.closed {
		b.wg.Go(f)
	}
}

// close starts nothing more and waits for what runs.
func (b *background) close() {
	b.mu.Lock()
	b.closed = true
	b.mu.Unlock()
	b.wg.Wait()
}
