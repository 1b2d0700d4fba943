// Package egp implements EGP/1, the framed binary protocol devices speak to
// an edgegate appliance, and the line-based variant for simple devices.
//
// Every frame is magic 0xE6 (1 byte), type (1 byte), body length (u32,
// big-endian) and the body. The reader checks the length against the
// configured maximum before it allocates anything for the body.
package egp

import (
	"encoding/binary"
	"errors"
	"fmt"
)

// Magic is the first byte of every frame.
const Magic byte = 0xE6

// Version is the protocol version a HELLO and a WELCOME carry.
const Version = 1

// HeaderSize is the size of a frame header: magic, type and body length.
const HeaderSize = 6

// AckSize is the size of an ACK frame: a header, the seq and the status.
const AckSize = HeaderSize + 9

// DefaultMaxFrame is the default largest body a frame may carry.
const DefaultMaxFrame = 1 << 20

// Type is a frame type.
type Type byte

// Frame types of EGP/1.
const (
	TypeHello   Type = 0x01 // device → gateway
	TypeWelcome Type = 0x02 // gateway → device
	TypeData    Type = 0x03 // device → gateway
	TypeAck     Type = 0x04 // gateway → device
	TypePing    Type = 0x06 // either direction
	TypePong    Type = 0x07 // either direction
	TypeError   Type = 0x08 // gateway → device, then the gateway closes
)

func (t Type) String() string {
	switch t {
	case TypeHello:
		return "HELLO"
	case TypeWelcome:
		return "WELCOME"
	case TypeData:
		return "DATA"
	case TypeAck:
		return "ACK"
	case TypePing:
		return "PING"
	case TypePong:
		return "PONG"
	case TypeError:
		return "ERROR"
	}
	return fmt.Sprintf("type(0x%02x)", byte(t))
}

func (t Type) valid() bool {
	switch t {
	case TypeHello, TypeWelcome, TypeData, TypeAck, TypePing, TypePong, TypeError:
		return true
	}
	return false
}

// Code is the code of an ERROR frame.
type Code uint16

// ERROR codes of EGP/1.
const (
	CodeProtocol     Code = 1 // bad magic, bad type, DATA before HELLO, malformed body
	CodeVersion      Code = 2 // unsupported protocol version
	CodeAuth         Code = 3 // the HELLO token was refused
	CodeTooLarge     Code = 4 // a frame longer than max_frame
	CodeHelloTimeout Code = 5 // no HELLO within hello_timeout
	CodeTakenOver    Code = 6 // a newer session for this controller exists
	CodeShuttingDown Code = 7 // the appliance is stopping
	CodeBusy         Code = 8 // connection limits reached
	CodeBadID        Code = 9 // the controller ID is not valid
)

func (c Code) String() string {
	switch c {
	case CodeProtocol:
		return "protocol"
	case CodeVersion:
		return "version"
	case CodeAuth:
		return "auth"
	case CodeTooLarge:
		return "frame too large"
	case CodeHelloTimeout:
		return "hello timeout"
	case CodeTakenOver:
		return "taken over"
	case CodeShuttingDown:
		return "shutting down"
	case CodeBusy:
		return "busy"
	case CodeBadID:
		return "bad controller id"
	}
	return fmt.Sprintf("code(%d)", uint16(c))
}

// HELLO flags.
const (
	// FlagSeqReset clears the controller's recorded done seq.
	FlagSeqReset byte = 1 << 0
	// FlagPersistentSeq says the device keeps its seq across sessions, so a
	// DATA whose seq is at most the recorded done seq is a duplicate.
	FlagPersistentSeq byte = 1 << 1
)

// AckMode is the acknowledgement mode a WELCOME announces.
type AckMode byte

// Acknowledgement modes.
const (
	AckNone      AckMode = 0 // the gateway sends no ACKs
	AckProcessed AckMode = 2 // an ACK after the handler finished the message
)

// Status is the status of an ACK.
type Status byte

// ACK statuses.
const (
	StatusProcessed    Status = 0
	StatusDeadLettered Status = 1
)

// Error is a protocol violation by the peer. Code is the ERROR code the
// gateway answers it with.
type Error struct {
	Code   Code
	Reason string
}

func (e *Error) Error() string { return fmt.Sprintf("egp: %s: %s", e.Code, e.Reason) }

func protoErr(code Code, format string, args ...any) *Error {
	return &Error{Code: code, Reason: fmt.Sprintf(format, args...)}
}

// ErrorCode returns the ERROR code for err: the code of an *Error in its
// chain, CodeProtocol otherwise.
func ErrorCode(err error) Code {
	var pe *Error
	if errors.As(err, &pe) {
		return pe.Code
	}
	return CodeProtocol
}

// MaxTokenLen is the longest HELLO token, and MaxHelloLen the longest
// HELLO body: one is read before the device is authenticated, so it is
// not allowed the size of a DATA frame.
const (
	MaxTokenLen = 4096
	MaxHelloLen = 3 + 255 + MaxTokenLen
)

// MaxIDLen is the longest controller ID.
const MaxIDLen = 128

