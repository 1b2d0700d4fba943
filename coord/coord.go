// Package coord defines the coordination protocol between sockets and parser
// pools over NATS (docs/design.md, "The dispatch flow"): subjects, ready
// announcements, assignments of a batch under a lease, the accept/busy
// answer and the batch outcome.
//
// Assignments, answers and outcomes are on the hot path and use a compact
// binary encoding (big-endian, a kind byte first); ready announcements are
// JSON.
package coord

import (
	"encoding/binary"
	"errors"
	"fmt"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/edgegate/edgegate/lease"
)

// Subjects.
const (
	// SubjectReady carries Ready announcements of parser pools.
	SubjectReady = "edgegate.ready"
	// SubjectReadyQuery asks every parser pool to announce itself now (a
	// socket that starts does not wait for the periodic announcement).
	SubjectReadyQuery = "edgegate.ready.query"
	// SubjectStatus is requested by `edgegate status`; pools and sockets answer.
	SubjectStatus = "edgegate.status"
	prefixPool    = "edgegate.pool."
	prefixSocket  = "edgegate.socket."
	prefixParsed  = "edgegate.parsed."
	prefixDead    = "edgegate.dead."
	prefixGrant   = "edgegate.grant."
	prefixSession = "edgegate.session."
)

// PoolSubject is the subject a parser pool receives assignments on.
func PoolSubject(pool string) string { return prefixPool + pool }

// SocketSubject is the subject a socket receives answers and outcomes on.
func SocketSubject(socket string) string { return prefixSocket + socket }

// SocketOf returns the socket ID in a reply subject under SocketSubject
// ("" if it is none).
func SocketOf(reply string) string {
	rest, ok := strings.CutPrefix(reply, prefixSocket)
	if !ok {
		return ""
	}
	id, _, _ := strings.Cut(rest, ".")
	return id
}

// ParsedSubject is the subject of a controller's parsed records.
func ParsedSubject(controller string) string { return prefixParsed + controller }

// DeadSubject is the subject of a controller's dead letters.
func DeadSubject(controller string) string { return prefixDead + controller }

// GrantSubject is where a lease grant of a controller marks the parsed
// stream before its records, when the stream has one replica: each record
// is conditional on the marker being the last there (docs/design.md,
// "Output and fencing").
func GrantSubject(controller string) string { return prefixGrant + controller }

// SessionSubject is where a socket announces a new device session of a
// controller, so that an older session elsewhere is taken over.
func SessionSubject(controller string) string { return prefixSession + controller }

// SessionAnnouncement is the body of an announcement on SessionSubject:
// the announcing socket and the session's number in the lease store.
func SessionAnnouncement(socket string, no uint64) []byte {
	return fmt.Appendf(nil, "%s %d", socket, no)
}

// ParseSessionAnnouncement parses a SessionAnnouncement. An appliance of
// an older version announces its socket alone: numbered is false then.
func ParseSessionAnnouncement(b []byte) (socket string, no uint64, numbered bool) {
	socket, n, numbered := strings.Cut(string(b), " ")
	no, err := strconv.ParseUint(n, 10, 64)
	return socket, no, numbered && err == nil
}

// Ready is a parser pool's announcement of free workers.
type Ready struct {
	Pool      string `json:"pool"`      // pool instance ID
	Appliance string `json:"appliance"` // name of the appliance running it
	Subject   string `json:"subject"`   // where to send assignments
	Free      int    `json:"free"`      // idle workers
	Workers   int    `json:"workers"`   // all workers
	Busy      int    `json:"busy"`      // workers running a batch
}

// Kinds of binary messages.
const (
	KindAssign  byte = 1
	KindAnswer  byte = 2
	KindOutcome byte = 3
)

// Msg is one device message inside an assignment.
type Msg struct {
	Seq      uint64
	Received time.Time // when the socket read it from the device
	Payload  []byte
}

// Assign hands a batch of one controller's messages to a parser pool. The
// messages are in seq order and the socket holds Token's lease for them.
type Assign struct {
	Controller string
	Token      lease.Token
	// Valid is how long the lease was still valid when the assignment was
	// sent; the parser stops the batch if it cannot confirm a heartbeat by
	// then.
	Valid time.Duration
	// Clock is the ID of the sender's Clock (0: none) and Deadline the time
	// on it until which the lease is surely held. A pool with the same
	// clock skips the lease check on their word, so they are only in a
	// call (parser.Pool.Offer), never in the encoding: over NATS a forged
	// assignment could carry them.
	Clock    uint64
	Deadline int64
	// Hold, when above zero, asks the parser to keep the lease when the
	// batch is done instead of releasing it (Outcome.Kept): record done and
	// set the lock to expire Hold later. The socket expects more messages of
	// the controller soon and sends them under the same token; unused, the
	// lease expires by itself after Hold (the socket releases it at once
	// when the device goes).
	Hold time.Duration
	// Gen is the seq generation of the messages' device session (see
	// lease.Session): the output message ID names it, so that a seq used
	// again after a reset is another message.
	Gen uint64
	// Proto says what the payloads are (ProtoRaw, ProtoTeltonika): one
	// per batch, as a batch holds the messages of one device session.
	Proto byte
	Msgs  []Msg
	// Socket is the ID of the socket that sent the assignment. It is not in
	// the encoding: over NATS it is in the reply subject (SocketOf).
	Socket string
}

