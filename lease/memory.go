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
	reset   uint64 // the last fence granted before the done record was reset
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
func (s *Memory) Acquire(_ context.Context, id, owner string, ttl time.Duration) (Grant, error) {
	now := s.now()
	s.mu.Lock()
	defer s.mu.Unlock()
	e := s.entry(id, now)
	if e.locked {
		return Grant{}, ErrHeld
	}
	fresh := e.fence == 0
	if fresh {
		// Seeded from the clock, so that the fences of a restarted appliance
		// are above those it issued before.
		e.fence = freshFence(now)
	} else {
		e.fence++
	}
	e.locked, e.tok = true, Token{Fence: e.fence, Owner: owner}
	e.expires, e.hb = now.Add(ttl), now
	return Grant{Token: e.tok, Done: e.done, Fresh: fresh}, nil
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
// records done when given.
func (s *Memory) extend(id string, tok Token, ttl time.Duration, done *uint64) error {
	now := s.now()
	s.mu.Lock()
	defer s.mu.Unlock()
	e := s.entry(id, now)
	if !e.locked || e.tok != tok {
		return ErrLost
	}
	e.expires, e.hb = now.Add(ttl), now
	if done != nil && tok.Fence > e.reset {
		e.done = *done
	}
	return nil
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
	e.locked, e.tok, e.hb = false, Token{}, time.Time{}
	if tok.Fence > e.reset {
		e.done = done
	}
	e.rel = tok.Fence
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

// Done implements Store.
func (s *Memory) Done(_ context.Context, id string) (uint64, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if e := s.m[id]; e != nil {
		return e.done, nil
	}
	return 0, nil
}

// ResetDone implements Store.
func (s *Memory) ResetDone(_ context.Context, id string) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if e := s.m[id]; e != nil {
		e.done, e.reset = 0, e.fence
	}
	return nil
}
