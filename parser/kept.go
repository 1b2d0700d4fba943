package parser

import (
	"context"
	"errors"
	"strings"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/edgegate/edgegate/coord"
	"github.com/edgegate/edgegate/lease"
)

// keptLease is a lease the pool kept after a batch: surely held until
// p.surelyHeldUntil(k) (a margin before expires), whoever sends the next
// batch under it and however late that arrives.
type keptLease struct {
	fence  uint64
	socket string // the socket that sent the batch
	// expires is when the last store call for the lease that set its lock
	// (a keep, or the acquire) set it to expire, at the soonest: that
	// call's start plus the time it asked for. A batch's own heartbeats
	// extend the lock further without moving expires. The same call set
	// hb, so hb is no older than TTL until expires (an acquire asks for
	// TTL, a keep for Hold, which the appliance's sockets ask as TTL/2),
	// and a batch, valid only until p.surelyHeldUntil(k) unless it
	// heartbeats, never runs with an hb the socket's check loop takes for
	// a dead parser's.
	expires time.Time
	// done is the last seq handled under the lease; recorded tells whether
	// the store has it (a deferred keep leaves it to the socket, of this
	// process, see keepDeferred).
	done     uint64
	recorded bool
}

// pruneKept forgets kept leases that ran out (the socket released them,
// or sent no more), and superseded ones whose lock has expired: no batch
// can be sent under them any more.
func (p *Pool) pruneKept() {
	now := time.Now()
	p.mu.Lock()
	defer p.mu.Unlock()
	for id, k := range p.kept {
		if now.After(p.surelyHeldUntil(k)) {
			delete(p.kept, id)
		}
	}
	for id, k := range p.superseded {
		if now.After(k.expires) {
			delete(p.superseded, id)
		}
	}
}

// onSession releases the lease kept for a controller that opened a new
// device session on another socket: the lease is superseded, and the new
// session's socket need not wait for it to expire. A new session on the
// socket the lease was kept for is that socket's own business: it goes on
// under the lease, or releases it when the device goes (and its
// announcement of the session may arrive after the batch that kept the
// lease, which it sent to this pool directly, not over NATS).
func (p *Pool) onSession(m *nats.Msg) {
	id := m.Subject[strings.LastIndexByte(m.Subject, '.')+1:]
	// Under p.mu to the end: the release joins p.tails only before Run,
	// which sets stopped under p.mu, waits for them.
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.stopped {
		return // the kept lease expires by itself
	}
	k, ok := p.kept[id]
	from, _, _ := coord.ParseSessionAnnouncement(m.Data)
	if ok && k.socket != "" && k.socket == from {
		ok = false
	} else if ok {
		delete(p.kept, id)
		// The socket it was kept for, if of this process, may already
		// have taken the next batch and stamped it as surely held.
		p.superseded[id] = k
	}
	if !ok || time.Now().After(p.surelyHeldUntil(k)) {
		return
	}
	p.tails.Go(func() {
		ctx, cancel := context.WithTimeout(context.Background(), p.cfg.Heartbeat)
		defer cancel()
		tok := lease.Token{Fence: k.fence, Owner: p.id}
		var err error
		if k.recorded {
			err = p.store.Abandon(ctx, id, tok)
		} else {
			err = p.store.Release(ctx, id, tok, k.done)
		}
		if err != nil && !errors.Is(err, lease.ErrLost) {
			p.log.Warn("parser: releasing a kept lease for a new session failed; it expires by itself", "controller", id, "err", err)
		}
	})
}

// surelyHeldUntil is until when k is surely held: a margin for clock rate
// differences before its lock expires.
func (p *Pool) surelyHeldUntil(k keptLease) time.Time { return k.expires.Add(-p.cfg.TTL / 10) }

// takeKept returns the lease this pool kept for a after the controller's
// previous batch (zero if none, or another), and forgets it: the batch's
// own end records it again. superseded tells whether a is under a kept
// lease that onSession released.
func (p *Pool) takeKept(a *coord.Assign) (k keptLease, superseded bool) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if len(p.superseded) > 0 {
		r, ok := p.superseded[a.Controller]
		superseded = ok && r.fence == a.Token.Fence
	}
	k, ok := p.kept[a.Controller]
	if !ok {
		return keptLease{}, superseded
	}
	delete(p.kept, a.Controller)
	if k.fence != a.Token.Fence {
		return keptLease{}, superseded
	}
	return k, superseded
}

// keepDeferred keeps a's lease for the controller's next batch without a
// store call (a deferred keep) when the lock, as its last keep (kept) or
// the acquire set it, still has at least a.Hold less half a heartbeat
// period left, and at least half of a.Hold: a keep would move its expiry
// little further, or nearer, since it sets it a.Hold from its start. False
// means keep it with a store call.
//
// The outcome tells the socket exactly until when (Outcome.Until), and the
// socket sends under the lease only until a margin before that. At least
// a.Hold less half a heartbeat is left so that the socket's release of a
// lease whose done seq is not recorded, which comes a check round early,
// still comes before the lock expires.
//
// A deferred keep writes no hb, and needs none: hb, written with the
// lock's expiry, stays younger than TTL while a batch runs (see
// keptLease.expires). done is not recorded: the socket records it when it
// lets the lease go (see coord.Outcome.Until), or the next keep does. Only
// a crash in between leaves the record behind what was acknowledged, which
// means duplicates after a fault, never losses; in exchange a busy
// controller costs the store a keep every half heartbeat period, not one
// per batch, and a device's burst after an acquire an acquire and a
// release.
func (p *Pool) keepDeferred(a *coord.Assign, kept keptLease, done uint64) bool {
	if kept.expires.IsZero() {
		return false
	}
	if left := time.Until(kept.expires); left < a.Hold-p.cfg.Heartbeat/2 || left < a.Hold/2 {
		return false
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.stopped {
		return false
	}
	kept.done, kept.recorded = done, false
	p.kept[a.Controller] = kept
	return true
}

// keep records done and keeps the lease for the controller's next batch,
// for a.Hold, when the pool is not stopping (o.Kept), or finds that a
// newer session of the controller exists, in which case the store
// recorded done and let the lease go. False means release instead; a
// lease found lost stays lost (release fails too).
func (p *Pool) keep(log *batchLog, a *coord.Assign, done uint64, o *coord.Outcome) bool {
	p.mu.Lock()
	stopped := p.stopped
	p.mu.Unlock()
	if stopped {
		return false
	}
	ctx, cancel := context.WithTimeout(context.Background(), p.cfg.Heartbeat)
	defer cancel()
	start := time.Now()
	if err := p.store.Keep(ctx, a.Controller, a.Token, a.Hold, done); errors.Is(err, lease.ErrSuperseded) {
		return true
	} else if err != nil {
		if !errors.Is(err, lease.ErrLost) {
			log.get().Warn("parser: keeping the lease failed, releasing it", "err", err)
		}
		return false
	}
	p.mu.Lock()
	p.kept[a.Controller] = keptLease{
		fence: a.Token.Fence, socket: a.Socket,
		expires: start.Add(a.Hold), done: done, recorded: true,
	}
	p.mu.Unlock()
	o.Kept = true
	return true
}
