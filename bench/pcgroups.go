package bench

import (
	"context"
	"fmt"
	"os"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/synadia-io/orbit.go/pcgroups"

	"github.com/edgegate/edgegate/embed"
)

// Peer runs w on JetStream partitioned consumer groups (orbit.go
// pcgroups, static flavour): devices publish to peer.<controller>, the
// stream's subject transform puts the partition of the controller in front,
// and a group of one member per partition consumes with max acks pending 1,
// so that one message per partition is in flight and every controller's
// messages are handled in order. Partitions: one per worker (at most one
// per controller), as edgegate's workers. The handler is a no-op that
// checks the order; a device's window is released by the handling.
func Peer(ctx context.Context, w Workload) (Result, error) {
	dir, err := os.MkdirTemp("", "edgegate-bench-peer-")
	if err != nil {
		return Result{}, err
	}
	defer os.RemoveAll(dir)
	srv, err := embed.New(embed.Config{Name: "bench-peer", JetStream: true, StoreDir: dir})
	if err != nil {
		return Result{}, err
	}
	defer srv.Shutdown()
	nc, err := srv.Connect("bench-peer")
	if err != nil {
		return Result{}, err
	}
	defer nc.Close()
	// The windows bound what is outstanding: never stall on the client's
	// own limit of async publishes.
	js, err := jetstream.New(nc, jetstream.WithPublishAsyncMaxPending(max(4000, w.Controllers*w.Window+1)))
	if err != nil {
		return Result{}, err
	}
	parts := max(1, min(w.Workers, w.Controllers))
	if _, err := js.CreateStream(ctx, jetstream.StreamConfig{
		// File storage: the durability of edgegate's parsed stream.
		Name: "PEER", Subjects: []string{"peer.*"}, Storage: jetstream.FileStorage,
		SubjectTransform: &jetstream.SubjectTransformConfig{Source: "peer.*", Destination: fmt.Sprintf("{{Partition(%d,1)}}.peer.{{Wildcard(1)}}", parts)},
	}); err != nil {
		return Result{}, fmt.Errorf("bench: peer: stream: %w", err)
	}
	members := make([]string, parts)
	for i := range members {
		members[i] = "m" + strconv.Itoa(i)
	}
	if _, err := pcgroups.CreateStatic(ctx, js, "PEER", "cg", uint(parts), []string{">"}, members, nil); err != nil {
		return Result{}, fmt.Errorf("bench: peer: consumer group: %w", err)
	}

	run := newPeerRun(w)
	for _, m := range members {
		// One connection per member, as separate consumer processes would
		// have.
		mc, err := srv.Connect("bench-peer-" + m)
		if err != nil {
			return Result{}, err
		}
		defer mc.Close()
		mjs, err := jetstream.New(mc)
		if err != nil {
			return Result{}, err
		}
		cc, err := pcgroups.StaticConsume(ctx, mjs, "PEER", "cg", m, run.handle,
			jetstream.ConsumerConfig{AckPolicy: jetstream.AckExplicitPolicy, MaxAckPending: 1, AckWait: 5 * time.Second})
		if err != nil {
			return Result{}, fmt.Errorf("bench: peer: member %s: %w", m, err)
		}
		defer cc.Stop()
	}

	start := time.Now()
	errs := make(chan error, w.Controllers)
	var wg sync.WaitGroup
	for i := 0; i < w.Controllers; i++ {
		wg.Go(func() { errs <- run.produce(ctx, js, i) })
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		if err != nil {
			return Result{}, fmt.Errorf("bench: peer: %w", err)
		}
	}
	select {
	case <-run.allDone:
	case <-ctx.Done():
		return Result{}, ctx.Err()
	}
	el := run.last.Sub(start)
	if err := run.failed(); err != nil {
		return Result{}, fmt.Errorf("bench: peer: %w", err)
	}
	lat := run.latencies()
	q := func(p float64) time.Duration { return lat[min(len(lat)-1, int(p*float64(len(lat))))] }
	n := int64(w.Controllers * w.Messages)
	return Result{Scenario: "peer/pcgroups", Controllers: w.Controllers, Messages: n, Elapsed: el, Rate: float64(n) / el.Seconds(),
		P50: q(0.5), P99: q(0.99), P999: q(0.999), CPU: -1, RSS: -1,
		Note: fmt.Sprintf("static partitioned consumer group, %d partitions and members, max acks pending 1, file stream, in-process connections; latency from publish to handled", parts)}, nil
}

