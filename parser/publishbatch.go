package parser

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/edgegate/edgegate/coord"
)

// publishHandler is the publish handler (Publisher.Handler): Handle
// stores one message and waits for the stream; Pipeline stores a batch's
// records in one fast-ingest batch (fastIngest) and waits once.
type publishHandler struct {
	Handler      // one message at a time, each acknowledgement waited for
	p            *Publisher
	validateJSON bool
}

// Pipeline implements BatchHandler. Without JetStream (core NATS: nothing
// is waited for anyway) or once the stream refused fast ingest, there is
// none.
func (h *publishHandler) Pipeline() Pipeline {
	if h.p.js == nil || h.p.pipe.noFast.Load() {
		return nil
	}
	return &publishPipeline{h: h, p: h.p}
}

// pipeState is what a Publisher keeps for pipelined batches.
type pipeState struct {
	// noFast is set once the stream took no fast-ingest batch (a server
	// before 2.14 in the cluster, allow_batched turned off by hand):
	// records then go one at a time, as Handle stores them.
	noFast atomic.Bool

	mu      sync.Mutex
	fast    *fastIngest                 // made on first use
	streams map[string]jetstream.Stream // by name, each looked up on first use (Publisher.stream)
	known   knownCache
}

func (s *pipeState) close() {
	s.mu.Lock()
	f := s.fast
	s.mu.Unlock()
	if f != nil {
		f.close()
	}
}

// known is what the parsed stream holds of a controller, as a pipeline
// found or left it under one lease grant (fence): whether it holds a
// record, and the generation and seq of the last one.
//
// Why a pipeline needs it: a fast-ingest batch takes a record whose
// message ID the stream already holds for a duplicate, silently (no
// acknowledgement per record says so). A resend of the same message is
// meant to be taken so, but another message under the same ID must not be
// acknowledged as stored (see sameAsStored). So only messages surely not
// stored yet go into a fast-ingest batch: those after the last record
// stored (a seq above its seq in its generation, or a newer generation);
// the others (a resend after a fault) are published one at a time and
// checked. Records are stored in device order, so the last one bounds
// what is stored.
//
// It also holds what every write under the grant is conditional on
// (known.condition): the stream seq of the grant's marker on a
// single-replica stream (markGrant), or else of that last record.
type known struct {
	fence   uint64
	any     bool // the stream holds a record of the controller
	sure    bool // its generation and seq are read (false: every message may be stored)
	gen     uint64
	seq     uint64
	lastSeq uint64 // the stream seq of the last record; 0: none
	mark    uint64 // the stream seq of the grant's marker; 0: none (replicated)
}

// mayHave reports whether the stream may have a record of m already.
func (k known) mayHave(m *Message) bool {
	switch {
	case !k.any:
		return false
	case !k.sure:
		return true
	}
	return m.Gen < k.gen || (m.Gen == k.gen && m.Seq <= k.seq)
}

// knownTTL is how long an unused entry of knownCache is kept at least: a
// lease is kept between batches for the socket's hold (lease.ttl / 2),
// and an entry is only good under its lease grant.
const knownTTL = 30 * time.Second

// knownCache holds known by controller: what a pipeline left under a lease
// grant, for the controller's next batch under it. Entries unused for
// knownTTL to twice that go, so that it holds about the controllers of the
// last minute (a batch without an entry reads the stream once).
type knownCache struct {
	cur, prev map[string]known
	swapped   time.Time
}

func (c *knownCache) age(now time.Time) {
	if c.cur == nil || now.Sub(c.swapped) > knownTTL {
		c.prev, c.cur, c.swapped = c.cur, make(map[string]known), now
	}
}

func (c *knownCache) get(id string, now time.Time) (known, bool) {
	c.age(now)
	if k, ok := c.cur[id]; ok {
		return k, true
	}
	k, ok := c.prev[id]
	if ok {
		c.cur[id] = k
		delete(c.prev, id)
	}
	return k, ok
}

func (c *knownCache) put(id string, k known, now time.Time) {
	c.age(now)
	delete(c.prev, id)
	c.cur[id] = k
}

func (c *knownCache) drop(id string) {
	delete(c.cur, id)
	delete(c.prev, id)
}

