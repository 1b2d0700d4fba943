package lease

import (
	"context"
	"slices"
	"sync"
	"time"

	"github.com/redis/go-redis/v9"
)

// pipeliner sends the calls (scripts, and plain commands such as GET) that
// arrive together in one Redis pipeline: one write and one read for all of
// them instead of one each. The calls are independent (each script is
// atomic on its own), so pipelining changes neither their effects nor
// their order per caller.
//
// There is no background goroutine: a caller that finds nobody sending
// becomes the sender; it sends what is queued (its own call included), and
// hands the turn to the first caller queued meanwhile, so that nobody
// sends for others longer than one round trip.
type pipeliner struct {
	c redis.UniversalClient

	mu      sync.Mutex
	sending bool
	queue   []*pcall
}

// pcall is one call waiting for its turn or its reply: script with keys
// and args, or without a script the command args.
type pcall struct {
	ctx    context.Context
	script *redis.Script
	keys   []string
	args   []any
	cmd    *redis.Cmd
	wake   chan struct{} // closed when cmd is done or the caller is to send
	lead   bool          // set before wake is closed: send the queue
}

// maxPipeline bounds one pipeline.
const maxPipeline = 128

// run runs script like script.Run, in a pipeline with the calls of other
// goroutines made at the same time.
func (p *pipeliner) run(ctx context.Context, script *redis.Script, keys []string, args ...any) *redis.Cmd {
	return p.call(&pcall{ctx: ctx, script: script, keys: keys, args: args, wake: make(chan struct{})})
}

// do runs the command args like Client.Do, in a pipeline with the calls of
// other goroutines made at the same time.
func (p *pipeliner) do(ctx context.Context, args ...any) *redis.Cmd {
	return p.call(&pcall{ctx: ctx, args: args, wake: make(chan struct{})})
}

func (p *pipeliner) call(c *pcall) *redis.Cmd {
	ctx := c.ctx
	p.mu.Lock()
	p.queue = append(p.queue, c)
	lead := !p.sending
	p.sending = true
	p.mu.Unlock()
	if !lead {
		select {
		case <-c.wake:
		case <-ctx.Done():
			p.mu.Lock()
			if i := slices.Index(p.queue, c); i >= 0 && !c.lead {
				// Not sent yet and not our turn: drop the call.
				p.queue = slices.Delete(p.queue, i, i+1)
				p.mu.Unlock()
				cmd := redis.NewCmd(ctx)
				cmd.SetErr(ctx.Err())
				return cmd
			}
			p.mu.Unlock()
			// Sent already (its reply comes within the pipeline's
			// deadline), or the turn was just handed to us (we must send,
			// or everybody queued would wait forever).
			<-c.wake
		}
		if !c.lead {
			return c.cmd
		}
	}
	// This caller sends: everything queued up to maxPipeline.
	p.mu.Lock()
	n := min(len(p.queue), maxPipeline)
	batch := p.queue[:n:n]
	p.queue = p.queue[n:]
	p.mu.Unlock()
	p.send(batch)
	// Hand the turn to the first caller queued meanwhile.
	p.mu.Lock()
	if len(p.queue) > 0 {
		next := p.queue[0]
		next.lead = true
		close(next.wake)
	} else {
		p.sending = false
		p.queue = nil
	}
	p.mu.Unlock()
	return c.cmd
}

// send runs batch as one pipeline and wakes the callers. A script that
// Redis does not know (NOSCRIPT, after a restart) is run again on its own,
// which loads it.
func (p *pipeliner) send(batch []*pcall) {
	if len(batch) == 1 {
		c := batch[0]
		if c.script == nil {
			c.cmd = p.c.Do(c.ctx, c.args...)
		} else {
			c.cmd = c.script.Run(c.ctx, p.c, c.keys, c.args...)
		}
		if !c.lead {
			close(c.wake)
		}
		return
	}
	ctx, cancel := context.Background(), context.CancelFunc(func() {})
	if d, ok := pipelineDeadline(batch); ok {
		ctx, cancel = context.WithDeadline(ctx, d)
	}
	defer cancel()
	pipe := p.c.Pipeline()
	for _, c := range batch {
		if c.script == nil {
			c.cmd = pipe.Do(ctx, c.args...)
		} else {
			c.cmd = c.script.EvalSha(ctx, pipe, c.keys, c.args...)
		}
	}
	pipe.Exec(ctx) // errors are per command
	for _, c := range batch {
		if err := c.cmd.Err(); err != nil && c.script != nil && redis.HasErrorPrefix(err, "NOSCRIPT") {
			c.cmd = c.script.Run(c.ctx, p.c, c.keys, c.args...)
		}
		if !c.lead {
			close(c.wake)
		}
	}
}

// pipelineDeadline is the deadline of a pipeline: the latest of its
// callers', none when a caller has none (the client's own timeouts still
// apply). A caller's deadline never cuts short another's call.
func pipelineDeadline(batch []*pcall) (time.Time, bool) {
	var deadline time.Time
	for _, c := range batch {
		d, ok := c.ctx.Deadline()
		if !ok {
			return time.Time{}, false
		}
		if d.After(deadline) {
			deadline = d
		}
	}
	return deadline, true
}
