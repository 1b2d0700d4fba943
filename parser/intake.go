package parser

import (
	"context"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/edgegate/edgegate/coord"
)

type job struct {
	a     *coord.Assign
	reply string              // NATS subject of the outcome
	out   func(coord.Outcome) // or, for an in-process assignment (Offer), its callback
	recv  time.Time
}

// onAssign answers an assignment at once: accepted when a worker is free,
// busy otherwise. It runs on the subscription's goroutine.
func (p *Pool) onAssign(msg *nats.Msg) {
	recv := time.Now()
	a, err := coord.DecodeAssign(msg.Data)
	if err != nil {
		p.stats.malformed.Add(1)
		p.log.Warn("parser: malformed assignment dropped", "err", err, "reply", msg.Reply)
		return
	}
	a.Socket = coord.SocketOf(msg.Reply)
	var answer func(bool)
	if msg.Reply != "" {
		answer = func(ok bool) {
			ans := coord.Answer{Controller: a.Controller, Fence: a.Token.Fence, Accepted: ok, Pool: p.id}
			if err := p.nc.Publish(msg.Reply, coord.AppendAnswer(nil, &ans)); err != nil {
				p.log.Warn("parser: answer", "controller", a.Controller, "err", err)
			}
		}
	}
	if p.take(job{a: a, reply: msg.Reply, recv: recv}, answer) && p.afterTake != nil {
		p.afterTake()
	}
}

// Offer takes an assignment from a socket of the same process directly,
// without NATS (socket.Config.Local): the same protocol with the answer as
// the result and the outcome as a call. True means a worker took it, and
// outcome is then called once, on another goroutine, when the batch is
// over, and before that, once its messages are handled, with their
// statuses (coord.Outcome.Early); false means busy (every worker is, or
// the pool is stopping). The payloads in a are read, never changed, until
// the first call.
func (p *Pool) Offer(a *coord.Assign, outcome func(coord.Outcome)) bool {
	p.stats.direct.Add(1)
	return p.take(job{a: a, out: outcome, recv: time.Now()}, nil)
}

// Free returns how many workers are idle (0 once the pool stops).
func (p *Pool) Free() int { return int(p.idle.Load()) }

// take queues j for a worker if one is free. answer, when not nil, gets
// the verdict, an acceptance before a worker can start j: the socket
// matches answers by controller and fence, and a lease kept after the
// batch carries the controller's next one under the same fence. An
// acceptance the worker's outcome overtook (this goroutine held up, the
// batch quick) would be taken as the next batch's answer.
func (p *Pool) take(j job, answer func(ok bool)) bool {
	// The send never blocks: every job in the channel or running holds one
	// of the free slots, and the channel has room for all of them. It is
	// done under mu so that Run cannot close the channel meanwhile.
	p.mu.Lock()
	ok := !p.stopped && p.free > 0
	if ok {
		p.free--
		p.idle.Store(int32(p.free))
		if answer != nil {
			answer(true) // published on the connection the outcome will be
		}
		p.work <- j
		if p.free == 0 {
			p.exhausted = true
		}
	}
	p.mu.Unlock()
	if !ok {
		p.stats.busy.Add(1)
		if answer != nil {
			answer(false)
		}
	}
	return ok
}

func (p *Pool) workerLoop(ctx context.Context) {
	for j := range p.work {
		then := p.runBatch(ctx, j)
		p.mu.Lock()
		p.free++
		if !p.stopped {
			p.idle.Store(int32(p.free))
		}
		p.mu.Unlock()
		select {
		case p.announce <- struct{}{}:
		default:
		}
		// The batch's outcome goes out once this worker counts as free:
		// a socket that gets it offers the controller's next batch at
		// once, and must not find the pool busy.
		then()
	}
}
