package parser

import (
	"context"
	"errors"
	"fmt"
	"net"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/edgegate/edgegate/coord"
	"github.com/edgegate/edgegate/egp"
	"github.com/edgegate/edgegate/internal/wait"
	"github.com/edgegate/edgegate/lease"
)

// flushed is what a watched pipeline's Flush returned.
type flushed struct {
	n   int
	err error
}

// watched wraps a BatchHandler to see its pipelines: onStart runs before
// every Start (a fault injected mid-batch), and every Flush's result goes
// to flushes (dropped when nobody listens).
type watched struct {
	BatchHandler
	onStart func(m *Message)
	flushes chan flushed
}

func (w *watched) Pipeline() Pipeline {
	pl := w.BatchHandler.Pipeline()
	if pl == nil {
		return nil
	}
	return &watchedPipeline{Pipeline: pl, w: w}
}

type watchedPipeline struct {
	Pipeline
	w *watched
}

func (p *watchedPipeline) Start(ctx context.Context, m *Message) error {
	if p.w.onStart != nil {
		p.w.onStart(m)
	}
	return p.Pipeline.Start(ctx, m)
}

func (p *watchedPipeline) Flush(ctx context.Context) (int, error) {
	n, err := p.Pipeline.Flush(ctx)
	select {
	case p.w.flushes <- flushed{n, err}:
	default:
	}
	return n, err
}

// pipelineRig is a pool whose handler is the publish handler of a
// Publisher on nc (a JetStream server of the test's own), watched.
type pipelineRig struct {
	pool  *Pool
	store *lease.Memory
	pub   *Publisher
	js    jetstream.JetStream
	h     *watched
}

func newPipelineRig(t *testing.T, nc *nats.Conn, onStart func(*Message)) *pipelineRig {
	t.Helper()
	return newPipelineRigConfig(t, nc, onStart, PublisherConfig{JetStream: true, Timeout: 2 * time.Second})
}