// knownOf returns what the stream holds of m's controller: the entry a
// pipeline left under m's lease grant, or else the stream's last record on
// the controller's subject (one read) and, on a single-replica stream, the
// grant's marker written (markGrant).
//
// On a single-replica stream, an entry an earlier grant left here stands
// for the read: the new grant's marker is conditional on the controller's
// last record being the one the entry names (its stream seq), so the
// stream itself says whether the entry still holds. When another grant
// stored a record since (the controller was on another appliance), the
// marker is refused and the stream is read. A controller that comes back
// to the same appliance (a device reporting less often than its lease is
// kept, many controllers at once) so costs one stream round trip a grant,
// not two, and no block of the file store is loaded for the read.
func (p *Publisher) knownOf(ctx context.Context, m *Message) (known, error) {
	s := &p.pipe
	s.mu.Lock()
	k, ok := s.known.get(m.Controller, time.Now())
	s.mu.Unlock()
	if ok && k.fence == m.Fence {
		return k, nil
	}
	lease := ctx
	if ok && p.cfg.Replicas == 1 {
		mark, err := p.markGrant(lease, m, k.lastSeq)
		switch {
		case err == nil:
			k.fence, k.mark = m.Fence, mark
			s.mu.Lock()
			s.known.put(m.Controller, k, time.Now())
			s.mu.Unlock()
			return k, nil
		case !isWrongLastSeq(err):
			return known{}, err
		}
		s.mu.Lock()
		s.known.drop(m.Controller)
		s.mu.Unlock()
	}
	ctx, cancel := context.WithTimeout(ctx, p.cfg.Timeout) // as in publish
	defer cancel()
	st, err := p.stream(ctx, StreamParsed)
	if err != nil {
		return known{}, err
	}
	k = known{fence: m.Fence}
	last, err := unanswered(ctx, ctx, func(ctx context.Context) (*jetstream.RawStreamMsg, error) {
		return st.GetLastMsgForSubject(ctx, coord.ParsedSubject(m.Controller))
	})
	switch {
	case errors.Is(err, jetstream.ErrMsgNotFound):
	case err != nil:
		return known{}, fmt.Errorf("read the last record of %s: %w", m.Controller, err)
	default:
		k.any, k.lastSeq = true, directSeq(last)
		gen, err1 := strconv.ParseUint(last.Header.Get(HeaderGen), 10, 64)
		seq, err2 := strconv.ParseUint(last.Header.Get(HeaderSeq), 10, 64)
		if err1 == nil && err2 == nil {
			k.sure, k.gen, k.seq = true, gen, seq
		}
	}
	if p.cfg.Replicas == 1 {
		if k.mark, err = p.markGrant(lease, m, k.lastSeq); err != nil {
			return known{}, err
		}
	}
	s.mu.Lock()
	s.known.put(m.Controller, k, time.Now())
	s.mu.Unlock()
	return k, nil
}

// directSeq is the stream seq of a message read directly. The server
// appends its Nats-Sequence header to the headers stored with the
// message, which may hold one already (a copy of a direct read's answer
// stored on a record subject); nats.go takes the first, so the last is
// read here: taking the copied one made every grant's marker of the
// controller refused, for good.
func directSeq(m *jetstream.RawStreamMsg) uint64 {
	if v := m.Header.Values(jetstream.SequenceHeader); len(v) > 1 {
		if n, err := strconv.ParseUint(v[len(v)-1], 10, 64); err == nil {
			return n
		}
	}
	return m.Sequence
}

// isWrongLastSeq reports whether err is the stream's refusal of a write
// whose condition on a subject's last message did not hold.
func isWrongLastSeq(err error) bool {
	var ae *jetstream.APIError
	return errors.As(err, &ae) && ae.ErrorCode == jetstream.JSErrCodeStreamWrongLastSequence
}

// stream returns the stream called name, looked up (asked again while
// no answer comes: unanswered) on first use only.
func (p *Publisher) stream(ctx context.Context, name string) (jetstream.Stream, error) {
	s := &p.pipe
	s.mu.Lock()
	st := s.streams[name]
	s.mu.Unlock()
	if st != nil {
		return st, nil
	}
	st, err := unanswered(ctx, ctx, func(ctx context.Context) (jetstream.Stream, error) { return p.js.Stream(ctx, name) })
	if err != nil {
		return nil, fmt.Errorf("stream %s: %w", name, err)
	}
	s.mu.Lock()
	if s.streams == nil {
		s.streams = make(map[string]jetstream.Stream)
	}
	s.streams[name] = st
	s.mu.Unlock()
	return st, nil
}

