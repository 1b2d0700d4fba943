package socket

import (
	"context"
	"encoding/json"
	"sort"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/edgegate/edgegate/coord"
)

// maxStatusControllers bounds the controllers listed in a status answer.
const maxStatusControllers = 500

// onStatus answers `edgegate status`: the socket's counters and the
// controllers it holds messages of, with their leases read from the store.
func (s *Server) onStatus(m *nats.Msg) {
	if m.Reply == "" {
		return
	}
	st := s.Stats()
	out := coord.Status{
		Kind: "socket", Appliance: s.cfg.Name, ID: s.id,
		Connections: int(st.Connections), Queued: st.Queued, InFlight: st.InFlight,
		Counters: map[string]uint64{
			"received": st.Received, "acked": st.Acked, "dead_lettered": st.DeadLettered,
			"suppressed": st.Suppressed, "dropped": st.Dropped,
			"takeovers": st.Takeovers, "batches": st.Batches, "batch_messages": st.BatchMsgs, "continued": st.Continued,
			"redispatched": st.Redispatched, "busy": st.Busy, "lease_held": st.LeaseHeld,
			"store_errors": st.StoreErrors, "pauses": st.Pauses, "refused": st.Refused,
		},
	}
	type sent struct {
		at time.Time
		i  int
	}
	var flight []sent
	out.Paused = s.isPaused(time.Now())
	s.eachShard(func(sh *shard) {
		for _, c := range sh.ctrls {
			if len(out.Controllers) >= maxStatusControllers {
				return
			}
			if len(c.q) == 0 && !c.inFlight() && !c.kept {
				continue
			}
			cs := coord.ControllerStatus{ID: c.id, State: c.state.String(), Queued: len(c.q), Connected: c.sess != nil}
			if c.kept && c.state == stIdle {
				cs.State = "held" // a kept lease; the status page counts "held"
			}
			if c.inFlight() {
				cs.Batch, cs.Fence = c.batchLen, c.tok.Fence
				if c.pool != nil {
					cs.Holder = c.pool.appliance
				}
				flight = append(flight, sent{c.sentAt, len(out.Controllers)})
			}
			out.Controllers = append(out.Controllers, cs)
		}
	})
	for _, f := range flight {
		cs := &out.Controllers[f.i]
		ctx, cancel := context.WithTimeout(context.Background(), time.Second)
		ls, err := s.store.Inspect(ctx, cs.ID)
		cancel()
		if err != nil {
			continue
		}
		cs.Locked, cs.Done = ls.Locked, ls.Done
		if ls.Locked {
			cs.LeaseAgeMs = time.Since(f.at).Milliseconds()
			if !ls.Heartbeat.IsZero() {
				cs.HeartbeatAgoMs = ls.Now.Sub(ls.Heartbeat).Milliseconds()
			}
		}
	}
	sort.Slice(out.Controllers, func(a, b int) bool { return out.Controllers[a].ID < out.Controllers[b].ID })
	b, _ := json.Marshal(&out)
	m.Respond(b)
}
