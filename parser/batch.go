package parser

import (
	"context"
	"log/slog"
	"time"

	"github.com/edgegate/edgegate/coord"
	"github.com/edgegate/edgegate/egp"
)

// runBatch runs one assignment: handle every message in order under the
// lease, heartbeating. It returns what remains once the worker is free
// again: reporting the outcome, or releasing the lease and then reporting.
func (p *Pool) runBatch(ctx context.Context, j job) (then func()) {
	a := j.a
	log := &batchLog{base: p.log, a: a}
	// The lease is valid until the socket's view of it minus a margin for
	// the transit of the assignment and clock rate differences.
	margin := p.cfg.TTL / 10
	valid := j.recv.Add(a.Valid - margin)

	bctx, cancel := context.WithCancelCause(ctx)
	defer cancel(nil)
	// Confirm the lease with the store before the first message: the
	// assignment may have been delayed (a stopped process, a slow network)
	// past the lease it was sent under, while another parser already got
	// the controller. The lease's validity then runs from this heartbeat.
	// A socket of this process says on the shared clock until when the
	// lease is surely held: with at least a heartbeat period left, no
	// confirmation is needed.
	// A batch under a lease this pool kept after the controller's previous
	// batch needs no confirmation either: the keep confirmed it.
	// A lease this pool kept and then released for a new session elsewhere
	// (onSession) carries no batch any more: its socket may have sent one
	// before it heard of the session, and a confirmation could land
	// before the release does, which would then delete the lock under a
	// running batch.
	confirm := true
	kept, superseded := p.takeKept(a)
	if superseded {
		p.stats.leaseLost.Add(1)
		log.get().Info("parser: batch under a lease released for a newer session, not started")
		return func() { p.reply(log, j, &coord.Outcome{Controller: a.Controller, Fence: a.Token.Fence}) }
	}
	var stamped time.Time // the lock expires no sooner, says a socket of this process
	// Only in a call (Offer): over NATS anyone could claim the clock.
	if c := p.cfg.Clock; c != nil && j.out != nil && a.Clock == c.ID() {
		if held := c.Time(a.Deadline).Add(-margin); time.Until(held) > p.cfg.Heartbeat {
			valid, confirm, stamped = held, false, c.Time(a.Deadline)
			p.stats.unconfirmed.Add(1)
		}
	}
	// Its first heartbeat comes early enough (see heartbeat.loop).
	if kept.expires.IsZero() && !stamped.IsZero() {
		// A lease fresh from its acquire, which set the lock to expire a
		// TTL after it began: that counts as its last keep, so that the
		// batch's own keep may be deferred too (keepDeferred). The socket
		// stamps the acquire's start plus TTL, or, for a lease it
		// continues after a keep this pool no longer knows of, when that
		// keep set the lock to expire at the soonest (its Outcome.Until,
		// or a Hold after the batch before it was sent, which the keep
		// began after): either is no later than the lock's expiry, and
		// the store call that set it set hb too.
		kept = keptLease{fence: a.Token.Fence, socket: a.Socket, expires: stamped, recorded: true}
	}
	if held := p.surelyHeldUntil(kept); confirm && time.Until(held) > margin {
		valid, confirm = held, false
		p.stats.unconfirmed.Add(1)
	}
	hb := newHeartbeat(p, a, valid, cancel)
	if confirm {
		if err := hb.confirm(ctx); err != nil {
			p.stats.leaseLost.Add(1)
			log.get().Warn("parser: lease not confirmed, batch not started", "err", err)
			return func() { p.reply(log, j, &coord.Outcome{Controller: a.Controller, Fence: a.Token.Fence}) }
		}
	}
	hb.start(bctx)

	statuses := make([]byte, 0, len(a.Msgs))
	var done uint64
	lctx := newMsgContext(&leaseContext{bctx, hb}, p.cfg.Timeout)
	defer lctx.close()
	m := new(Message) // one per batch, refilled per message: valid only during Handle
	now := time.Now()
	first := 0 // messages a pipeline took care of (all, unless stopped)
	if pl := p.pipeline(); pl != nil {
		statuses, done, now = p.runPipelined(lctx, pl, now, log, a, statuses, func(h Handler, now time.Time, m *Message, cm *coord.Msg) (egp.Status, time.Time, bool) {
			return p.handle(lctx, h, now, log, a, m, cm)
		})
		first = len(statuses)
	}
	for i := first; i < len(a.Msgs); i++ {
		var st egp.Status
		var ok bool
		st, now, ok = p.handle(lctx, p.cfg.Handler, now, log, a, m, &a.Msgs[i])
		if !ok {
			break
		}
		statuses = append(statuses, byte(st))
		done = a.Msgs[i].Seq
	}
	lost := hb.stop()

	if j.out != nil && !lost && len(statuses) > 0 && a.Hold > 0 && p.keepDeferred(a, kept, done) {
		// Kept without a store call (see keepDeferred): the outcome is final
		// at once. Counted first, like every outcome: whoever reads the
		// stats after an ACK finds its batch in them.
		p.stats.kept.Add(1)
		p.stats.deferred.Add(1)
		p.count(len(statuses))
		return func() {
			j.out(coord.Outcome{Controller: a.Controller, Fence: a.Token.Fence, Released: true, Kept: true,
				Until: kept.expires, Done: done, Statuses: statuses})
		}
	}
	// The release and the outcome need Redis and NATS round trips but no
	// worker: they run on their own, and the worker takes the next batch
	// (of another controller: the socket dispatches this one again only
	// after the outcome, which follows the release).
	return func() { p.tails.Go(func() { p.finish(log, j, lost, done, statuses) }) }
}