// newPipelineRigConfig is newPipelineRig with a Publisher of cfg.
func newPipelineRigConfig(t *testing.T, nc *nats.Conn, onStart func(*Message), cfg PublisherConfig) *pipelineRig {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	pub, err := NewPublisher(ctx, nc, cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(pub.Close)
	bh, ok := pub.Handler(false).(BatchHandler)
	if !ok {
		t.Fatal("the publish handler is no BatchHandler")
	}
	h := &watched{BatchHandler: bh, onStart: onStart, flushes: make(chan flushed, 64)}
	store := lease.NewMemory()
	p, _ := startPoolStore(t, Config{Workers: 2, Handler: h, DeadLetter: pub.Dead, TTL: 10 * time.Second, Heartbeat: time.Second,
		RetryMin: 5 * time.Millisecond, RetryMax: 50 * time.Millisecond}, store)
	js, err := jetstream.New(nc)
	if err != nil {
		t.Fatal(err)
	}
	return &pipelineRig{pool: p, store: store, pub: pub, js: js, h: h}
}

// batch offers controller id's messages seqs (generation 1) with the
// payloads body(seq) and returns the statuses of the batch.
func (r *pipelineRig) batch(t *testing.T, id string, body func(seq uint64) []byte, seqs ...uint64) []byte {
	t.Helper()
	st, err := r.try(id, body, seqs...)
	if err != nil {
		t.Fatal(err)
	}
	return st
}

// try is batch for any goroutine.
func (r *pipelineRig) try(id string, body func(seq uint64) []byte, seqs ...uint64) ([]byte, error) {
	g, err := r.store.Acquire(context.Background(), id, r.pool.ID(), 30*time.Second, lease.Session{})
	if err != nil {
		return nil, err
	}
	a := &coord.Assign{Controller: id, Token: g.Token, Valid: 30 * time.Second, Socket: "socket-1", Gen: 1}
	for _, s := range seqs {
		a.Msgs = append(a.Msgs, coord.Msg{Seq: s, Received: time.Now(), Payload: body(s)})
	}
	outcomes := make(chan coord.Outcome, 4)
	if !r.pool.Offer(a, func(o coord.Outcome) { outcomes <- o }) {
		return nil, errors.New("the pool refused the batch")
	}
	// The statuses come ahead (Early), then the outcome proper once the
	// lease is released: the next batch acquires it again.
	var statuses []byte
	for {
		select {
		case o := <-outcomes:
			statuses = append(statuses, o.Statuses...)
			if !o.Early {
				return statuses, nil
			}
		case <-time.After(60 * time.Second):
			return nil, errors.New("no outcome")
		}
	}
}

// parsedRecords reads every record of the parsed stream, in stream order.
func parsedRecords(t testing.TB, js jetstream.JetStream) []*jetstream.RawStreamMsg {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	st, err := js.Stream(ctx, StreamParsed)
	if err != nil {
		t.Fatal(err)
	}
	info, err := st.Info(ctx)
	if err != nil {
		t.Fatal(err)
	}
	var msgs []*jetstream.RawStreamMsg
	for seq := info.State.FirstSeq; seq <= info.State.LastSeq && seq > 0; seq++ {
		m, err := st.GetMsg(ctx, seq)
		if errors.Is(err, jetstream.ErrMsgNotFound) {
			continue
		}
		if err != nil {
			t.Fatal(err)
		}
		if strings.HasPrefix(m.Subject, coord.GrantSubject("")) {
			continue // a grant's marker, not a record
		}
		msgs = append(msgs, m)
	}
	return msgs
}

// checkStored reads the parsed stream and checks, per controller, that
// its records are in device order (seqs strictly increasing: no record
// ahead of an earlier one, none twice) and that every seq acknowledged as
// processed is among them. It returns the records per controller.
func checkStored(t *testing.T, js jetstream.JetStream, processed map[string][]uint64) map[string][]uint64 {
	t.Helper()
	stored := map[string][]uint64{}
	for _, m := range parsedRecords(t, js) {
		seq := m.Sequence
		id := m.Header.Get(HeaderController)
		s, err := strconv.ParseUint(m.Header.Get(HeaderSeq), 10, 64)
		if err != nil {
			t.Fatalf("record %d without a seq: %v", seq, m.Header)
		}
		if prev := stored[id]; len(prev) > 0 && s <= prev[len(prev)-1] {
			t.Errorf("%s: seq %d stored after seq %d (stream seq %d): out of device order", id, s, prev[len(prev)-1], seq)
		}
		if want := fmt.Sprintf("%s:1:%d", id, s); m.Header.Get(jetstream.MsgIDHeader) != want {
			t.Errorf("record %d: message ID %q, want %q", seq, m.Header.Get(jetstream.MsgIDHeader), want)
		}
		stored[id] = append(stored[id], s)
	}
	for id, seqs := range processed {
		have := map[uint64]bool{}
		for _, s := range stored[id] {
			have[s] = true
		}
		for _, s := range seqs {
			if !have[s] {
				t.Errorf("%s: seq %d acknowledged as processed, not stored", id, s)
			}
		}
	}
	return stored
}

func seqRange(from, to uint64) []uint64 {
	var s []uint64
	for i := from; i <= to; i++ {
		s = append(s, i)
	}
	return s
}

// processedOf returns the seqs whose status says processed.
func processedOf(t *testing.T, seqs []uint64, statuses []byte) []uint64 {
	t.Helper()
	if len(statuses) > len(seqs) {
		t.Fatalf("%d statuses for %d messages", len(statuses), len(seqs))
	}
	var p []uint64
	for i, st := range statuses {
		if egp.Status(st) == egp.StatusProcessed {
			p = append(p, seqs[i])
		}
	}
	return p
}

// TestPipelinedBatchStored: a batch's records go out as one fast-ingest
// batch and are all stored, in order, once; the same batch again (a
// resend after a lost ACK) stores nothing more and is acknowledged.
func TestPipelinedBatchStored(t *testing.T) {
	nc := jetStreamConn(t)
	r := newPipelineRig(t, nc, nil)
	body := func(s uint64) []byte { return []byte(fmt.Sprintf(`{"n":%d}`, s)) }
	seqs := seqRange(1, 200)
	st := r.batch(t, "ctl-a", body, seqs...)
	if got := processedOf(t, seqs, st); len(got) != len(seqs) {
		t.Fatalf("%d of %d processed", len(got), len(seqs))
	}
	if f := <-r.h.flushes; f.n != len(seqs) || f.err != nil {
		t.Fatalf("flush: %d, %v; want all %d in one", f.n, f.err, len(seqs))
	}
	// A resend: every message is stored already, and checked as such.
	st = r.batch(t, "ctl-a", body, seqs...)
	if got := processedOf(t, seqs, st); len(got) != len(seqs) {
		t.Fatalf("resend: %d of %d processed", len(got), len(seqs))
	}
	stored := checkStored(t, r.js, map[string][]uint64{"ctl-a": seqs})
	if len(stored["ctl-a"]) != len(seqs) {
		t.Fatalf("%d records stored, want %d", len(stored["ctl-a"]), len(seqs))
	}
}

// TestPipelinedDuplicateIDOfAnotherMessage: a message whose ID the stream
// holds for another message (a forgery, a bug) is not acknowledged as
// stored under pipelining either: it is dead-lettered, and the others of
// its batch are stored.
func TestPipelinedDuplicateIDOfAnotherMessage(t *testing.T) {
	nc := jetStreamConn(t)
	r := newPipelineRig(t, nc, nil)
	r.batch(t, "ctl-f", func(s uint64) []byte { return []byte("original") }, 1, 2, 3)
	seqs := []uint64{3, 4, 5}
	st := r.batch(t, "ctl-f", func(s uint64) []byte { return []byte(fmt.Sprintf("other-%d", s)) }, seqs...)
	want := []egp.Status{egp.StatusDeadLettered, egp.StatusProcessed, egp.StatusProcessed}
	for i, s := range st {
		if egp.Status(s) != want[i] {
			t.Fatalf("statuses %v, want %v", st, want)
		}
	}
	stored := checkStored(t, r.js, map[string][]uint64{"ctl-f": {1, 2, 3, 4, 5}})
	if len(stored["ctl-f"]) != 5 {
		t.Fatalf("records %v, want seqs 1 to 5 once", stored["ctl-f"])
	}
}

// limitStream sets the parsed stream to refuse new records beyond
// maxMsgs messages or maxBytes bytes (discard new); -1 lifts a limit.
func limitStream(t *testing.T, js jetstream.JetStream, maxMsgs, maxBytes int64) {
	t.Helper()
	updateParsed(t, js, func(cfg *jetstream.StreamConfig) {
		cfg.MaxMsgs, cfg.MaxBytes, cfg.Discard = maxMsgs, maxBytes, jetstream.DiscardNew
	})
}

// updateParsed changes the parsed stream's configuration with change.
func updateParsed(t *testing.T, js jetstream.JetStream, change func(*jetstream.StreamConfig)) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	st, err := js.Stream(ctx, StreamParsed)
	if err != nil {
		t.Fatal(err)
	}
	cfg := st.CachedInfo().Config
	change(&cfg)
	if _, err := js.UpdateStream(ctx, cfg); err != nil {
		t.Fatal(err)
	}
}

