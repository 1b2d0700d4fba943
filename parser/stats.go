package parser

import (
	"encoding/json"
	"sync/atomic"

	"github.com/edgegate/edgegate/coord"
)

// Stats counts what a pool did.
type Stats struct {
	batches, messages, dead, transient, busy, leaseLost, malformed atomic.Uint64
}

// StatsSnapshot is a copy of the counters.
type StatsSnapshot struct {
	Batches, Messages, DeadLettered, TransientErrors, Busy, LeaseLost, Malformed uint64
}

// Stats returns the pool's counters.
func (p *Pool) Stats() StatsSnapshot {
	s := &p.stats
	return StatsSnapshot{
		Batches: s.batches.Load(), Messages: s.messages.Load(), DeadLettered: s.dead.Load(),
		TransientErrors: s.transient.Load(), Busy: s.busy.Load(), LeaseLost: s.leaseLost.Load(),
		Malformed: s.malformed.Load(),
	}
}

func marshalReady(r *coord.Ready) ([]byte, error) { return json.Marshal(r) }
