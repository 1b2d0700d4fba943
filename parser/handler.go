package parser

import (
	"context"
	"errors"
	"time"
)

// Message is one device message handed to a Handler. It is valid only
// during Handle: the pool fills the same Message with the next message of
// the batch afterwards, so a handler that keeps anything copies it.
type Message struct {
	Controller string
	Seq        uint64
	// Gen is the seq generation of the device session the message came
	// in: a seq names one message only within its generation (a device
	// that resets its seqs, or keeps none across sessions, uses it again).
	Gen uint64
	// Fence is the fencing token of the lease the message is handled under;
	// output carries it so that a consumer can reject stale work.
	Fence    uint64
	Received time.Time // when the appliance read it from the device
	Payload  []byte    // valid only during Handle, and read-only (it may be the socket's own copy, sent again if the batch is)
	Attempt  int       // 1 on the first attempt

	// Proto says what Payload is: coord.ProtoRaw, a message as the device
	// sent it, or coord.ProtoTeltonika, the data field of a Teltonika AVL
	// packet (whose records the publish handler stores one by one).
	Proto byte
}

// ID is the message ID of m, "<controller>:<gen>:<seq>", used to
// deduplicate output (JetStream's Nats-Msg-Id): the same across resends of
// one message, to any appliance, and different for another message that
// reuses the seq in a later generation.
func (m *Message) ID() string { return m.Controller + ":" + uitoa(m.Gen) + ":" + uitoa(m.Seq) }

// Handler is the parse logic. Handle is called for one controller's
// messages in order, never concurrently for one controller, and concurrently
// across controllers. It returns nil when the message is done.
//
// An error is transient (retried with backoff without limit: the controller
// waits and its device is backpressured) unless it is marked with
// Permanent: then the message is retried a few times and dead-lettered.
// Handle must return soon after ctx is cancelled (the lease was lost or the
// appliance stops); its result is then discarded.
type Handler interface {
	Handle(ctx context.Context, m *Message) error
}

// HandlerFunc adapts a function to Handler.
type HandlerFunc func(ctx context.Context, m *Message) error

// Handle implements Handler.
func (f HandlerFunc) Handle(ctx context.Context, m *Message) error { return f(ctx, m) }

// PermanentError marks an error caused by the message itself.
type PermanentError struct{ Err error }

func (e *PermanentError) Error() string { return "permanent: " + e.Err.Error() }
func (e *PermanentError) Unwrap() error { return e.Err }

// Permanent marks err as caused by the message itself (bad input): it is not
// retried without limit but dead-lettered after the configured attempts.
func Permanent(err error) error {
	if err == nil {
		return nil
	}
	return &PermanentError{Err: err}
}

// IsPermanent reports whether err is marked with Permanent.
func IsPermanent(err error) bool {
	var p *PermanentError
	return errors.As(err, &p)
}

func uitoa(v uint64) string {
	var b [20]byte
	i := len(b)
	for {
		i--
		b[i] = byte('0' + v%10)
		v /= 10
		if v == 0 {
			return string(b[i:])
		}
	}
}
