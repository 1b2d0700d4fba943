package parser

import (
	"context"
	"errors"
	"time"

	"github.com/edgegate/edgegate/coord"
	"github.com/edgegate/edgegate/egp"
)

// BatchHandler is a Handler that can pipeline a batch: start the work of
// each message in turn and wait for all of it once, instead of finishing
// each message before the next starts. The publish handler is one: a
// record's publish goes out at once, and the batch waits for the stream's
// acknowledgements together (one round trip a batch, not one a message).
type BatchHandler interface {
	Handler
	// Pipeline returns the pipeline of one batch of one controller's
	// messages, or nil: the batch's messages are then handled one at a
	// time with Handle.
	Pipeline() Pipeline
}

// Pipeline is the work of one batch of one controller's messages, begun
// message by message (Start) and waited for once (Flush). A message counts
// as handled only when Flush says it is done.
type Pipeline interface {
	// Start begins m's work; it may return before the work is done. m and
	// its Payload stay valid until the next Flush returns. An error means
	// none of m's work is done, nor will be: the pool then flushes what
	// was started before m, and handles m alone with Start and Flush,
	// retried or dead-lettered as a Handler's error would be.
	Start(ctx context.Context, m *Message) error
	// Flush waits for the work begun since the previous Flush and returns
	// how many of those messages, in the order they were started, are
	// done, and when fewer than all, why the next one is not. Work of the
	// messages after them is never done ahead of the first one not done:
	// any of it done later (a publish in flight when the wait ran out)
	// follows the done ones in order, and a retry finds it done.
	Flush(ctx context.Context) (int, error)
	// Close releases the pipeline, once, after its last Flush.
	Close()
}

// pipeline returns the pipeline for a batch, nil when the handler has
// none.
func (p *Pool) pipeline() Pipeline {
	if bh, ok := p.cfg.Handler.(BatchHandler); ok {
		return bh.Pipeline()
	}
	return nil
}

// pipeContext is the context of a batch's messages (msgContext): the
// batch's lease context, which also says by the caller's clock whether the
// lease is still valid, with the deadline of one attempt (parser.timeout)
// armed by begin and disarmed by end. A pipelined run, its starts and its
// flush, is one attempt.
type pipeContext interface {
	context.Context
	errAt(now time.Time) error
	begin(now time.Time)
	end(now time.Time, err error) error
}

// handleFunc handles one message alone, with h, retried and dead-lettered
// as its errors say (Pool.handle under the batch's context).
type handleFunc func(h Handler, now time.Time, m *Message, cm *coord.Msg) (egp.Status, time.Time, bool)

// runPipelined handles a batch's messages through pl: it starts them all,
// flushes once, and counts those done as processed. When the flush comes
// back short, the first message not done is handled alone (alone: handle's
// retries and dead letter; the pipeline's contract keeps anything after
// it from being stored ahead of it), and pipelining goes on after it. It
// returns the statuses and the last seq done, and stops early, like
// handle, when ctx is done (lease lost, appliance stopping).
func (p *Pool) runPipelined(ctx pipeContext, pl Pipeline, now time.Time, log *batchLog, a *coord.Assign, statuses []byte, alone handleFunc) ([]byte, uint64, time.Time) {
	defer pl.Close()
	// One Message per message, not one refilled: a started message stays
	// valid until the flush.
	msgs := make([]Message, len(a.Msgs))
	one := HandlerFunc(func(ctx context.Context, m *Message) error {
		if err := pl.Start(ctx, m); err != nil {
			return err
		}
		n, err := pl.Flush(ctx)
		if n >= 1 {
			return nil
		}
		if err == nil {
			err = errors.New("parser: the pipeline did not finish the message")
		}
		return err
	})
	var done uint64
	for i := 0; i < len(a.Msgs); {
		if ctx.errAt(now) != nil {
			break
		}
		ctx.begin(now)
		j := i
		var startErr error
		for ; j < len(a.Msgs); j++ {
			cm := &a.Msgs[j]
			msgs[j] = Message{
				Controller: a.Controller, Seq: cm.Seq, Gen: a.Gen, Fence: a.Token.Fence,
				Received: cm.Received, Payload: cm.Payload, Proto: a.Proto, Attempt: 1,
			}
			if startErr = pl.Start(ctx, &msgs[j]); startErr != nil {
				break
			}
		}
		n, err := pl.Flush(ctx)
		end := time.Now()
		err = ctx.end(end, err)
		p.handlerSeconds.Observe(end.Sub(now).Seconds())
		now = end
		n = max(0, min(n, j-i))
		for k := i; k < i+n; k++ {
			statuses = append(statuses, byte(egp.StatusProcessed))
			done = a.Msgs[k].Seq
		}
		i += n
		if i == len(a.Msgs) || ctx.Err() != nil {
			break
		}
		if i == j {
			err = startErr
		}
		if err == nil {
			err = errors.New("parser: the pipeline stopped short without a reason")
		}
		if !IsPermanent(err) {
			p.stats.transient.Add(1)
		}
		log.get().Warn("parser: pipelined batch stopped short, handling the message alone", "seq", a.Msgs[i].Seq, "done", n, "err", err)
		st, t, ok := alone(one, now, &msgs[i], &a.Msgs[i])
		now = t
		if !ok {
			break
		}
		statuses = append(statuses, byte(st))
		done = a.Msgs[i].Seq
		i++
	}
	return statuses, done, now
}
