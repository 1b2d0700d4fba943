package coord

import (
	"math/rand/v2"
	"time"
)

// Clock is a monotonic clock that a socket and a parser pool of one process
// share. An assignment stamped with it (Assign.Clock, Assign.Deadline)
// tells a parser with the same clock exactly until when its lease is held,
// however late the assignment arrived: such a parser needs no confirming
// heartbeat before its first message. Parsers in other processes (another
// clock) confirm as always.
type Clock struct {
	id   uint64
	base time.Time // carries Go's monotonic reading
}

// NewClock returns a clock with a random ID.
func NewClock() *Clock {
	return &Clock{id: rand.Uint64() | 1, base: time.Now()}
}

// ID identifies the clock in assignments; never 0.
func (c *Clock) ID() uint64 { return c.id }

// At returns t on this clock, in nanoseconds.
func (c *Clock) At(t time.Time) int64 { return int64(t.Sub(c.base)) }

// Time returns the time of ns on this clock.
func (c *Clock) Time(ns int64) time.Time { return c.base.Add(time.Duration(ns)) }