// markGrant writes the marker of m's lease grant on the controller's
// marker subject (coord.GrantSubject) and returns its stream seq. Every
// record under the grant is then conditional on the marker being the last
// there (known.condition), and a newer grant's marker makes the stream
// refuse the rest of them.
//
// Why a marker on a single-replica stream: a fast-ingest batch stores its
// records as they come, and only a condition on each record keeps the
// rest of a batch out once a newer grant has written (a publisher stopped
// in the middle of one past its lease: a paused process). A record's own
// subject cannot carry it, since a record's condition would name the
// stream seq of the record before it, not known until that one is
// stored. A replicated stream takes atomic batches instead (atomicBatch):
// there a proposed condition on the marker would make the next record
// wait until the first is applied.
//
// The marker is conditional on the controller's last record being the
// one the grant read (after, its stream seq; 0: none): a grant whose
// marker lands after a newer grant stored a record is refused, so that
// its records never follow the newer grant's. A stale marker that lands
// before the newer grant stored any only makes the newer grant's first
// batch fail and mark again (its records then follow the stale ones).
// Conditioning on the record subject, not on the last marker, saves the
// read of the marker a grant would otherwise need: one stream round trip
// a grant fewer, which is what a grant costs with many controllers. It
// rolls up the subject, so that the stream keeps one marker per
// controller, and a resend (put) that lands twice leaves the later one,
// whose seq the grant then holds. It is written only while lease, the
// context of m's lease, is valid: a marker written past the lease would
// fence out the newer grant's records.
func (p *Publisher) markGrant(lease context.Context, m *Message, after uint64) (uint64, error) {
	msg := nats.NewMsg(coord.GrantSubject(m.Controller))
	msg.Header[HeaderController] = []string{m.Controller}
	msg.Header[HeaderFence] = []string{strconv.FormatUint(m.Fence, 10)}
	msg.Header[jetstream.MsgRollup] = []string{jetstream.MsgRollupSubject}
	expectAfter(msg, after)
	msg.Header[jetstream.ExpectedLastSubjSeqSubjHeader] = []string{coord.ParsedSubject(m.Controller)}
	ack, err := p.put(lease, msg)
	if err != nil {
		return 0, fmt.Errorf("mark the grant of %s: %w", m.Controller, err)
	}
	return ack.Sequence, nil
}

// publishPipeline is the publish handler's pipeline of one batch: the
// messages that may be stored already are stored one at a time (Handle),
// the others as the records of one batch, committed and waited for by
// Flush. The ones stored one at a time come first: a batch's messages are
// in seq order, and those come before the first that is surely not
// stored.
//
// Every record of a fast-ingest batch (a single-replica stream) is
// conditional on the grant's marker (markGrant): a newer grant's marker
// that lands before one of them makes the stream refuse it and the rest.
// On a replicated stream the batch is atomic, kept until the commit, and
// its first record is conditional on the subject's last (putRecord),
// which keeps the condition true of every record (atomicBatch).
type publishPipeline struct {
	shared sharedHeaders
	h      *publishHandler
	p      *Publisher
	synced int         // messages stored one at a time since the last Flush
	b      recordBatch // the batch since the last Flush; nil: none
	unsent *nats.Msg   // its last record, not sent yet (it commits b)
	base   known       // what the stream had of the controller before b
	ctrl   string
	last   known // the stream's state once b's records are all stored
	looked bool  // base is read for the messages since the last Flush
}

// Start implements Pipeline.
func (pp *publishPipeline) Start(ctx context.Context, m *Message) error {
	// The lease must still be valid: output of fenced work is not written.
	if err := ctx.Err(); err != nil {
		return err
	}
	if m.Proto == coord.ProtoTeltonika {
		// A packet's records are stored one at a time (teltonikaRecords).
		return pp.alone(ctx, m)
	}
	if pp.h.validateJSON && !json.Valid(m.Payload) {
		return Permanent(errors.New("payload is not valid JSON"))
	}
	if !pp.looked {
		k, err := pp.p.knownOf(ctx, m)
		if err != nil {
			return fmt.Errorf("parser: publish %s: %w", m.ID(), err)
		}
		pp.base, pp.looked = k, true
	}
	// A stream found to take no batches (noFast, perhaps by this very
	// pipeline's last Flush): the pool's retry of the message comes back
	// here, and must not try another batch.
	if pp.base.mayHave(m) || pp.b == nil && pp.p.pipe.noFast.Load() {
		return pp.alone(ctx, m)
	}
	msg := pp.record(m)
	// The batch is conditional on this grant being the last to have
	// written (putRecord): its first record, and in a fast-ingest batch
	// each one (markGrant).
	if pp.b == nil || pp.base.mark > 0 {
		pp.shared.condition(msg, pp.base, m.Controller)
	}
	if pp.b == nil {
		if err := pp.begin(m); err != nil {
			return err
		}
	} else {
		// The record before this one goes out now; this one waits, so
		// that the batch's last record can commit it (fastBatch.commit).
		if err := pp.b.send(ctx, pp.unsent, pp.p.cfg.Timeout); err != nil {
			// Neither that record nor this one is sent.
			pp.unsent = nil
			return fmt.Errorf("parser: publish %s: %w", m.ID(), err)
		}
	}
	pp.unsent = msg
	pp.last = known{fence: m.Fence, any: true, sure: true, gen: m.Gen, seq: m.Seq, mark: pp.base.mark}
	return nil
}