// waitShortFlush waits for a flush that came back short.
func waitShortFlush(t *testing.T, h *watched) flushed {
	t.Helper()
	deadline := time.After(30 * time.Second)
	for {
		select {
		case f := <-h.flushes:
			if f.err != nil {
				return f
			}
		case <-deadline:
			t.Fatal("no flush came back short")
			return flushed{}
		}
	}
}

// TestPipelinedStreamLimitMidBatch: the stream refuses a record in the
// middle of a pipelined batch (discard new, a message or byte limit). No
// record after it is stored ahead of it: not even a smaller one that would
// still fit under the byte limit (plain asynchronous publishes store that
// one, and the refused record's retry then lands after it). The batch
// waits on the refused message, retrying, and once the limit is lifted
// every message is stored in device order and acknowledged.
func TestPipelinedStreamLimitMidBatch(t *testing.T) {
	for _, tc := range []struct {
		name               string
		maxMsgs, maxBytes  int64
		body               func(seq uint64) []byte
		seqs               []uint64
		wantShort, refused uint64 // the seq the first flush stops at
	}{
		// 30 records and the grant's marker (markGrant).
		{name: "messages", maxMsgs: 31, maxBytes: -1, seqs: seqRange(1, 80),
			body: func(s uint64) []byte { return []byte(fmt.Sprintf(`{"n":%d}`, s)) }, refused: 31},
		{name: "bytes", maxMsgs: -1, maxBytes: 6000, seqs: seqRange(1, 40),
			// Seq 11 is 4 KiB, the others 40 bytes: after 10 small ones
			// (some 2 KiB with headers) seq 11 does not fit, the smaller
			// ones after it would.
			body: func(s uint64) []byte {
				if s == 11 {
					return []byte(`"` + strings.Repeat("x", 4096) + `"`)
				}
				return []byte(fmt.Sprintf(`{"n":%d,"pad":"%s"}`, s, strings.Repeat("p", 24)))
			}, refused: 11},
	} {
		t.Run(tc.name, func(t *testing.T) {
			nc := jetStreamConn(t)
			r := newPipelineRig(t, nc, nil)
			limitStream(t, r.js, tc.maxMsgs, tc.maxBytes)
			done := make(chan []byte, 1)
			go func() {
				st, err := r.try("ctl-l", tc.body, tc.seqs...)
				if err != nil {
					t.Error(err)
				}
				done <- st
			}()
			f := waitShortFlush(t, r.h)
			if f.n != int(tc.refused-1) {
				t.Fatalf("first flush: %d done, %v; want the %d before seq %d", f.n, f.err, tc.refused-1, tc.refused)
			}
			// The batch is stuck on the refused message: nothing after it
			// is stored.
			stored := checkStored(t, r.js, nil)
			if got := stored["ctl-l"]; len(got) != int(tc.refused-1) {
				t.Fatalf("stored while refused: %v; want seqs 1 to %d", got, tc.refused-1)
			}
			limitStream(t, r.js, -1, -1)
			var st []byte
			select {
			case st = <-done:
			case <-time.After(30 * time.Second):
				t.Fatal("the batch did not finish once the limit was lifted")
			}
			processed := processedOf(t, tc.seqs, st)
			if len(processed) != len(tc.seqs) {
				t.Fatalf("%d of %d processed", len(processed), len(tc.seqs))
			}
			stored = checkStored(t, r.js, map[string][]uint64{"ctl-l": processed})
			if len(stored["ctl-l"]) != len(tc.seqs) {
				t.Fatalf("records %v, want all %d once", stored["ctl-l"], len(tc.seqs))
			}
		})
	}
}

