package parser

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nuid"
)

// fastIngest publishes records in JetStream fast-ingest batches
// (nats-server 2.14+, a stream with allow_batched; ADR-50), the protocol
// the publish handler pipelines a batch of one controller's records with.
//
// Why this protocol: a batch's records are sent back to back, without
// waiting for an acknowledgement each, and the server still keeps them an
// in-order prefix. With "gap: fail", the first record the server refuses
// or never gets (a stream limit, a lost connection, a restart, a new
// stream leader) ends the batch: no later record of it is stored, and the
// commit's acknowledgement counts the records stored (or found
// duplicates). Plain asynchronous publishes have no such guard: a record
// after a failed one can be stored, and the failed one's retry then lands
// after it. Atomic batches stage the whole batch and refuse all of it on
// one duplicate ID (a resend after a partial failure is exactly that),
// and were the slowest on a single-node file stream (BENCHMARKS.md).
//
// Why not orbit.go's jetstreamext.FastPublisher: it subscribes to an
// inbox per batch and waits for the first record's acknowledgement
// before sending the rest, two round trips and a subscription per batch
// more than a parser batch of a few dozen records can afford. Here one
// subscription serves every batch of the connection, and nothing is
// waited for before the commit.
//
// The reply subject of every record carries the protocol, as the server
// parses it: <prefix>.<batch id>.<flow>.fail.<batch seq>.<op>.$FI.
type fastIngest struct {
	nc     *nats.Conn
	prefix string

	mu      sync.Mutex
	sub     *nats.Subscription
	batches map[string]*fastBatch
}

// Operations of the fast-ingest protocol (the <op> of a reply subject).
const (
	fastOpStart     = 0
	fastOpAppend    = 1
	fastOpCommit    = 2 // the batch's last record, which commits it
	fastOpCommitEOB = 3 // end of batch: commits what came before, stores nothing
)

// fastFlow is the most records between two flow acknowledgements the
// publisher asks for; the server sends them more often when several
// batches share the stream.
const fastFlow = 100

// fastWindow bounds the records of a batch sent and not yet reported
// stored, at least: a default batch (parser.batch, 256 messages) never
// waits for the server's flow acknowledgements, a batch of thousands of
// records does. The server's own flow interval, doubled, raises it.
const fastWindow = 256

func newFastIngest(nc *nats.Conn) *fastIngest {
	return &fastIngest{nc: nc, prefix: nc.NewInbox(), batches: make(map[string]*fastBatch)}
}

// close ends the subscription; batches in flight then time out.
func (f *fastIngest) close() {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.sub != nil {
		f.sub.Unsubscribe()
		f.sub = nil
	}
}

// begin starts a batch of records on subject.
func (f *fastIngest) begin(subject string) (*fastBatch, error) {
	b := &fastBatch{f: f, id: nuid.Next(), subject: subject, wake: make(chan struct{}, 1)}
	b.replyBase = f.prefix + "." + b.id + "." + strconv.Itoa(fastFlow) + ".fail."
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.sub == nil {
		sub, err := f.nc.Subscribe(f.prefix+".>", f.onReply)
		if err != nil {
			return nil, fmt.Errorf("fast ingest: subscribe: %w", err)
		}
		// Replies are few and small, and one lost is a batch retried:
		// never drop them as a slow consumer.
		sub.SetPendingLimits(-1, -1)
		f.sub = sub
	}
	f.batches[b.id] = b
	return b, nil
}

func (f *fastIngest) forget(b *fastBatch) {
	f.mu.Lock()
	delete(f.batches, b.id)
	f.mu.Unlock()
}

// fastReply is any reply of the protocol: a flow acknowledgement
// ("ack"), a gap or an error report ("gap", "err"), or, without a type, a
// PubAck: the commit's, or an error for one record.
type fastReply struct {
	Type  string        `json:"type"`
	Seq   uint64        `json:"seq"` // batch seq ("ack", "err"), stream seq (PubAck)
	Msgs  uint64        `json:"msgs"`
	Batch string        `json:"batch"`
	Count uint64        `json:"count"`
	Error *fastAPIError `json:"error"`
}

type fastAPIError struct {
	Code        int    `json:"code"`
	ErrCode     uint16 `json:"err_code"`
	Description string `json:"description"`
}

func (e *fastAPIError) Error() string {
	return fmt.Sprintf("%s (code %d, err_code %d)", e.Description, e.Code, e.ErrCode)
}

// JetStream error codes of a server or stream without fast ingest.
const (
	errCodeBatchDisabled       = 10205
	errCodeBatchInvalidPattern = 10206
)

// errNoFastIngest says the stream or the server does not take fast-ingest
// batches; the publisher then waits for each record's acknowledgement.
var errNoFastIngest = errors.New("the stream takes no fast-ingest batches")