// finish releases a batch's lease and reports its outcome to the socket.
func (p *Pool) finish(log *batchLog, j job, lost bool, done uint64, statuses []byte) {
	a := j.a
	o := coord.Outcome{Controller: a.Controller, Fence: a.Token.Fence}
	handled := len(statuses)
	if j.out != nil && !lost && handled > 0 {
		// A socket of this process acknowledges what was handled now: it
		// was handled under a lease surely held (heartbeat.stop says so),
		// and the keep or release below only decides what becomes of the
		// lease. Over NATS the statuses go with the outcome: Early is not
		// in the encoding (coord.Outcome).
		p.count(handled)
		j.out(coord.Outcome{Controller: a.Controller, Fence: a.Token.Fence, Released: true, Done: done, Statuses: statuses, Early: true})
		statuses = nil
	}
	switch {
	case lost:
		p.stats.leaseLost.Add(1)
		log.get().Warn("parser: lease lost, batch fenced", "handled", handled, "of", len(a.Msgs))
	case handled == 0:
		// Stopped before the first message finished: nothing to record,
		// and the socket sends the batch again.
		o.Released = p.abandon(log, a) == nil
	case a.Hold > 0 && p.keep(log, a, done, &o):
		o.Released, o.Done, o.Statuses = true, done, statuses
		if o.Kept {
			p.stats.kept.Add(1)
		}
		p.count(len(statuses))
	default:
		if err := p.release(log, a, done); err == nil {
			o.Released, o.Done, o.Statuses = true, done, statuses
			p.count(len(statuses))
		}
	}
	p.reply(log, j, &o)
}

// count counts a batch of n messages acknowledged to its socket (none:
// its statuses went ahead, see finish).
func (p *Pool) count(n int) {
	if n > 0 {
		p.stats.batches.Add(1)
		p.stats.messages.Add(uint64(n))
	}
}

// reply reports a batch's outcome to the socket that assigned it.
func (p *Pool) reply(log *batchLog, j job, o *coord.Outcome) {
	if j.out != nil {
		j.out(*o)
		return
	}
	if j.reply == "" {
		return
	}
	o.Pool = p.id // the socket takes outcomes only from the pool it assigned
	if err := p.nc.Publish(j.reply, coord.AppendOutcome(nil, o)); err != nil {
		log.get().Warn("parser: outcome", "err", err)
	}
}

// release lets the lease go and records done as the controller's done
// seq. Errors are logged here.
func (p *Pool) release(log *batchLog, a *coord.Assign, done uint64) error {
	ctx, cancel := context.WithTimeout(context.Background(), p.cfg.Heartbeat)
	defer cancel()
	return p.releaseErr(log, p.store.Release(ctx, a.Controller, a.Token, done))
}

// abandon lets the lease go and leaves the done record as the grant found
// it: nothing was handled under it. Errors are logged here.
func (p *Pool) abandon(log *batchLog, a *coord.Assign) error {
	ctx, cancel := context.WithTimeout(context.Background(), p.cfg.Heartbeat)
	defer cancel()
	return p.releaseErr(log, p.store.Abandon(ctx, a.Controller, a.Token))
}

// releaseErr counts and logs a failed release or abandon, and returns err.
func (p *Pool) releaseErr(log *batchLog, err error) error {
	if err != nil {
		p.stats.leaseLost.Add(1)
		log.get().Warn("parser: release failed; the batch is fenced unless its statuses went ahead (Early)", "err", err)
	}
	return err
}

// batchLog is a batch's logger, built on first use: most batches log
// nothing, and building it costs allocations per batch.
type batchLog struct {
	base *slog.Logger
	a    *coord.Assign
	l    *slog.Logger
}

func (b *batchLog) get() *slog.Logger {
	if b.l == nil {
		b.l = b.base.With("controller", b.a.Controller, "fence", b.a.Token.Fence)
	}
	return b.l
}
