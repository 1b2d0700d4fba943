package parser

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"strconv"
	"sync"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/edgegate/edgegate/coord"
)

// Stream names and record headers of the publish handler.
const (
	StreamParsed = "EDGEGATE_PARSED"
	StreamDead   = "EDGEGATE_DEAD"

	HeaderController = "Edgegate-Controller"
	HeaderSeq        = "Edgegate-Seq"
	HeaderGen        = "Edgegate-Gen"
	HeaderFence      = "Edgegate-Fence"
	HeaderReceived   = "Edgegate-Received"
	HeaderError      = "Edgegate-Error"
)

// PublisherConfig configures a Publisher.
type PublisherConfig struct {
	// JetStream stores records in the streams EDGEGATE_PARSED and
	// EDGEGATE_DEAD. False means records are only published on core NATS.
	JetStream bool
	// Replicas is the stream replica count. Zero means 1.
	Replicas int
	// MaxBytes bounds the parsed stream; the oldest records are discarded
	// beyond it. Zero means no limit but the server's.
	MaxBytes int64
	// DeadMaxBytes bounds the dead-letter stream likewise.
	DeadMaxBytes int64
	// Duplicates is the streams' duplicate window: how long a record's
	// message ID is remembered (every ID in memory while it is). Zero
	// means 2 minutes.
	Duplicates time.Duration
	// Timeout bounds one publish. Zero means 5s.
	Timeout time.Duration
	// Logger receives the logs. Nil means discard.
	Logger *slog.Logger
}

// Publisher writes parsed records and dead letters.
type Publisher struct {
	cfg  PublisherConfig
	nc   *nats.Conn
	js   jetstream.JetStream
	stop context.CancelFunc
	wg   sync.WaitGroup
	pipe pipeState // pipelined batches (publishHandler.Pipeline)
	// beforeSend, set by tests, runs as a batch's record but the last
	// leaves: a fault in the middle of a batch.
	beforeSend func(*nats.Msg)
	// afterSend, set by tests, runs when a fast-ingest batch's record,
	// the last one included, has been handed to the connection: its
	// acknowledgement may be back before the sender goes on.
	afterSend func(*fastBatch)
}

