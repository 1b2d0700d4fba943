// Package wait is the one way tests wait for something to happen: poll a
// condition until it holds or a deadline passes, never sleep a guessed
// time (the way nats-server's checkFor and tailscale's tstest.WaitFor do).
package wait

import (
	"errors"
	"fmt"
	"time"
)

// TB is the part of testing.TB For needs.
type TB interface {
	Helper()
	Fatalf(format string, args ...any)
}

// Poll is how often a condition is tried.
const Poll = 5 * time.Millisecond

// For fails t unless check returns nil within timeout, with check's last
// error. check runs at once and then every Poll.
func For(t TB, timeout time.Duration, check func() error) {
	t.Helper()
	if err := Until(timeout, check); err != nil {
		t.Fatalf("%v", err)
	}
}

// True fails t unless cond holds within timeout, saying what was awaited.
func True(t TB, timeout time.Duration, what string, cond func() bool) {
	t.Helper()
	For(t, timeout, func() error {
		if cond() {
			return nil
		}
		return errors.New(what)
	})
}

// Until is For for code without a t (a goroutine, a helper returning an
// error): it returns nil once check does, or check's last error, saying
// the deadline passed.
func Until(timeout time.Duration, check func() error) error {
	return UntilEvery(timeout, Poll, check)
}

// UntilEvery is Until trying check every interval: for a check that
// costs (a request to a server, a stream read).
func UntilEvery(timeout, interval time.Duration, check func() error) error {
	deadline := time.Now().Add(timeout)
	t := time.NewTicker(interval)
	defer t.Stop()
	for {
		err := check()
		if err == nil {
			return nil
		}
		if !time.Now().Before(deadline) {
			return fmt.Errorf("not within %v: %w", timeout, err)
		}
		<-t.C
	}
}