// TestPipelinedServerRestartMidBatch: the JetStream server restarts (same
// port, same store) while a batch is being pipelined: records in flight
// are lost or stored, those sent after the reconnect are refused (their
// fast-ingest batch is gone). The batch's first flush comes back short,
// the rest is retried, and the stream ends up with every acknowledged
// message, in device order, once.
func TestPipelinedServerRestartMidBatch(t *testing.T) {
	dir := t.TempDir()
	opts := &server.Options{StoreDir: dir, Host: "127.0.0.1", Port: server.RANDOM_PORT}
	s := startServer(t, opts)
	opts.Port = s.Addr().(*net.TCPAddr).Port // the same one after the restart
	nc, err := nats.Connect(s.ClientURL(), nats.MaxReconnects(-1), nats.ReconnectWait(20*time.Millisecond), nats.ReconnectJitter(0, 0))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(nc.Close)
	restartAt := uint64(120)
	r := newPipelineRig(t, nc, func(m *Message) {
		if m.Seq != restartAt || m.Attempt != 1 {
			return
		}
		restartAt = 0 // once
		s.Shutdown()
		s.WaitForShutdown()
		s = startServer(t, opts)
	})
	seqs := seqRange(1, 300)
	body := func(s uint64) []byte { return []byte(fmt.Sprintf(`{"n":%d}`, s)) }
	st := r.batch(t, "ctl-r", body, seqs...)
	if f := waitShortFlush(t, r.h); f.n >= int(seqs[len(seqs)-1]) {
		t.Fatalf("flush across the restart: %d, %v; want it short", f.n, f.err)
	}
	allStoredOnce(t, r.js, "ctl-r", seqs, st)
}