// ValidID reports whether id is a valid controller ID: 1–128 bytes of
// [A-Za-z0-9_:-]. The ID is used in NATS subject tokens and store keys, so
// '.', '*', '>' and whitespace are refused.
func ValidID(id string) error {
	if len(id) == 0 {
		return protoErr(CodeBadID, "controller id is empty")
	}
	if len(id) > MaxIDLen {
		return protoErr(CodeBadID, "controller id is %d bytes, at most %d", len(id), MaxIDLen)
	}
	for i := 0; i < len(id); i++ {
		c := id[i]
		switch {
		case c >= 'a' && c <= 'z', c >= 'A' && c <= 'Z', c >= '0' && c <= '9', c == '_', c == ':', c == '-':
		default:
			return protoErr(CodeBadID, "controller id has byte 0x%02x at %d; allowed: A-Z a-z 0-9 _ : -", c, i)
		}
	}
	return nil
}

// Hello is the body of a HELLO frame.
type Hello struct {
	Version byte
	Flags   byte
	ID      string
	Token   []byte
}

// Welcome is the body of a WELCOME frame.
type Welcome struct {
	Version  byte
	AckMode  AckMode
	MaxFrame uint32
	LastSeq  uint64
}

// Ack is the body of an ACK frame.
type Ack struct {
	Seq    uint64
	Status Status
}

func appendHeader(b []byte, t Type, n int) []byte {
	return append(b, Magic, byte(t), byte(n>>24), byte(n>>16), byte(n>>8), byte(n))
}

// AppendHello appends a HELLO frame to b.
func AppendHello(b []byte, h Hello) []byte {
	b = appendHeader(b, TypeHello, 3+len(h.ID)+len(h.Token))
	b = append(b, h.Version, h.Flags, byte(len(h.ID)))
	b = append(b, h.ID...)
	return append(b, h.Token...)
}

// AppendWelcome appends a WELCOME frame to b.
func AppendWelcome(b []byte, w Welcome) []byte {
	b = appendHeader(b, TypeWelcome, 14)
	b = append(b, w.Version, byte(w.AckMode))
	b = binary.BigEndian.AppendUint32(b, w.MaxFrame)
	return binary.BigEndian.AppendUint64(b, w.LastSeq)
}

// AppendData appends a DATA frame to b.
func AppendData(b []byte, seq uint64, payload []byte) []byte {
	b = appendHeader(b, TypeData, 8+len(payload))
	b = binary.BigEndian.AppendUint64(b, seq)
	return append(b, payload...)
}

// AppendAck appends an ACK frame to b.
func AppendAck(b []byte, seq uint64, status Status) []byte {
	b = appendHeader(b, TypeAck, AckSize-HeaderSize)
	b = binary.BigEndian.AppendUint64(b, seq)
	return append(b, byte(status))
}

// AppendPing appends a PING frame carrying data to b.
func AppendPing(b []byte, data []byte) []byte {
	return append(appendHeader(b, TypePing, len(data)), data...)
}

// AppendPong appends a PONG frame carrying data to b.
func AppendPong(b []byte, data []byte) []byte {
	return append(appendHeader(b, TypePong, len(data)), data...)
}

// AppendError appends an ERROR frame to b.
func AppendError(b []byte, code Code, reason string) []byte {
	b = appendHeader(b, TypeError, 2+len(reason))
	b = binary.BigEndian.AppendUint16(b, uint16(code))
	return append(b, reason...)
}

// ParseHello parses the body of a HELLO frame. It checks the layout and the
// version, not the controller ID (see ValidID). Token aliases body.
func ParseHello(body []byte) (Hello, error) {
	if len(body) < 3 {
		return Hello{}, protoErr(CodeProtocol, "HELLO body is %d bytes, at least 3", len(body))
	}
	h := Hello{Version: body[0], Flags: body[1]}
	if h.Version != Version {
		return h, protoErr(CodeVersion, "HELLO version %d, this gateway speaks %d", h.Version, Version)
	}
	n := int(body[2])
	if len(body) < 3+n {
		return h, protoErr(CodeProtocol, "HELLO id length %d exceeds the body", n)
	}
	h.ID = string(body[3 : 3+n])
	h.Token = body[3+n:]
	return h, nil
}

// ParseWelcome parses the body of a WELCOME frame.
func ParseWelcome(body []byte) (Welcome, error) {
	if len(body) != 14 {
		return Welcome{}, protoErr(CodeProtocol, "WELCOME body is %d bytes, want 14", len(body))
	}
	return Welcome{
		Version:  body[0],
		AckMode:  AckMode(body[1]),
		MaxFrame: binary.BigEndian.Uint32(body[2:6]),
		LastSeq:  binary.BigEndian.Uint64(body[6:14]),
	}, nil
}

// ParseData parses the body of a DATA frame. The payload aliases body.
func ParseData(body []byte) (seq uint64, payload []byte, err error) {
	if len(body) < 8 {
		return 0, nil, protoErr(CodeProtocol, "DATA body is %d bytes, at least 8", len(body))
	}
	return binary.BigEndian.Uint64(body[:8]), body[8:], nil
}

// ParseAck parses the body of an ACK frame.
func ParseAck(body []byte) (Ack, error) {
	if len(body) != 9 {
		return Ack{}, protoErr(CodeProtocol, "ACK body is %d bytes, want 9", len(body))
	}
	return Ack{Seq: binary.BigEndian.Uint64(body[:8]), Status: Status(body[8])}, nil
}

// ParseError parses the body of an ERROR frame.
func ParseError(body []byte) (Code, string, error) {
	if len(body) < 2 {
		return 0, "", protoErr(CodeProtocol, "ERROR body is %d bytes, at least 2", len(body))
	}
	return Code(binary.BigEndian.Uint16(body[:2])), string(body[2:]), nil
}
