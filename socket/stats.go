package socket

import (
	"sync/atomic"
	"time"

	"github.com/edgegate/edgegate/egp"
)

type stats struct {
	connections                               atomic.Int64
	refused                                   atomic.Uint64
	received, acked, deadLettered, suppressed atomic.Uint64
	dropped, takeovers                        atomic.Uint64
	batches, batchMsgs, acquired, leaseHeld   atomic.Uint64
	continued, direct                         atomic.Uint64
	busy, redispatched, staleOutcomes         atomic.Uint64
	storeErrors, pauses, idleClosed           atomic.Uint64
	poolsIgnored                              atomic.Uint64
	writeWaits                                atomic.Uint64
	protoErrors                               [16]atomic.Uint64
}

func (s *stats) protoError(c egp.Code) {
	if int(c) < len(s.protoErrors) {
		s.protoErrors[c].Add(1)
	}
}

// Stats is a snapshot of a socket server's counters.
type Stats struct {
	Connections  int64  // device connections open
	Refused      uint64 // connections refused (limits, shutdown)
	Received     uint64 // DATA frames and lines received
	Acked        uint64 // messages finished (acknowledged unless ack mode none)
	DeadLettered uint64 // of which dead-lettered
	Suppressed   uint64 // duplicates of persistent-seq devices acknowledged without the handler
	Dropped      uint64 // queued messages dropped because their session closed
	Takeovers    uint64 // sessions taken over by a newer one
	Batches      uint64 // assignments sent
	BatchMsgs    uint64 // messages in those assignments
	Acquired     uint64 // leases granted
	Continued    uint64 // batches sent under the lease kept after the previous one (no acquire)
	Direct       uint64 // batches handed to the parser pool of this process directly, without NATS
	LeaseHeld    uint64 // acquisitions refused because the lease was held
	Busy         uint64 // assignments answered busy
	Redispatched uint64 // batches dispatched again after a lost lease or dead parser
	StoreErrors  uint64 // lease store errors
	Pauses       uint64 // dispatch paused for a lease after the store lost leases
	IdleClosed   uint64 // sessions closed after devices.idle_timeout without traffic
	WriteWaits   uint64 // times a reader stopped reading until its device took what was queued for it
	WriteQueued  int64  // bytes queued for writing to devices now (ACKs, PONGs, ERRORs)
	Queued       int    // messages queued now
	InFlight     int    // controllers with a batch in flight now
	Controllers  int    // controllers known now
	Pools        int    // parser pools known now
	PoolsIgnored uint64 // announcements of new pools ignored, the pool table being full
	// ProtocolErrors counts device errors by EGP/1 ERROR code.
	ProtocolErrors map[egp.Code]uint64
	// Teltonika counts what the Teltonika listener refused (teltonika.go).
	Teltonika TeltonikaStats
	// OldestInFlight is how long the batch in flight longest has been at
	// its parser (zero when none): a controller stuck behind a handler
	// that does not return shows here, however busy the others are.
	OldestInFlight time.Duration
}

// Stats returns a snapshot of the counters.
func (s *Server) Stats() Stats {
	st := &s.stats
	out := Stats{
		Connections: st.connections.Load(), Refused: st.refused.Load(),
		Received: st.received.Load(), Acked: st.acked.Load(), DeadLettered: st.deadLettered.Load(),
		Suppressed: st.suppressed.Load(), Dropped: st.dropped.Load(),
		Takeovers: st.takeovers.Load(), Batches: st.batches.Load(), BatchMsgs: st.batchMsgs.Load(),
		Acquired: st.acquired.Load(), Continued: st.continued.Load(), Direct: st.direct.Load(), LeaseHeld: st.leaseHeld.Load(), Busy: st.busy.Load(),
		Redispatched: st.redispatched.Load(), StoreErrors: st.storeErrors.Load(), Pauses: st.pauses.Load(), IdleClosed: st.idleClosed.Load(),
		PoolsIgnored: st.poolsIgnored.Load(), ProtocolErrors: map[egp.Code]uint64{},
		WriteWaits: st.writeWaits.Load(), WriteQueued: s.wqueued.Load(),
	}
	out.Teltonika = s.tel.stats()
	for i := range st.protoErrors {
		if v := st.protoErrors[i].Load(); v > 0 {
			out.ProtocolErrors[egp.Code(i)] = v
		}
	}
	now := time.Now()
	s.eachShard(func(sh *shard) {
		for _, c := range sh.ctrls {
			out.Queued += len(c.q)
			if c.inFlight() && !c.sentAt.IsZero() {
				out.OldestInFlight = max(out.OldestInFlight, now.Sub(c.sentAt))
			}
		}
		out.Controllers += len(sh.ctrls)
	})
	out.InFlight = int(s.inflight.Load())
	s.mu.Lock()
	out.Pools = len(s.pools)
	s.mu.Unlock()
	return out
}