// TestPipelinedLeaderChangeMidBatch: in a three-server cluster with a
// three-replica stream, the stream's leader steps down while a batch's
// records are on their way to it. The batch is stored whole or not at
// all (atomically), the messages it did not store are retried under the
// new leader, and the stream ends up with every acknowledged message, in
// device order, once.
func TestPipelinedLeaderChangeMidBatch(t *testing.T) {
	if testing.Short() {
		t.Skip("long: three servers")
	}
	nc := jetStreamCluster(t)[0]
	r := newPipelineRigConfig(t, nc, nil, PublisherConfig{JetStream: true, Replicas: 3, Timeout: 2 * time.Second})
	parsedStreamReady(t, nc)
	leader := func() string {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		st, err := r.js.Stream(ctx, StreamParsed)
		if err != nil {
			return ""
		}
		info, err := st.Info(ctx)
		if err != nil || info.Cluster == nil {
			return ""
		}
		return info.Cluster.Leader
	}
	var before, after string
	stepAt := "120"
	r.pub.beforeSend = func(msg *nats.Msg) {
		if msg.Header.Get(HeaderSeq) != stepAt {
			return
		}
		stepAt = "" // once
		before = leader()
		if _, err := nc.Request("$JS.API.STREAM.LEADER.STEPDOWN."+StreamParsed, nil, 5*time.Second); err != nil {
			t.Errorf("step down: %v", err)
		}
		wait.True(t, 20*time.Second, "a new stream leader", func() bool {
			after = leader()
			return after != "" && after != before
		})
	}
	seqs := seqRange(1, 300)
	body := func(s uint64) []byte { return []byte(fmt.Sprintf(`{"n":%d}`, s)) }
	st := r.batch(t, "ctl-s", body, seqs...)
	if before == "" || after == "" {
		t.Fatalf("the leader did not change mid-batch (before %q, after %q)", before, after)
	}
	if f := waitShortFlush(t, r.h); f.n >= len(seqs) {
		t.Fatalf("flush across the leader change: %d, %v; want it short", f.n, f.err)
	}
	allStoredOnce(t, r.js, "ctl-s", seqs, st)
}

// allStoredOnce checks that every one of seqs was processed (statuses
// st) and that the stream holds each once, in order, for ctl.
func allStoredOnce(t *testing.T, js jetstream.JetStream, ctl string, seqs []uint64, st []byte) {
	t.Helper()
	processed := processedOf(t, seqs, st)
	if len(processed) != len(seqs) {
		t.Fatalf("%d of %d processed", len(processed), len(seqs))
	}
	stored := checkStored(t, js, map[string][]uint64{ctl: processed})
	if len(stored[ctl]) != len(seqs) {
		t.Fatalf("%d records, want %d", len(stored[ctl]), len(seqs))
	}
}