// onReply routes a reply to its batch, by the batch ID in its subject.
func (f *fastIngest) onReply(m *nats.Msg) {
	rest, ok := strings.CutPrefix(m.Subject, f.prefix+".")
	if !ok {
		return
	}
	id, rest, _ := strings.Cut(rest, ".")
	f.mu.Lock()
	b := f.batches[id]
	f.mu.Unlock()
	if b == nil {
		return // a batch already over: its later records' refusals
	}
	// The record the reply answers: <flow>.fail.<seq>.<op>.$FI.
	var seq uint64
	if parts := strings.Split(rest, "."); len(parts) == 5 {
		seq, _ = strconv.ParseUint(parts[2], 10, 64)
	}
	var r fastReply
	if err := json.Unmarshal(m.Data, &r); err != nil {
		b.fail(seq, fmt.Errorf("fast ingest: unreadable reply %q: %w", m.Data, err))
		return
	}
	b.reply(seq, &r)
}

// fastBatch is one fast-ingest batch: its records go out with send, and
// commit ends it and waits for the count stored. Only its own goroutine
// calls send and commit; replies arrive on the subscription's.
type fastBatch struct {
	f         *fastIngest
	id        string
	subject   string
	replyBase string

	mu        sync.Mutex
	sent      uint64 // records sent (the batch seq of the last); written by put only
	commitSeq uint64 // the batch seq of the committing record; 0: none
	acked     uint64 // records the server reported stored, a prefix
	flow      uint64 // the server's flow acknowledgement interval
	failed    uint64 // the first record refused; 0: none
	ferr      error  // why
	done      bool   // over: count and err are final
	count     uint64 // records stored, a prefix (when done)
	last      uint64 // the stream seq of the last record stored (commit)
	err       error
	wake      chan struct{} // a flow acknowledgement or the end arrived

	beforeSend func(*nats.Msg)  // see Publisher.beforeSend
	afterSend  func(*fastBatch) // see Publisher.afterSend
}

func (b *fastBatch) replySubject(seq uint64, op int) string {
	var buf [96]byte
	s := append(buf[:0], b.replyBase...)
	s = strconv.AppendUint(s, seq, 10)
	s = append(s, '.')
	s = strconv.AppendInt(s, int64(op), 10)
	s = append(s, ".$FI"...)
	return string(s)
}

func (b *fastBatch) signal() {
	select {
	case b.wake <- struct{}{}:
	default:
	}
}

// reply takes a reply to record seq (0: not known).
func (b *fastBatch) reply(seq uint64, r *fastReply) {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.done {
		return
	}
	switch r.Type {
	case "ack":
		b.acked = max(b.acked, r.Seq)
		b.flow = r.Msgs
	case "gap":
		// Informational: with gap "fail" the batch ends, and its commit
		// says how far it got.
		if b.ferr == nil {
			b.ferr = errors.New("fast ingest: the server missed a record of the batch")
		}
	case "err":
		var err error = errors.New("fast ingest: a record was refused")
		if r.Error != nil {
			err = r.Error
		}
		b.failLocked(r.Seq, err)
	case "":
		switch {
		case r.Error != nil:
			b.failLocked(seq, r.Error)
			// A refused first record ends the batch at once; a refused
			// commit (the batch already gone: a restart) ends it too.
			if seq == 1 || seq > b.sent || seq == b.commitSeq {
				b.finishLocked(0, nil)
			}
		case r.Batch == "":
			// A PubAck of a plain publish: a server that ignores the
			// protocol stored the record as one. Nothing says which of
			// the others it stored.
			b.failLocked(seq, errNoFastIngest)
			b.finishLocked(0, nil)
		default:
			b.finishLocked(r.Count, nil)
			b.last = r.Seq
		}
	}
	b.signal()
}

func (b *fastBatch) fail(seq uint64, err error) {
	b.mu.Lock()
	b.failLocked(seq, err)
	b.mu.Unlock()
	b.signal()
}

func (b *fastBatch) failLocked(seq uint64, err error) {
	if seq == 0 {
		seq = b.acked + 1
	}
	if b.failed == 0 || seq < b.failed {
		b.failed = seq
		if ae, ok := err.(*fastAPIError); ok && (ae.ErrCode == errCodeBatchDisabled || ae.ErrCode == errCodeBatchInvalidPattern) {
			err = fmt.Errorf("%w: %w", errNoFastIngest, ae)
		}
		b.ferr = err
	}
}