// Answer is a parser pool's immediate reply to an assignment.
type Answer struct {
	Controller string
	Fence      uint64
	Accepted   bool // false: busy, the socket releases the lease and tries elsewhere
	Pool       string
}

// Outcome reports a finished batch to the socket that assigned it.
type Outcome struct {
	Controller string
	Fence      uint64
	// Released is true when the parser released the lease and recorded Done:
	// the statuses are final. False means the lease was lost (or its release
	// could not be confirmed): the work is fenced and nothing may be
	// acknowledged.
	Released bool
	// Kept is true when the parser still holds the lease (Assign.Hold):
	// valid for Hold from a moment after the assignment was sent, or until
	// Until when that is set. The socket sends the next batch under the
	// same token, or lets the lease go, recording Done.
	Kept bool
	// Until is set when the parser kept the lease without a store call
	// (the lock, as the last keep or the acquire set it, still had about
	// Hold left, at least Hold less half a heartbeat period; only a pool
	// of the socket's own process does that, in a call,
	// parser.Pool.Offer: it is not in the encoding). Until is when that
	// keep or acquire set the lock to expire, at the soonest, and Done is
	// not recorded yet: the next keep or the socket's release of the
	// lease records it.
	Until    time.Time
	Done     uint64
	Statuses []byte // one egp.Status per message of the batch, in order
	// Pool is the ID of the pool that ran the batch: a socket takes an
	// outcome only from the pool it sent the batch to.
	Pool string
	// Early marks the statuses of a batch sent ahead of its outcome proper,
	// only by a call (parser.Pool.Offer), never over NATS (it is not in the
	// encoding): those messages were handled under a lease surely held,
	// so they are acknowledged now, before the keep or release of the
	// lease (a Redis round trip) ends; the outcome proper follows without
	// them.
	Early bool
}

// Outcome flags.
const (
	outcomeReleased byte = 1 << iota
	outcomeKept
)

// ErrMalformed is returned for a message that cannot be decoded.
var ErrMalformed = errors.New("coord: malformed message")

func appendStr8(b []byte, s string) []byte {
	return append(append(b, byte(len(s))), s...)
}

// AppendAssign appends the encoding of a to b.
func AppendAssign(b []byte, a *Assign) []byte {
	n := 1 + 1 + len(a.Controller) + 8 + 1 + len(a.Token.Owner) + 8 + 8 + 8 + 1 + 4
	for i := range a.Msgs {
		n += 20 + len(a.Msgs[i].Payload)
	}
	b = slices.Grow(b, n) // one allocation for the whole batch
	b = append(b, KindAssign)
	b = appendStr8(b, a.Controller)
	b = binary.BigEndian.AppendUint64(b, a.Token.Fence)
	b = appendStr8(b, a.Token.Owner)
	b = binary.BigEndian.AppendUint64(b, uint64(a.Valid))
	b = binary.BigEndian.AppendUint64(b, uint64(a.Hold))
	b = binary.BigEndian.AppendUint64(b, a.Gen)
	b = append(b, a.Proto)
	b = binary.BigEndian.AppendUint32(b, uint32(len(a.Msgs)))
	for i := range a.Msgs {
		m := &a.Msgs[i]
		b = binary.BigEndian.AppendUint64(b, m.Seq)
		b = binary.BigEndian.AppendUint64(b, uint64(m.Received.UnixNano()))
		b = binary.BigEndian.AppendUint32(b, uint32(len(m.Payload)))
		b = append(b, m.Payload...)
	}
	return b
}

// AppendAnswer appends the encoding of a to b.
func AppendAnswer(b []byte, a *Answer) []byte {
	b = append(b, KindAnswer)
	b = appendStr8(b, a.Controller)
	b = binary.BigEndian.AppendUint64(b, a.Fence)
	acc := byte(0)
	if a.Accepted {
		acc = 1
	}
	b = append(b, acc)
	return appendStr8(b, a.Pool)
}

// AppendOutcome appends the encoding of o to b.
func AppendOutcome(b []byte, o *Outcome) []byte {
	b = append(b, KindOutcome)
	b = appendStr8(b, o.Controller)
	b = binary.BigEndian.AppendUint64(b, o.Fence)
	flags := byte(0)
	if o.Released {
		flags |= outcomeReleased
	}
	if o.Kept {
		flags |= outcomeKept
	}
	b = append(b, flags)
	b = binary.BigEndian.AppendUint64(b, o.Done)
	b = binary.BigEndian.AppendUint32(b, uint32(len(o.Statuses)))
	b = append(b, o.Statuses...)
	return appendStr8(b, o.Pool)
}

// decoder reads fields and remembers the first error.
type decoder struct {
	b   []byte
	err error
}

