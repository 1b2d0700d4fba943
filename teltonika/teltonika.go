// Package teltonika decodes and encodes the TCP protocol of Teltonika GPS
// trackers (FMB, FMC, FMM and the older FM families): the IMEI handshake
// and AVL data packets in Codec 8 (0x08), Codec 8 Extended (0x8E) and
// Codec 16 (0x10). It does no networking.
//
// A device opens a TCP connection and sends its IMEI (ParseIMEI,
// ReadIMEI); the server answers IMEIAccepted or IMEIRejected. The device
// then sends AVL packets:
//
//	00 00 00 00 | length L (u32) | L bytes | CRC (u32)
//
// where the L bytes are the codec ID, a record count N (u8), N records
// and N again, and the low 16 bits of the CRC field are the CRC-16/ARC of
// the L bytes. Split and ReadPacket cut the stream into packets and check
// the frame; Decode reads the records. The server acknowledges a packet
// with AppendAck(nil, N), after which the device drops those records; a
// packet left unacknowledged is sent again after the device's response
// timeout. A lone 0xFF between packets is a keep-alive and gets no answer.
//
// Codec 12, 13 and 14 (GPRS command responses) share the framing: Split
// frames them and Decode refuses them with ErrCodec. UDP is not handled.
// All integers on the wire are big-endian.
package teltonika

import (
	"bufio"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
)

// Codec IDs of the AVL data codecs this package decodes.
const (
	Codec8  byte = 0x08
	Codec8E byte = 0x8E // Codec 8 Extended
	Codec16 byte = 0x10
)

// KeepAlive is the byte a device sends between packets when its link has
// been idle for its network ping timeout. It gets no answer.
const KeepAlive byte = 0xFF

// Answers to the IMEI handshake: one byte.
const (
	IMEIAccepted byte = 0x01
	IMEIRejected byte = 0x00
)

// MaxIMEILen is the longest device identity the handshake accepts. An IMEI
// is 15 digits; 16 and 17 leave room for an IMEISV and for vendors that
// send one more digit. Shorter ones (down to 1 digit) are accepted for
// simulators and lab setups: the format check keeps identities printable
// and bounded, the allowlist decides who may connect.
const MaxIMEILen = 17

// DefaultMaxPacket is the largest data length L that Split and ReadPacket
// accept when given 0. Teltonika documents at most 1280 bytes for most
// devices (512 for the FM*640 family); the margin is for firmware that
// packs more.
const DefaultMaxPacket = 65536

// Errors. The frame errors ErrCRC, ErrCount and ErrMalformed leave the
// stream usable: the length was read, so the next packet's start is known.
// ErrPreamble, ErrTooLarge and ErrIMEI end the connection: the stream can
// no longer be cut into packets, or its length was refused before reading.
var (
	ErrIMEI      = errors.New("teltonika: bad IMEI handshake")
	ErrPreamble  = errors.New("teltonika: bad packet preamble")
	ErrTooLarge  = errors.New("teltonika: packet too large")
	ErrCRC       = errors.New("teltonika: CRC mismatch")
	ErrCount     = errors.New("teltonika: record counts differ")
	ErrMalformed = errors.New("teltonika: malformed packet")
	ErrCodec     = errors.New("teltonika: unsupported codec")
)

// ParseIMEI reads the handshake at the start of buf: any keep-alive bytes
// (a device may send one before it), a 2-byte length and that many ASCII
// digits. It returns the number of bytes used and the IMEI; n == 0 with a
// nil error means buf holds no complete handshake yet. A length of 0 or
// over MaxIMEILen, or a non-digit, is ErrIMEI, reported as soon as the
// offending byte is in buf.
func ParseIMEI(buf []byte) (n int, imei string, err error) {
	i := 0
	for i < len(buf) && buf[i] == KeepAlive {
		i++
	}
	rest := buf[i:]
	if len(rest) < 2 {
		return 0, "", nil
	}
	l := int(binary.BigEndian.Uint16(rest))
	if l == 0 || l > MaxIMEILen {
		return 0, "", fmt.Errorf("%w: length %d", ErrIMEI, l)
	}
	digits := rest[2:min(len(rest), 2+l)]
	if err := checkDigits(digits); err != nil {
		return 0, "", err
	}
	if len(digits) < l {
		return 0, "", nil
	}
	return i + 2 + l, string(digits), nil
}

// ReadIMEI reads the handshake from r, as ParseIMEI does from a buffer. It
// reads no byte past the handshake, so r can go on to ReadPacket.
func ReadIMEI(r *bufio.Reader) (string, error) {
	var b [2 + MaxIMEILen]byte
	for {
		c, err := r.ReadByte()
		if err != nil {
			return "", err
		}
		if c != KeepAlive {
			b[0] = c
			break
		}
	}
	c, err := r.ReadByte()
	if err != nil {
		return "", unexpected(err)
	}
	b[1] = c
	l := int(binary.BigEndian.Uint16(b[:2]))
	if l == 0 || l > MaxIMEILen {
		return "", fmt.Errorf("%w: length %d", ErrIMEI, l)
	}
	digits := b[2 : 2+l]
	if _, err := io.ReadFull(r, digits); err != nil {
		return "", unexpected(err)
	}
	if err := checkDigits(digits); err != nil {
		return "", err
	}
	return string(digits), nil
}

func checkDigits(b []byte) error {
	for _, c := range b {
		if c < '0' || c > '9' {
			return fmt.Errorf("%w: byte 0x%02x is not an ASCII digit", ErrIMEI, c)
		}
	}
	return nil
}

// AppendAck appends the acknowledgement of a packet of n records: n as 4
// bytes.
func AppendAck(dst []byte, n int) []byte {
	return binary.BigEndian.AppendUint32(dst, uint32(n))
}

// unexpected turns an EOF in the middle of a handshake or a packet into
// io.ErrUnexpectedEOF, keeping io.EOF for a stream that ended between them.
func unexpected(err error) error {
	if err == io.EOF {
		return io.ErrUnexpectedEOF
	}
	return err
}