// peerRun is the state of one Peer run.
type peerRun struct {
	w     Workload
	ctrls []peerCtrl

	mu      sync.Mutex
	err     error
	pending int // messages not yet handled
	last    time.Time
	allDone chan struct{} // closed (under mu, once) when all are handled or on failure
	closed  bool
	lat     []time.Duration
}

type peerCtrl struct {
	mu      sync.Mutex
	space   *sync.Cond
	sent    []time.Time // publish time per seq (1-based)
	handled int         // last seq handled
}

func newPeerRun(w Workload) *peerRun {
	r := &peerRun{w: w, ctrls: make([]peerCtrl, w.Controllers), pending: w.Controllers * w.Messages,
		allDone: make(chan struct{}), lat: make([]time.Duration, 0, w.Controllers*w.Messages)}
	for i := range r.ctrls {
		c := &r.ctrls[i]
		c.space = sync.NewCond(&c.mu)
		c.sent = make([]time.Time, w.Messages+1)
	}
	return r
}

func ctrlName(i int) string { return fmt.Sprintf("c%06d", i) }

// produce publishes controller i's messages in order, at most Window not
// yet handled.
func (r *peerRun) produce(ctx context.Context, js jetstream.JetStream, i int) error {
	c := &r.ctrls[i]
	subject := "peer." + ctrlName(i)
	payload := make([]byte, r.w.Size)
	for seq := 1; seq <= r.w.Messages; seq++ {
		c.mu.Lock()
		for seq-c.handled > r.w.Window && r.failed() == nil {
			c.space.Wait()
		}
		c.sent[seq] = time.Now()
		c.mu.Unlock()
		if err := r.failed(); err != nil {
			return nil // reported by Peer
		}
		m := nats.NewMsg(subject)
		m.Data = payload
		m.Header.Set("Seq", strconv.Itoa(seq))
		// Async publishes from one goroutine keep their order on the
		// connection; the stream's acknowledgement is not waited for (the
		// handling is what releases the window).
		if _, err := js.PublishMsgAsync(m); err != nil {
			return fmt.Errorf("%s: publish %d: %w", subject, seq, err)
		}
	}
	select {
	case <-js.PublishAsyncComplete():
	case <-ctx.Done():
		return ctx.Err()
	}
	return nil
}

// handle is the group members' handler: a no-op that checks the order
// per controller and releases the device's window.
func (r *peerRun) handle(m jetstream.Msg) {
	now := time.Now()
	subj := m.Subject() // partition token already stripped
	i, err := strconv.Atoi(strings.TrimPrefix(subj, "peer.c"))
	seq, err2 := strconv.Atoi(m.Headers().Get("Seq"))
	if err != nil || err2 != nil || i < 0 || i >= len(r.ctrls) {
		r.fail(fmt.Errorf("unexpected message %q seq %q", subj, m.Headers().Get("Seq")))
		m.Ack()
		return
	}
	c := &r.ctrls[i]
	c.mu.Lock()
	if seq != c.handled+1 {
		c.mu.Unlock()
		r.fail(fmt.Errorf("%s: seq %d handled after %d: out of order, lost or duplicated", subj, seq, c.handled))
		m.Ack()
		return
	}
	c.handled = seq
	lat := now.Sub(c.sent[seq])
	c.space.Signal()
	c.mu.Unlock()
	if err := m.Ack(); err != nil {
		r.fail(fmt.Errorf("%s: ack %d: %w", subj, seq, err))
		return
	}
	r.mu.Lock()
	r.lat = append(r.lat, lat)
	r.pending--
	if r.pending == 0 {
		r.last = now
		r.closeLocked()
	}
	r.mu.Unlock()
}

func (r *peerRun) fail(err error) {
	r.mu.Lock()
	first := r.err == nil
	if first {
		r.err = err
		r.closeLocked()
	}
	r.mu.Unlock()
	if first {
		for i := range r.ctrls {
			c := &r.ctrls[i]
			c.mu.Lock()
			c.space.Broadcast()
			c.mu.Unlock()
		}
	}
}

func (r *peerRun) closeLocked() {
	if !r.closed {
		r.closed = true
		close(r.allDone)
	}
}

func (r *peerRun) failed() error {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.err
}

func (r *peerRun) latencies() []time.Duration {
	r.mu.Lock()
	defer r.mu.Unlock()
	lat := slices.Clone(r.lat)
	slices.Sort(lat)
	if len(lat) == 0 {
		lat = []time.Duration{0}
	}
	return lat
}
