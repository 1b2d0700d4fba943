package parser

import (
	"context"
	"time"

	"github.com/edgegate/edgegate/coord"
	"github.com/edgegate/edgegate/egp"
)

// handle runs h (the pool's handler, or a pipeline's one-message
// adapter) on cm, filled into m, with retries, starting at
// now (the clock read once per message boundary: a batch of short
// messages is mostly clock reads otherwise). It returns the time it finished, and false when
// ctx was cancelled before the message was finished.
func (p *Pool) handle(ctx *msgContext, h Handler, now time.Time, log *batchLog, a *coord.Assign, m *Message, cm *coord.Msg) (egp.Status, time.Time, bool) {
	*m = Message{
		Controller: a.Controller, Seq: cm.Seq, Gen: a.Gen, Fence: a.Token.Fence,
		Received: cm.Received, Payload: cm.Payload, Proto: a.Proto,
	}
	backoff := p.cfg.RetryMin
	permanent := 0
	for attempt := 1; ; attempt++ {
		if ctx.errAt(now) != nil {
			return 0, now, false
		}
		m.Attempt = attempt
		ctx.begin(now)
		err := h.Handle(ctx, m)
		end := time.Now()
		err = ctx.end(end, err)
		p.handlerSeconds.Observe(end.Sub(now).Seconds())
		now = end
		if err == nil {
			return egp.StatusProcessed, now, true
		}
		if ctx.Err() != nil {
			return 0, now, false
		}
		if IsPermanent(err) {
			permanent++
			if permanent >= p.cfg.Attempts {
				st, ok := p.deadLetter(ctx, log, m, err)
				return st, time.Now(), ok
			}
		} else {
			p.stats.transient.Add(1)
			if attempt == 1 || attempt%50 == 0 {
				log.get().Warn("parser: handler failed, retrying", "seq", m.Seq, "attempt", attempt, "err", err)
			}
		}
		if !sleep(ctx, backoff) {
			return 0, now, false
		}
		now = time.Now()
		backoff = min(backoff*2, p.cfg.RetryMax)
	}
}

// deadLetter stores m as a dead letter, retrying store errors like a
// transient handler error.
func (p *Pool) deadLetter(ctx context.Context, log *batchLog, m *Message, cause error) (egp.Status, bool) {
	log.get().Warn("parser: message dead-lettered", "seq", m.Seq, "attempts", m.Attempt, "err", cause)
	p.stats.dead.Add(1)
	if p.cfg.DeadLetter == nil {
		return egp.StatusDeadLettered, true
	}
	backoff := p.cfg.RetryMin
	for {
		err := p.cfg.DeadLetter(ctx, m, cause)
		if err == nil {
			return egp.StatusDeadLettered, true
		}
		if ctx.Err() != nil {
			return 0, false
		}
		log.get().Warn("parser: dead letter failed, retrying", "seq", m.Seq, "err", err)
		if !sleep(ctx, backoff) {
			return 0, false
		}
		backoff = min(backoff*2, p.cfg.RetryMax)
	}
}

func sleep(ctx context.Context, d time.Duration) bool {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return false
	case <-t.C:
		return true
	}
}