// TestPipelinedCommitAckedBeforeTheSenderGoesOn: the server may
// acknowledge a batch's committing record before the goroutine that sent
// it runs again (a busy box). The batch is then all stored, and must be
// reported so: a record counted as not stored is published again alone,
// logged and counted as a transient error for nothing.
func TestPipelinedCommitAckedBeforeTheSenderGoesOn(t *testing.T) {
	nc := jetStreamConn(t)
	r := newPipelineRig(t, nc, nil)
	r.pub.afterSend = func(b *fastBatch) {
		b.mu.Lock()
		commit := b.commitSeq > 0
		b.mu.Unlock()
		if !commit {
			return
		}
		wait.True(t, 10*time.Second, "the commit's acknowledgement", func() bool {
			b.mu.Lock()
			defer b.mu.Unlock()
			return b.done
		})
	}
	body := func(s uint64) []byte { return []byte(fmt.Sprintf(`{"n":%d}`, s)) }
	for _, seqs := range [][]uint64{{1}, seqRange(2, 40)} {
		st := r.batch(t, "ctl-c", body, seqs...)
		if got := processedOf(t, seqs, st); len(got) != len(seqs) {
			t.Fatalf("seqs %d-%d: %d of %d processed", seqs[0], seqs[len(seqs)-1], len(got), len(seqs))
		}
		if f := <-r.h.flushes; f.n != len(seqs) || f.err != nil {
			t.Fatalf("seqs %d-%d: flush %d, %v; want all %d", seqs[0], seqs[len(seqs)-1], f.n, f.err, len(seqs))
		}
	}
	if n := r.pool.Stats().TransientErrors; n != 0 {
		t.Fatalf("%d transient errors, want none", n)
	}
	checkStored(t, r.js, map[string][]uint64{"ctl-c": seqRange(1, 40)})
}

// disableBatches turns allow_batched (and allow_atomic) off on the parsed
// stream, as "allow_batched turned off by hand" in the design.
func disableBatches(t *testing.T, js jetstream.JetStream) {
	t.Helper()
	updateParsed(t, js, func(cfg *jetstream.StreamConfig) {
		cfg.AllowBatchPublish, cfg.AllowAtomicPublish = false, false
	})
}

// TestPipelinedStreamWithoutBatches: the stream takes no fast-ingest
// batches (allow_batched off). The design says records are then published
// one at a time; the batch that found out must finish too.
func TestPipelinedStreamWithoutBatches(t *testing.T) {
	nc := jetStreamConn(t)
	r := newPipelineRig(t, nc, nil)
	disableBatches(t, r.js)
	body := func(s uint64) []byte { return []byte(fmt.Sprintf(`{"n":%d}`, s)) }
	seqs := seqRange(1, 5)
	done := make(chan []byte, 1)
	go func() {
		st, err := r.try("ctl-n", body, seqs...)
		if err != nil {
			t.Error(err)
		}
		done <- st
	}()
	select {
	case st := <-done:
		allStoredOnce(t, r.js, "ctl-n", seqs, st)
	case <-time.After(15 * time.Second):
		t.Fatalf("the batch did not finish in 15 s (noFast=%v, transient errors %d, records stored %d)",
			r.pub.pipe.noFast.Load(), r.pool.Stats().TransientErrors, len(parsedRecords(t, r.js)))
	}
}

// TestRecordOverMaxPayloadIsPermanent: a record bigger than the NATS
// maximum payload (an exec child's output may be) can never be stored:
// its error is permanent, so the message is dead-lettered after its
// attempts instead of retried without end, its controller held.
func TestRecordOverMaxPayloadIsPermanent(t *testing.T) {
	nc := jetStreamConn(t)
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	p, err := NewPublisher(ctx, nc, PublisherConfig{JetStream: true, Timeout: 3 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	defer p.Close()
	m := fenceMsg(1, 1, 1)
	body := make([]byte, nc.MaxPayload()+1)
	if err := p.Output(ctx, m, body); !IsPermanent(err) {
		t.Fatalf("a record over the maximum payload: %v, want a permanent error", err)
	}
	if err := p.Dead(ctx, m, errors.New("too big")); err != nil {
		t.Fatalf("its dead letter: %v", err)
	}
}
