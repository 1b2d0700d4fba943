package parser

import (
	"encoding/json"
	"sync/atomic"

	"github.com/nats-io/nats.go"

	"github.com/edgegate/edgegate/coord"
)

// Stats counts what a pool did.
type Stats struct {
	batches, messages, dead, transient, busy, leaseLost, malformed atomic.Uint64
	unconfirmed                                                    atomic.Uint64 // batches started without a confirming heartbeat (shared clock, kept lease)
	kept                                                           atomic.Uint64 // batches that ended keeping their lease
	deferred                                                       atomic.Uint64 // of those, kept without a store call (keepDeferred)
	direct                                                         atomic.Uint64 // assignments offered in-process (Offer), busy ones included
}

// StatsSnapshot is a copy of the counters.
type StatsSnapshot struct {
	Batches, Messages, DeadLettered, TransientErrors, Busy, LeaseLost, Malformed uint64
	// Unconfirmed counts batches started without a confirming heartbeat:
	// their socket shares this process's clock, or the lease was kept after
	// the controller's previous batch.
	Unconfirmed uint64
	// Kept counts batches that ended keeping their lease for the next one.
	Kept uint64
	// Deferred counts the kept batches whose keep needed no store call (the
	// lock, as the lease's last keep or its acquire set it, still had about
	// a hold left, see keepDeferred): their done seq is recorded later.
	Deferred uint64
	// Direct counts assignments a socket of the same process offered
	// directly (Offer), without NATS.
	Direct uint64
}

// Stats returns the pool's counters.
func (p *Pool) Stats() StatsSnapshot {
	s := &p.stats
	return StatsSnapshot{
		Batches: s.batches.Load(), Messages: s.messages.Load(), DeadLettered: s.dead.Load(),
		TransientErrors: s.transient.Load(), Busy: s.busy.Load(), LeaseLost: s.leaseLost.Load(),
		Malformed: s.malformed.Load(), Unconfirmed: s.unconfirmed.Load(), Kept: s.kept.Load(), Deferred: s.deferred.Load(), Direct: s.direct.Load(),
	}
}

// onStatus answers `edgegate status` with the pool's workers and counters.
func (p *Pool) onStatus(m *nats.Msg) {
	if m.Reply == "" {
		return
	}
	p.mu.Lock()
	free := p.free
	p.mu.Unlock()
	st := p.Stats()
	b, _ := json.Marshal(&coord.Status{
		Kind: "pool", Appliance: p.cfg.Name, ID: p.id,
		Workers: p.cfg.Workers, Free: free, Busy: p.cfg.Workers - free,
		Counters: map[string]uint64{
			"batches": st.Batches, "messages": st.Messages, "dead_lettered": st.DeadLettered,
			"transient_errors": st.TransientErrors, "busy": st.Busy, "lease_lost": st.LeaseLost,
			"malformed": st.Malformed, "unconfirmed": st.Unconfirmed, "kept": st.Kept, "deferred": st.Deferred, "direct": st.Direct,
		},
	})
	m.Respond(b)
}
