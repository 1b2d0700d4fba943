package parser

import (
	"bufio"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
)

// The exec handler's framing (docs/exec.md), big-endian throughout.
//
// Request, edgegate → child stdin:
//
//	u32 length (of what follows) | u8 id_len | id | u64 seq | u64 fence |
//	i64 received (unix ms) | u16 attempt | payload
//
// Reply, child stdout → edgegate:
//
//	u32 length (of what follows) | u8 status | body
//
// status 0: done, body is the output record; 1: done, nothing to publish;
// 2: transient error, body is the reason; 3: permanent error (the message
// itself is bad), body is the reason.

// Exec reply statuses.
const (
	ExecOK        byte = 0
	ExecSkip      byte = 1
	ExecTransient byte = 2
	ExecPermanent byte = 3
)

// DefaultMaxReply is the largest reply body accepted by default.
const DefaultMaxReply = 16 << 20

// AppendExecRequest appends the request frame for m.
func AppendExecRequest(b []byte, m *Message) []byte {
	n := 1 + len(m.Controller) + 8 + 8 + 8 + 2 + len(m.Payload)
	b = binary.BigEndian.AppendUint32(b, uint32(n))
	b = append(b, byte(len(m.Controller)))
	b = append(b, m.Controller...)
	b = binary.BigEndian.AppendUint64(b, m.Seq)
	b = binary.BigEndian.AppendUint64(b, m.Fence)
	b = binary.BigEndian.AppendUint64(b, uint64(m.Received.UnixMilli()))
	b = binary.BigEndian.AppendUint16(b, uint16(min(m.Attempt, 65535)))
	return append(b, m.Payload...)
}

// errExecProto is a reply that breaks the framing: the child is restarted.
var errExecProto = errors.New("exec: protocol error")

// ReadExecReply reads one reply. A length over max+1 or a status that is
// not 0–3 is a protocol error; nothing over max is allocated.
func ReadExecReply(r *bufio.Reader, max int) (status byte, body []byte, err error) {
	var hdr [5]byte
	if _, err := io.ReadFull(r, hdr[:4]); err != nil {
		return 0, nil, err
	}
	n := binary.BigEndian.Uint32(hdr[:4])
	if n == 0 {
		return 0, nil, fmt.Errorf("%w: empty reply (no status byte)", errExecProto)
	}
	if uint64(n)-1 > uint64(max) {
		return 0, nil, fmt.Errorf("%w: reply of %d bytes, at most %d", errExecProto, n-1, max)
	}
	st, err := r.ReadByte()
	if err != nil {
		return 0, nil, unexpectedEOF(err)
	}
	if st > ExecPermanent {
		return 0, nil, fmt.Errorf("%w: unknown status %d", errExecProto, st)
	}
	body = make([]byte, n-1)
	if _, err := io.ReadFull(r, body); err != nil {
		return 0, nil, unexpectedEOF(err)
	}
	return st, body, nil
}

func unexpectedEOF(err error) error {
	if err == io.EOF {
		return io.ErrUnexpectedEOF
	}
	return err
}