// NewPublisher returns a Publisher on nc. With JetStream it creates or
// updates the two streams; in a cluster that can only happen once enough
// servers are up, so a failure is retried in the background until ctx is
// done, and publishes fail (transiently: they are retried) meanwhile.
func NewPublisher(ctx context.Context, nc *nats.Conn, cfg PublisherConfig) (*Publisher, error) {
	if cfg.Replicas <= 0 {
		cfg.Replicas = 1
	}
	if cfg.Timeout <= 0 {
		cfg.Timeout = 5 * time.Second
	}
	if cfg.Duplicates <= 0 {
		cfg.Duplicates = 2 * time.Minute
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	p := &Publisher{cfg: cfg, nc: nc}
	if !cfg.JetStream {
		return p, nil
	}
	js, err := jetstream.New(nc)
	if err != nil {
		return nil, fmt.Errorf("parser: jetstream: %w", err)
	}
	p.js = js
	// A short first try: in a cluster that is still forming, the streams
	// are created in the background instead of delaying the start.
	fctx, cancel := context.WithTimeout(ctx, 2*time.Second)
	err = p.ensureStreams(fctx)
	cancel()
	if err != nil {
		cfg.Logger.Warn("parser: JetStream streams not created yet, retrying in the background", "err", err)
		bctx, cancel := context.WithCancel(context.Background())
		p.stop = cancel
		p.wg.Go(func() {
			for backoff := 100 * time.Millisecond; ; backoff = min(2*backoff, 5*time.Second) {
				if !sleep(bctx, backoff) {
					return
				}
				if err := p.ensureStreams(bctx); err == nil {
					cfg.Logger.Info("parser: JetStream streams ready")
					return
				}
			}
		})
	}
	return p, nil
}

// Close stops creating the streams in the background and ends the
// subscription of pipelined batches. Safe to call twice.
func (p *Publisher) Close() {
	if p.stop != nil {
		p.stop()
	}
	p.wg.Wait()
	p.pipe.close()
}

func (p *Publisher) ensureStreams(ctx context.Context) error {
	ctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	for _, sc := range []jetstream.StreamConfig{
		{
			Name: StreamParsed, Subjects: []string{coord.ParsedSubject(">"), coord.GrantSubject(">")},
			Description: "edgegate parsed records, one subject per controller",
			MaxBytes:    orUnlimited(p.cfg.MaxBytes), Discard: jetstream.DiscardOld,
			Replicas: p.cfg.Replicas, Duplicates: p.cfg.Duplicates, Storage: jetstream.FileStorage,
			// Batches of records are published in fast-ingest batches
			// (fastIngest), or atomic ones when replicated (atomicBatch).
			AllowBatchPublish: true, AllowAtomicPublish: true,
			// A grant marker replaces the controller's last one (markGrant).
			AllowRollup: true,
			// Reads of a controller's last record (knownOf) are answered
			// by the stream itself, not queued behind the JetStream API:
			// one a lease grant, which with many controllers is most of
			// what a grant costs. Only on one replica: a replicated
			// stream's followers answer direct reads too, and may lag.
			AllowDirect: p.cfg.Replicas == 1,
		},
		{
			Name: StreamDead, Subjects: []string{coord.DeadSubject(">")},
			Description: "edgegate dead letters: messages the handler refused",
			MaxBytes:    orUnlimited(p.cfg.DeadMaxBytes), Discard: jetstream.DiscardOld,
			Replicas: p.cfg.Replicas, Duplicates: p.cfg.Duplicates, Storage: jetstream.FileStorage,
		},
	} {
		if _, err := p.js.CreateOrUpdateStream(ctx, sc); err != nil {
			return fmt.Errorf("parser: stream %s: %w", sc.Name, err)
		}
	}
	return nil
}

func orUnlimited(n int64) int64 {
	if n <= 0 {
		return -1
	}
	return n
}

func (p *Publisher) msg(subject string, m *Message, body []byte) *nats.Msg {
	return recordMsg(subject, m, body, []string{m.Controller}, []string{strconv.FormatUint(m.Gen, 10)}, []string{strconv.FormatUint(m.Fence, 10)})
}

// recordMsg is m's record on subject with body, its controller,
// generation and fence headers set to ctl, gen and fence.
func recordMsg(subject string, m *Message, body []byte, ctl, gen, fence []string) *nats.Msg {
	h := make(nats.Header, 8) // with the two of a condition
	h[HeaderController] = ctl
	h[HeaderSeq] = []string{strconv.FormatUint(m.Seq, 10)}
	h[HeaderGen] = gen
	h[HeaderFence] = fence
	h[HeaderReceived] = []string{strconv.FormatInt(m.Received.UnixMilli(), 10)}
	h[jetstream.MsgIDHeader] = []string{m.ID()}
	return &nats.Msg{Subject: subject, Header: h, Data: body}
}

func (p *Publisher) publish(ctx context.Context, msg *nats.Msg) error {
	ack, err := p.put(ctx, msg)
	if err != nil || ack == nil || !ack.Duplicate {
		return err
	}
	// Bounded like a publish: under an attempt's deadline alone, a read
	// that finds no stream leader (a cut route) would stall the
	// controller for parser.timeout.
	ctx, cancel := context.WithTimeout(ctx, p.cfg.Timeout)
	defer cancel()
	return p.sameAsStored(ctx, ack, msg, false)
}

// resendAfter is how long a publish waits for the stream's answer before
// it sends the message again, within its timeout (see put).
const resendAfter = time.Second

// put publishes msg, on core NATS without JetStream (the ack is then
// nil), and only while the lease is still valid: output of fenced work is
// not written.
//
// Why it sends again when no answer comes within resendAfter: a message
// that reaches a replicated stream while it has no leader (an appliance
// restarted, a route cut) is dropped without an answer, and the stream
// usually has a new leader within a second or two; waiting for the
// whole timeout instead held the controller for that long after the
// stream was back. A resend is stored once: records and dead letters
// carry their message ID, which the stream deduplicates before it checks
// a record's condition, and a grant marker that lands twice leaves the
// later one (markGrant).
func (p *Publisher) put(ctx context.Context, msg *nats.Msg) (*jetstream.PubAck, error) {
	ack, err := p.send(ctx, msg)
	if errors.Is(err, nats.ErrMaxPayload) {
		// No retry makes it fit (an exec child's output may be up to
		// 16 MiB): dead-lettered, not retried without end.
		err = Permanent(fmt.Errorf("a message of %d bytes, over the NATS maximum payload: %w", len(msg.Data), err))
	}
	return ack, err
}

func (p *Publisher) send(ctx context.Context, msg *nats.Msg) (*jetstream.PubAck, error) {
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	if p.js == nil {
		return nil, p.nc.PublishMsg(msg)
	}
	lease := ctx
	ctx, cancel := context.WithTimeout(ctx, p.cfg.Timeout)
	defer cancel()
	return unanswered(ctx, lease, func(ctx context.Context) (*jetstream.PubAck, error) {
		return p.js.PublishMsg(ctx, msg)
	})
}

// unanswered runs f, a request to JetStream, under ctx, and again each
// time resendAfter passes without an answer, while lease (the context of
// the lease the request is made under) is valid: see put. JetStream's
// own requests (a stream's info, a record read) are dropped likewise
// while the stream has no leader, and are safe to repeat.
func unanswered[T any](ctx, lease context.Context, f func(context.Context) (T, error)) (T, error) {
	for {
		tctx, cancel := context.WithTimeout(ctx, resendAfter)
		v, err := f(tctx)
		cancel()
		if err == nil || ctx.Err() != nil || !(errors.Is(err, context.DeadlineExceeded) || errors.Is(err, nats.ErrTimeout)) {
			return v, err
		}
		if err := lease.Err(); err != nil {
			return v, err
		}
	}
}

// sameAsStored checks a record the stream took for a duplicate of the one
// it stored under the same message ID: a resend of the same message is
// done, but another message under that ID (the ID names one message of
// one generation, so only a forgery or a bug makes one) must not be
// acknowledged as stored.
//
// With anyBody the stored record's body may differ: a handler's output
// (an exec child's) can differ between attempts at one message (a time
// it took from its clock), and the stream keeps the first.
func (p *Publisher) sameAsStored(ctx context.Context, ack *jetstream.PubAck, msg *nats.Msg, anyBody bool) error {
	st, err := p.stream(ctx, ack.Stream)
	if err != nil {
		return err
	}
	stored, err := unanswered(ctx, ctx, func(ctx context.Context) (*jetstream.RawStreamMsg, error) { return st.GetMsg(ctx, ack.Sequence) })
	if errors.Is(err, jetstream.ErrMsgNotFound) {
		return nil // stored, then discarded by the stream's limits
	}
	if err != nil {
		return fmt.Errorf("read the stored duplicate: %w", err)
	}
	id := msg.Header.Get(jetstream.MsgIDHeader)
	if stored.Subject != msg.Subject || !anyBody && !bytes.Equal(stored.Data, msg.Data) ||
		stored.Header.Get(jetstream.MsgIDHeader) != id ||
		stored.Header.Get(HeaderController) != msg.Header.Get(HeaderController) {
		return Permanent(fmt.Errorf("the stream holds another message under ID %s (stream seq %d)", id, ack.Sequence))
	}
	return nil
}

// Parsed publishes body as m's record on edgegate.parsed.<controller>. It
// has the signature of Emit.
func (p *Publisher) Parsed(ctx context.Context, m *Message, body []byte) error {
	return p.parsed(ctx, m, body, false)
}

// Output is Parsed for a handler's output (Emit of the exec handler): a
// record the stream holds already under m's ID counts as m's even when its
// body differs, since the output of another attempt at m may.
func (p *Publisher) Output(ctx context.Context, m *Message, body []byte) error {
	return p.parsed(ctx, m, body, true)
}

func (p *Publisher) parsed(ctx context.Context, m *Message, body []byte, anyBody bool) error {
	msg := p.msg(coord.ParsedSubject(m.Controller), m, body)
	ack, err := p.putRecord(ctx, m, msg)
	if err == nil && ack != nil && ack.Duplicate {
		ctx, cancel := context.WithTimeout(ctx, p.cfg.Timeout) // as in publish
		defer cancel()
		err = p.sameAsStored(ctx, ack, msg, anyBody)
	}
	if err != nil {
		return fmt.Errorf("parser: publish %s: %w", m.ID(), err)
	}
	return nil
}

// putRecord publishes msg, a record of m on its controller's subject, on
// the condition that no newer lease grant wrote since m's grant did
// (known.fence): a record whose lease ran out while it was in flight,
// once a newer grant wrote, is refused by the stream rather than stored
// after the newer grant's records. The refusal is a transient error,
// retried (reading the stream again) only while the lease is valid, which
// the lease store makes exclusive.
//
// Why the fences are not compared as well (refusing to write after a
// record with a higher one): an in-process lease store that restarts with
// its clock set back (a gateway without a real-time clock, before NTP)
// starts its fences below those in the stream, and every controller would
// stall until its records aged out.
func (p *Publisher) putRecord(ctx context.Context, m *Message, msg *nats.Msg) (*jetstream.PubAck, error) {
	if p.js == nil {
		return p.put(ctx, msg)
	}
	k, err := p.knownOf(ctx, m)
	if err != nil {
		return nil, err
	}
	k.condition(msg, m.Controller)
	ack, err := p.put(ctx, msg)
	s := &p.pipe
	s.mu.Lock()
	defer s.mu.Unlock()
	switch {
	case err != nil:
		// Not known whether it is stored: the next write reads the subject.
		s.known.drop(m.Controller)
	case ack != nil && !ack.Duplicate:
		k.any, k.sure, k.gen, k.seq, k.lastSeq = true, true, m.Gen, m.Seq, ack.Sequence
		s.known.put(m.Controller, k, time.Now())
	}
	return ack, err
}

// condition makes msg, a record of controller ctl, conditional on k's grant
// being the last to have written: on the grant's marker being the last on
// the controller's marker subject (a single-replica stream, see
// markGrant), or else on the record subject ending at k.lastSeq.
func (k known) condition(msg *nats.Msg, ctl string) {
	if k.mark > 0 {
		onMarker(msg, []string{strconv.FormatUint(k.mark, 10)}, []string{coord.GrantSubject(ctl)})
		return
	}
	expectAfter(msg, k.lastSeq)
}

// onMarker makes msg conditional on the grant marker at stream seq mark
// being the last on the marker subject grant (each a header's values).
func onMarker(msg *nats.Msg, mark, grant []string) {
	msg.Header[jetstream.ExpectedLastSubjSeqHeader] = mark
	msg.Header[jetstream.ExpectedLastSubjSeqSubjHeader] = grant
}

// expectAfter makes msg conditional on its subject's last record being
// stream seq last (0: none).
func expectAfter(msg *nats.Msg, last uint64) {
	msg.Header[jetstream.ExpectedLastSubjSeqHeader] = []string{strconv.FormatUint(last, 10)}
}

// Dead stores m as a dead letter on edgegate.dead.<controller>, with the
// cause in the Edgegate-Error header.
func (p *Publisher) Dead(ctx context.Context, m *Message, cause error) error {
	msg := p.msg(coord.DeadSubject(m.Controller), m, m.Payload)
	msg.Header[HeaderError] = []string{headerSafe(cause.Error())}
	if err := p.publish(ctx, msg); err != nil {
		return fmt.Errorf("parser: dead letter %s: %w", m.ID(), err)
	}
	return nil
}

// Handler returns the publish handler: every message becomes a record whose
// body is the payload. With validateJSON a payload that is not valid JSON
// is a permanent error (dead-lettered). A Teltonika packet becomes one
// record per AVL record instead (teltonikaRecords).
func (p *Publisher) Handler(validateJSON bool) Handler {
	h := HandlerFunc(func(ctx context.Context, m *Message) error {
		if m.Proto == coord.ProtoTeltonika {
			return p.teltonikaRecords(ctx, m)
		}
		if validateJSON && !json.Valid(m.Payload) {
			return Permanent(errors.New("payload is not valid JSON"))
		}
		return p.Parsed(ctx, m, m.Payload)
	})
	// A batch's records go out together and are waited for once
	// (publishHandler.Pipeline).
	return &publishHandler{Handler: h, p: p, validateJSON: validateJSON}
}

// Discard is the handler that does nothing, for benchmarks of the
// coordination itself.
func Discard() Handler {
	return HandlerFunc(func(context.Context, *Message) error { return nil })
}

// headerSafe keeps a header value on one line and bounded.
func headerSafe(s string) string {
	b := []byte(s)
	for i, c := range b {
		if c == '\r' || c == '\n' {
			b[i] = ' '
		}
	}
	if len(b) > 1024 {
		b = b[:1024]
	}
	return string(b)
}
