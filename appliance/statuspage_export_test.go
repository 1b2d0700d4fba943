package appliance

import "time"

// SetStuckAfter shortens how long a batch is at a parser before the status
// page calls its controller stuck, so that a test need not wait 30s.
func (a *Appliance) SetStuckAfter(d time.Duration) {
	a.page.snapMu.Lock()
	defer a.page.snapMu.Unlock()
	a.page.stuckAfter = d
	a.page.snap = nil // the next request asks again
}
