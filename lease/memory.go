package lease

import (
	"context"
	"sync"
	"time"
)

// Memory is the in-process Store of a single appliance. It has the same
// semantics as the Redis scripts: expiry is by the clock, checked on access.
type Memory struct {
	now func() time.Time

	mu sync.Mutex
	m  map[string]*memEntry
}

type memEntry struct {
	fence   uint64
	locked  bool
	tok     Token
	expires time.Time
	hb      time.Time
	done    uint64
	rel     uint64
	sess    uint64 // the newest session (Open)
	gen     uint64 // the current generation
	lock    Session
}

// NewMemory returns an empty in-process store.
func NewMemory() *Memory {
	return &Memory{now: time.Now, m: make(map[string]*memEntry)}
}

// entry returns id's entry with an expired lock cleared. Callers hold mu.
func (s *Memory) entry(id string, now time.Time) *memEntry {
	e := s.m[id]
	if e == nil {
		e = &memEntry{}
		s.m[id] = e
	}
	if e.locked && !now.Before(e.expires) {
		e.locked, e.tok, e.hb = false, Token{}, time.Time{}
	}
	return e
}

// Acquire implements Store.
func (s *Memory) Acquire(_ context.Context, id, owner string, ttl time.Duration, sess Session) (Grant, error) {
	now := s.now()
	s.mu.Lock()
	defer s.mu.Unlock()
	e := s.entry(id, now)
	if e.locked {
		return Grant{}, ErrHeld
	}
	if e.sess > sess.No {
		return Grant{}, ErrSuperseded
	}
	fresh := e.fence == 0
	if fresh {
		// Seeded from the clock, so that the fences of a restarted appliance
		// are above those it issued before.
		e.fence = freshFence(now)
	} else {
		e.fence++
	}
	e.locked, e.tok, e.lock = true, Token{Fence: e.fence, Owner: owner}, sess
	e.expires, e.hb = now.Add(ttl), now
	var done uint64
	if sess.Gen == e.gen {
		done = e.done
	}
	return Grant{Token: e.tok, Done: done, Fresh: fresh}, nil
}

// Heartbeat implements Store.
func (s *Memory) Heartbeat(_ context.Context, id string, tok Token, ttl time.Duration) error {
	return s.extend(id, tok, ttl, nil)
}

// Keep implements Store.
func (s *Memory) Keep(_ context.Context, id string, tok Token, ttl time.Duration, done uint64) error {
	return s.extend(id, tok, ttl, &done)
}

// extend sets tok's lock to expire ttl from now with a heartbeat, and
// records done when given (a keep: released instead when a newer session
// exists).
func (s *Memory) extend(id string, tok Token, ttl time.Duration, done *uint64) error {
	now := s.now()
	s.mu.Lock()
	defer s.mu.Unlock()
	e := s.entry(id, now)
	if !e.locked || e.tok != tok {
		return ErrLost
	}
	if done != nil {
		e.setDone(*done)
		if e.sess > e.lock.No {
			e.unlock(tok.Fence)
			return ErrSuperseded
		}
	}
	e.expires, e.hb = now.Add(ttl), now
	return nil
}

// newGen starts a generation above the last one and at least the clock in
// milliseconds: the output stream outlives this store (an appliance
// restart), and a generation must name none of the records it holds.
func (e *memEntry) newGen(now time.Time) {
	e.gen = max(e.gen+1, uint64(now.UnixMilli()))
}

// setDone records done for the lock's generation, never backwards; a lock
// of an older generation records nothing.
func (e *memEntry) setDone(done uint64) {
	if e.lock.Gen == e.gen && done > e.done {
		e.done = done
	}
}

// unlock ends the grant of fence having recorded what it handled.
func (e *memEntry) unlock(fence uint64) {
	e.locked, e.tok, e.hb = false, Token{}, time.Time{}
	e.rel = fence
}

// Release implements Store.
func (s *Memory) Release(_ context.Context, id string, tok Token, done uint64) error {
	now := s.now()
	s.mu.Lock()
	defer s.mu.Unlock()
	e := s.entry(id, now)
	if !e.locked || e.tok != tok {
		return ErrLost
	}
	e.setDone(done)
	e.unlock(tok.Fence)
	return nil
}

// Abandon implements Store.
func (s *Memory) Abandon(_ context.Context, id string, tok Token) error {
	now := s.now()
	s.mu.Lock()
	defer s.mu.Unlock()
	e := s.entry(id, now)
	if !e.locked || e.tok != tok {
		return ErrLost
	}
	e.locked, e.tok, e.hb = false, Token{}, time.Time{}
	return nil
}

// Inspect implements Store.
func (s *Memory) Inspect(_ context.Context, id string) (State, error) {
	now := s.now()
	s.mu.Lock()
	defer s.mu.Unlock()
	e := s.entry(id, now)
	return State{Locked: e.locked, Token: e.tok, Heartbeat: e.hb, Now: now, Done: e.done, Released: e.rel}, nil
}

// Open implements Store.
func (s *Memory) Open(_ context.Context, id string, continues bool) (Session, error) {
	now := s.now()
	s.mu.Lock()
	defer s.mu.Unlock()
	e := s.entry(id, now)
	e.sess++
	if !continues || e.gen == 0 {
		e.newGen(now)
		e.done = 0
	}
	return Session{No: e.sess, Gen: e.gen}, nil
}

// Welcome implements Store.
func (s *Memory) Welcome(_ context.Context, id string, sess Session) (Session, uint64, error) {
	now := s.now()
	s.mu.Lock()
	defer s.mu.Unlock()
	e := s.entry(id, now)
	if e.locked {
		return sess, 0, ErrHeld
	}
	if e.sess != sess.No || e.gen != sess.Gen {
		return sess, 0, ErrSuperseded
	}
	// A new generation, as in the Redis store: the done record may lag
	// (the last lease expired; its holder may have acknowledged messages
	// it never recorded).
	e.newGen(now)
	return Session{No: e.sess, Gen: e.gen}, e.done, nil
}

// Done reads the done record of the current generation, 0 if none.
func (s *Memory) Done(_ context.Context, id string) (uint64, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if e := s.m[id]; e != nil {
		return e.done, nil
	}
	return 0, nil
}
