package parser

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strconv"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nuid"
)

// recordBatch is a batch of one controller's records, as a pipeline sends
// them: a fastBatch, or an atomicBatch on a replicated stream.
type recordBatch interface {
	// send adds msg as the batch's next record.
	send(ctx context.Context, msg *nats.Msg, timeout time.Duration) error
	// commit ends the batch with msg as its last record (nil: none) and
	// waits for the count of its records stored, a prefix, and the stream
	// seq of the last one (0: not known).
	commit(ctx context.Context, msg *nats.Msg, timeout time.Duration) (count, last uint64, err error)
}

// Headers of the atomic batch protocol (ADR-50).
const (
	headerBatchID     = "Nats-Batch-Id"
	headerBatchSeq    = "Nats-Batch-Sequence"
	headerBatchCommit = "Nats-Batch-Commit"
)

// JetStream error code of a stream that takes no atomic batches.
const errCodeAtomicDisabled = 10174

// atomicBatch is one JetStream atomic batch (nats-server 2.12+, a stream
// with allow_atomic): its records are kept until the commit, then sent
// back to back, and the stream stores all of them or none.
//
// Why a replicated stream gets these rather than fast-ingest batches: the
// batch's first record is conditional on the subject's last record (see
// putRecord), and only an atomic batch keeps that condition true of every
// record after it. A fast-ingest batch stores its records as they come,
// so when the process sending one stops mid-batch past its lease (a pause,
// a stalled route) a newer grant's records can land between them, and the
// rest of the old batch after those. Staging costs a replicated stream
// nothing measurable (BENCHMARKS.md); a single-replica file stream stages
// each batch in files of its own, too slow to use there.
type atomicBatch struct {
	nc         *nats.Conn
	msgs       []*nats.Msg
	beforeSend func(*nats.Msg) // see Publisher.beforeSend
}

func newAtomicBatch(nc *nats.Conn) *atomicBatch { return &atomicBatch{nc: nc} }

func (b *atomicBatch) send(_ context.Context, msg *nats.Msg, _ time.Duration) error {
	b.msgs = append(b.msgs, msg)
	return nil
}

func (b *atomicBatch) commit(ctx context.Context, msg *nats.Msg, timeout time.Duration) (count, last uint64, err error) {
	if msg != nil {
		b.msgs = append(b.msgs, msg)
	}
	msgs := b.msgs
	b.msgs = nil
	if len(msgs) == 0 {
		return 0, 0, nil
	}
	if err := ctx.Err(); err != nil {
		return 0, 0, err // nothing sent: nothing to end on the server
	}
	id := nuid.Next()
	for i, m := range msgs {
		m.Header[headerBatchID] = []string{id}
		m.Header[headerBatchSeq] = []string{strconv.Itoa(i + 1)}
		if i == len(msgs)-1 {
			m.Header[headerBatchCommit] = []string{"1"}
			break
		}
		if b.beforeSend != nil {
			b.beforeSend(m)
		}
		// No reply subject: the server answers the commit only, for the
		// whole batch. A batch left without its commit (the connection
		// failed) is dropped by the server after its timeout.
		if err := b.nc.PublishMsg(m); err != nil {
			return 0, 0, fmt.Errorf("atomic batch: %w", err)
		}
	}
	rctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	reply, err := b.nc.RequestMsgWithContext(rctx, msgs[len(msgs)-1])
	if err != nil {
		return 0, 0, fmt.Errorf("atomic batch: no commit acknowledgement: %w", err)
	}
	var r fastReply
	if err := json.Unmarshal(reply.Data, &r); err != nil {
		return 0, 0, fmt.Errorf("atomic batch: unreadable reply %q: %w", reply.Data, err)
	}
	switch {
	case r.Error != nil && r.Error.ErrCode == errCodeAtomicDisabled:
		return 0, 0, fmt.Errorf("%w: %w", errNoFastIngest, r.Error)
	case r.Error != nil:
		return 0, 0, r.Error
	case r.Batch == "":
		// A PubAck of a plain publish: a server that ignores the
		// protocol stored the records as single messages, and nothing
		// says which.
		return 0, 0, errNoFastIngest
	case r.Count != uint64(len(msgs)):
		return 0, 0, errors.New("atomic batch: the commit counts another number of records")
	}
	return r.Count, r.Seq, nil
}