// sharedHeaders are the header values every record of a batch has alike
// (one assignment: one controller, generation and grant), made once a
// batch rather than once a record: the values of a record's header are a
// slice each, and at full speed a record's allocations are much of the
// collector's work. The slices are shared, never changed; a header set
// later gets a slice of its own.
type sharedHeaders struct {
	subject            string
	ctlV, genV, fenceV []string
	mark               uint64   // the marker markV and grantV name
	markV, grantV      []string // the condition on the grant's marker
}

// record is m's record, with the values it shares with the batch's other
// records.
func (pp *publishPipeline) record(m *Message) *nats.Msg {
	r := &pp.shared
	if r.ctlV == nil {
		r.subject, r.ctlV = coord.ParsedSubject(m.Controller), []string{m.Controller}
		r.genV, r.fenceV = []string{strconv.FormatUint(m.Gen, 10)}, []string{strconv.FormatUint(m.Fence, 10)}
	}
	return recordMsg(r.subject, m, m.Payload, r.ctlV, r.genV, r.fenceV)
}

// condition makes msg conditional as k.condition does, with the values of
// the condition on a grant's marker shared by the batch's records (the
// grant may mark again within a batch, after a record was refused).
func (r *sharedHeaders) condition(msg *nats.Msg, k known, ctl string) {
	if k.mark == 0 {
		k.condition(msg, ctl)
		return
	}
	if r.mark != k.mark {
		r.mark, r.markV, r.grantV = k.mark, []string{strconv.FormatUint(k.mark, 10)}, []string{coord.GrantSubject(ctl)}
	}
	onMarker(msg, r.markV, r.grantV)
}

// begin starts the batch m's record is the first of: an atomic one on a
// replicated stream (see atomicBatch), else a fast-ingest one.
func (pp *publishPipeline) begin(m *Message) error {
	if pp.p.cfg.Replicas > 1 {
		b := newAtomicBatch(pp.p.nc)
		b.beforeSend = pp.p.beforeSend
		pp.b = b
	} else {
		b, err := pp.p.pipe.ingest(pp.p.nc).begin(coord.ParsedSubject(m.Controller))
		if err != nil {
			return err
		}
		b.beforeSend, b.afterSend = pp.p.beforeSend, pp.p.afterSend
		pp.b = b
	}
	pp.ctrl = m.Controller
	return nil
}

// alone stores m waiting for the stream (Handle), after the records
// already in the batch, which must be stored first: m must not overtake
// one of them that fails.
func (pp *publishPipeline) alone(ctx context.Context, m *Message) error {
	if pp.b != nil {
		return errors.New("parser: a message to store alone after pipelined ones (flushed first, then retried)")
	}
	if err := pp.h.Handler.Handle(ctx, m); err != nil {
		return err
	}
	pp.synced++
	// The subject moved on: the next message reads where to (putRecord
	// left it in the cache).
	pp.looked = false
	return nil
}

// Flush implements Pipeline.
func (pp *publishPipeline) Flush(ctx context.Context) (int, error) {
	n := pp.synced
	pp.synced, pp.looked = 0, false
	b := pp.b
	if b == nil {
		return n, nil
	}
	unsent := pp.unsent
	pp.b, pp.unsent = nil, nil
	count, last, err := b.commit(ctx, unsent, pp.p.cfg.Timeout)
	s := &pp.p.pipe
	s.mu.Lock()
	if err == nil && last > 0 {
		pp.last.lastSeq = last
		s.known.put(pp.ctrl, pp.last, time.Now())
	} else {
		// Not known how far the stream got: the next batch reads it.
		s.known.drop(pp.ctrl)
	}
	s.mu.Unlock()
	if isNoFastIngest(err) && s.noFast.CompareAndSwap(false, true) {
		pp.p.cfg.Logger.Warn("parser: the parsed stream takes no batches (allow_batched, allow_atomic; nats-server 2.14+): records are published one at a time", "err", err)
	}
	if err != nil {
		err = fmt.Errorf("parser: publish to %s: %w", pp.ctrl, err)
	}
	return n + int(count), err
}

// Close implements Pipeline.
func (pp *publishPipeline) Close() {
	if pp.b != nil {
		// Not flushed (the pool stopped early): end the batch on the
		// server, waiting for nothing.
		ctx, cancel := context.WithCancel(context.Background())
		cancel()
		pp.b.commit(ctx, nil, 0)
		pp.b, pp.unsent = nil, nil
	}
}

// ingest returns the fast-ingest publisher on nc.
func (s *pipeState) ingest(nc *nats.Conn) *fastIngest {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.fast == nil {
		s.fast = newFastIngest(nc)
	}
	return s.fast
}