func (d *decoder) need(n int) bool {
	if d.err != nil {
		return false
	}
	if len(d.b) < n {
		d.err = ErrMalformed
		return false
	}
	return true
}

func (d *decoder) u8() byte {
	if !d.need(1) {
		return 0
	}
	v := d.b[0]
	d.b = d.b[1:]
	return v
}

func (d *decoder) u32() uint32 {
	if !d.need(4) {
		return 0
	}
	v := binary.BigEndian.Uint32(d.b)
	d.b = d.b[4:]
	return v
}

func (d *decoder) u64() uint64 {
	if !d.need(8) {
		return 0
	}
	v := binary.BigEndian.Uint64(d.b)
	d.b = d.b[8:]
	return v
}

func (d *decoder) bytes(n int) []byte {
	if !d.need(n) {
		return nil
	}
	v := d.b[:n:n]
	d.b = d.b[n:]
	return v
}

func (d *decoder) str8() string { return string(d.bytes(int(d.u8()))) }

func (d *decoder) kind(want byte) {
	if k := d.u8(); d.err == nil && k != want {
		d.err = fmt.Errorf("%w: kind %d, want %d", ErrMalformed, k, want)
	}
}

func (d *decoder) finish() error {
	if d.err == nil && len(d.b) != 0 {
		d.err = fmt.Errorf("%w: %d trailing bytes", ErrMalformed, len(d.b))
	}
	return d.err
}

// Kind returns the kind byte of an encoded message, 0 if empty.
func Kind(b []byte) byte {
	if len(b) == 0 {
		return 0
	}
	return b[0]
}

// DecodeAssign decodes an assignment. Payloads alias b.
func DecodeAssign(b []byte) (*Assign, error) {
	d := decoder{b: b}
	d.kind(KindAssign)
	a := &Assign{Controller: d.str8()}
	a.Token.Fence = d.u64()
	a.Token.Owner = d.str8()
	a.Valid = time.Duration(d.u64())
	a.Hold = time.Duration(d.u64())
	a.Gen = d.u64()
	a.Proto = d.u8()
	n := d.u32()
	if d.err == nil && uint64(n)*20 > uint64(len(d.b)) {
		return nil, fmt.Errorf("%w: %d messages in %d bytes", ErrMalformed, n, len(d.b))
	}
	a.Msgs = make([]Msg, n)
	for i := range a.Msgs {
		m := &a.Msgs[i]
		m.Seq = d.u64()
		m.Received = time.Unix(0, int64(d.u64()))
		m.Payload = d.bytes(int(d.u32()))
	}
	if err := d.finish(); err != nil {
		return nil, err
	}
	return a, nil
}

// DecodeAnswer decodes an accept/busy answer.
func DecodeAnswer(b []byte) (Answer, error) {
	d := decoder{b: b}
	d.kind(KindAnswer)
	a := Answer{Controller: d.str8(), Fence: d.u64(), Accepted: d.u8() == 1, Pool: d.str8()}
	return a, d.finish()
}

// DecodeOutcome decodes a batch outcome. Statuses alias b.
func DecodeOutcome(b []byte) (Outcome, error) {
	d := decoder{b: b}
	d.kind(KindOutcome)
	o := Outcome{Controller: d.str8(), Fence: d.u64()}
	flags := d.u8()
	o.Released, o.Kept, o.Done = flags&outcomeReleased != 0, flags&outcomeKept != 0, d.u64()
	o.Statuses = d.bytes(int(d.u32()))
	o.Pool = d.str8()
	return o, d.finish()
}

// Status is one component's answer to a request on SubjectStatus (JSON).
type Status struct {
	Kind      string `json:"kind"` // "socket" or "pool"
	Appliance string `json:"appliance"`
	ID        string `json:"id"`

	// Pools.
	Workers int `json:"workers,omitempty"`
	Free    int `json:"free,omitempty"`
	Busy    int `json:"busy,omitempty"`

	// Sockets.
	Connections int                `json:"connections,omitempty"`
	Queued      int                `json:"queued,omitempty"`
	InFlight    int                `json:"in_flight,omitempty"`
	Paused      bool               `json:"paused,omitempty"`
	Controllers []ControllerStatus `json:"controllers,omitempty"`

	Counters map[string]uint64 `json:"counters,omitempty"`
}

// ControllerStatus describes a controller a socket holds messages of.
type ControllerStatus struct {
	ID        string `json:"id"`
	State     string `json:"state"`
	Queued    int    `json:"queued"`
	Batch     int    `json:"batch,omitempty"`
	Connected bool   `json:"connected"`
	// The lease, for a batch in flight, as the lease store reports it.
	Fence          uint64 `json:"fence,omitempty"`
	Holder         string `json:"holder,omitempty"` // the appliance of the parser pool
	LeaseAgeMs     int64  `json:"lease_age_ms,omitempty"`
	HeartbeatAgoMs int64  `json:"heartbeat_ago_ms,omitempty"`
	Locked         bool   `json:"locked,omitempty"`
	Done           uint64 `json:"done,omitempty"`
}