// finishLocked ends the batch with count records stored as the commit
// says (0: take what the flow acknowledgements said), or err.
func (b *fastBatch) finishLocked(count uint64, err error) {
	if count == 0 {
		count = b.acked
	}
	if b.failed > 0 {
		count = min(count, b.failed-1)
	}
	b.done, b.count = true, min(count, b.sent)
	if err != nil && b.ferr == nil {
		b.ferr = err
	}
	switch {
	case b.count == b.sent:
		b.err = nil
	case b.ferr != nil:
		b.err = b.ferr
	default:
		b.err = fmt.Errorf("fast ingest: %d of %d records stored", b.count, b.sent)
	}
}

// send publishes msg as the batch's next record. It waits while too many
// records are not yet reported stored (see fastWindow), and fails when the
// batch is already over (a record refused: none after it is stored).
func (b *fastBatch) send(ctx context.Context, msg *nats.Msg, timeout time.Duration) error {
	return b.put(ctx, msg, timeout, false)
}

// put is send, and with commit the record commits the batch.
func (b *fastBatch) put(ctx context.Context, msg *nats.Msg, timeout time.Duration, commit bool) error {
	var t *time.Timer
	for {
		b.mu.Lock()
		done, err := b.done, b.ferr
		window := max(2*b.flow, fastWindow)
		wait := b.sent-b.acked >= window
		b.mu.Unlock()
		if done || err != nil {
			if err == nil {
				err = errors.New("fast ingest: batch ended early")
			}
			return err
		}
		if !wait {
			break
		}
		if t == nil {
			t = time.NewTimer(timeout)
			defer t.Stop()
		}
		select {
		case <-b.wake:
		case <-ctx.Done():
			return ctx.Err()
		case <-t.C:
			return errors.New("fast ingest: no flow acknowledgement within the publish timeout")
		}
	}
	op := fastOpAppend
	switch {
	case commit:
		op = fastOpCommit
	case b.sent == 0:
		op = fastOpStart
	}
	msg.Reply = b.replySubject(b.sent+1, op)
	if !commit && b.beforeSend != nil {
		b.beforeSend(msg)
	}
	// Counted as sent before it is: its acknowledgement, or the commit's
	// count, can be back before this goroutine runs again, and must then
	// find the record among those sent.
	b.mu.Lock()
	b.sent++
	if commit {
		b.commitSeq = b.sent
	}
	b.mu.Unlock()
	if err := b.f.nc.PublishMsg(msg); err != nil {
		// Not sent, so never answered.
		b.mu.Lock()
		b.sent--
		if commit {
			b.commitSeq = 0
		}
		b.mu.Unlock()
		return err
	}
	if b.afterSend != nil {
		b.afterSend(b)
	}
	return nil
}

// commit ends the batch with msg as its last record (nil: with an end of
// batch, after the records sent) and waits, for up to timeout, for the
// count of its records stored: a prefix of them, in order. err says why
// the next one is not stored (nil when all are). last is the stream seq
// of the last record stored (0 when not known).
//
// A last record that commits saves the end of batch's message, and for a
// batch of one record the server's first flow acknowledgement: it answers
// as to a single publish.
func (b *fastBatch) commit(ctx context.Context, msg *nats.Msg, timeout time.Duration) (count, last uint64, err error) {
	defer b.f.forget(b)
	eob := msg == nil
	if msg != nil {
		if err := b.put(ctx, msg, timeout, true); err != nil {
			// Not sent: the batch ended already (a record refused), or the
			// connection failed. An end of batch lets the server go.
			eob = true
			b.mu.Lock()
			if b.sent == 0 {
				b.finishLocked(0, err)
			} else if b.ferr == nil {
				b.ferr = err
			}
			b.mu.Unlock()
		}
	}
	b.mu.Lock()
	eob = eob && b.sent > 0 && !b.done
	b.mu.Unlock()
	if eob {
		m := nats.NewMsg(b.subject)
		m.Reply = b.replySubject(b.sent+1, fastOpCommitEOB)
		if err := b.f.nc.PublishMsg(m); err != nil {
			b.mu.Lock()
			b.finishLocked(0, err)
			b.mu.Unlock()
		}
	}
	t := time.NewTimer(timeout)
	defer t.Stop()
	for {
		b.mu.Lock()
		if b.done {
			count, last, err = b.count, b.last, b.err
			b.mu.Unlock()
			return count, last, err
		}
		b.mu.Unlock()
		select {
		case <-b.wake:
			continue
		case <-ctx.Done():
			err = ctx.Err()
		case <-t.C:
			err = fmt.Errorf("fast ingest: no commit acknowledgement within %v", timeout)
		}
		// What the flow acknowledgements said is stored is: the rest
		// may still be, later (a retry then finds duplicates).
		b.mu.Lock()
		b.finishLocked(0, err)
		count, err = b.count, b.err
		b.mu.Unlock()
		return count, 0, err
	}
}

// isNoFastIngest reports whether err says the stream takes no fast-ingest
// batches.
func isNoFastIngest(err error) bool { return errors.Is(err, errNoFastIngest) }
