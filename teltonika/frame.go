package teltonika

import (
	"bufio"
	"encoding/binary"
	"fmt"
	"io"
	"slices"
)

// headerLen is the preamble and the data length; trailerLen the CRC field.
const (
	headerLen  = 8
	trailerLen = 4
)

// growStep is the first size of ReadPacket's buffer for a packet longer
// than what it has: about a packet of the longest most devices send.
const growStep = 2 << 10

// minData is the shortest data that can hold a codec ID and two counts.
const minData = 3

// Split finds the next packet at the start of buf, a stream's unconsumed
// bytes, skipping keep-alives. maxLen caps the data length L
// (DefaultMaxPacket when 0 or less). It returns how many bytes of buf to
// consume and the packet's L bytes, which alias buf:
//
//   - data != nil, err == nil: a packet whose CRC and counts check out.
//   - data == nil, err == nil: buf holds no whole packet yet. advance may
//     still be over 0: keep-alives consumed, which a caller can count as
//     link activity. Read more and call again with the rest.
//   - err is ErrCRC, ErrCount or ErrMalformed: the packet is refused and
//     advance steps over it; the next one can be split. The device sends a
//     refused packet again if it gets no ACK.
//   - err is ErrPreamble or ErrTooLarge: advance is 0 and the stream is
//     lost; close the connection. Both are reported as soon as the bytes
//     that show them are in buf, without waiting for the rest of a packet
//     whose length was refused.
func Split(buf []byte, maxLen int) (advance int, data []byte, err error) {
	i := 0
	for i < len(buf) && buf[i] == KeepAlive {
		i++
	}
	rest := buf[i:]
	for j := 0; j < 4 && j < len(rest); j++ {
		if rest[j] != 0 {
			return 0, nil, fmt.Errorf("%w: % x", ErrPreamble, rest[:min(4, len(rest))])
		}
	}
	if len(rest) < headerLen {
		return i, nil, nil
	}
	l, err := dataLen(rest, maxLen)
	if err != nil {
		return 0, nil, err
	}
	if uint64(len(rest)) < uint64(headerLen+trailerLen)+uint64(l) {
		return i, nil, nil
	}
	n := headerLen + int(l) + trailerLen
	data, err = check(rest[headerLen:n])
	if err != nil {
		return i + n, nil, err
	}
	return i + n, data, nil
}

// ReadPacket reads the next packet from r into buf, growing it (to at most
// maxLen+4 bytes) when it is too small, and returns its L bytes, which
// alias the returned storage: pass them back as buf to reuse it (the next
// call then overwrites them). maxLen is as for Split.
//
// A run of keep-alives is returned as nil data and a nil error, so that a
// caller can push its idle deadline and call again. Errors are those of
// Split, with the same meaning (after ErrCRC, ErrCount or ErrMalformed the
// packet was consumed), and those of r: io.EOF for a stream that ended
// between packets, io.ErrUnexpectedEOF for one that ended inside one.
func ReadPacket(r *bufio.Reader, buf []byte, maxLen int) ([]byte, error) {
	c, err := r.ReadByte()
	if err != nil {
		return nil, err
	}
	if c == KeepAlive {
		// Take the keep-alives already buffered too, so that a burst of
		// them is one return.
		for r.Buffered() > 0 {
			if b, _ := r.Peek(1); b[0] != KeepAlive {
				break
			}
			r.Discard(1)
		}
		return nil, nil
	}
	var hdr [headerLen]byte
	hdr[0] = c
	// The preamble is checked byte by byte, so that a stream of something
	// else is refused without waiting for eight bytes of it.
	for j := 0; j < 4; j++ {
		if j > 0 {
			if hdr[j], err = r.ReadByte(); err != nil {
				return nil, unexpected(err)
			}
		}
		if hdr[j] != 0 {
			return nil, fmt.Errorf("%w: % x", ErrPreamble, hdr[:j+1])
		}
	}
	if _, err := io.ReadFull(r, hdr[4:]); err != nil {
		return nil, unexpected(err)
	}
	l, err := dataLen(hdr[:], maxLen)
	if err != nil {
		return nil, err
	}
	n := int(l) + trailerLen
	buf = buf[:0]
	for len(buf) < n {
		if len(buf) == cap(buf) {
			// The buffer grows as the packet arrives, by at most what
			// came so far (or growStep): a connection that announces a
			// long packet and sends little of it costs little, whatever
			// its IMEI.
			buf = slices.Grow(buf, min(n-len(buf), max(len(buf), growStep)))
		}
		m := min(n, cap(buf))
		if _, err := io.ReadFull(r, buf[len(buf):m]); err != nil {
			return nil, unexpected(err)
		}
		buf = buf[:m]
	}
	return check(buf)
}

// dataLen reads the data length from a packet header and checks it against
// the cap before anyone allocates for it.
func dataLen(hdr []byte, maxLen int) (uint32, error) {
	if maxLen <= 0 {
		maxLen = DefaultMaxPacket
	}
	l := binary.BigEndian.Uint32(hdr[4:headerLen])
	if uint64(l) > uint64(maxLen) {
		return 0, fmt.Errorf("%w: data length %d, max %d", ErrTooLarge, l, maxLen)
	}
	return l, nil
}

// check checks a packet's data and CRC field (L+4 bytes) and returns the
// data.
func check(b []byte) ([]byte, error) {
	data := b[:len(b)-trailerLen]
	if len(data) < minData {
		return nil, fmt.Errorf("%w: data length %d", ErrMalformed, len(data))
	}
	// The CRC is 16 bits in a 4-byte field whose high half is documented
	// as zero; only the CRC itself is compared, as a device that filled
	// the high half would otherwise have every packet refused forever.
	want := binary.BigEndian.Uint16(b[len(b)-2:])
	if got := CRC16(data); got != want {
		return nil, fmt.Errorf("%w: computed %04x, packet has %04x", ErrCRC, got, want)
	}
	if data[1] != data[len(data)-1] {
		return nil, fmt.Errorf("%w: %d then %d", ErrCount, data[1], data[len(data)-1])
	}
	return data, nil
}

// CRC16 is the CRC-16/ARC (IBM) of b: polynomial 0x8005 reflected
// (0xA001), initial value 0, no final XOR.
func CRC16(b []byte) uint16 {
	var crc uint16
	for _, c := range b {
		crc = crc>>8 ^ crcTable[byte(crc)^c]
	}
	return crc
}

// crcTable is read-only after initialisation.
var crcTable = func() (t [256]uint16) {
	for i := range t {
		c := uint16(i)
		for range 8 {
			if c&1 != 0 {
				c = c>>1 ^ 0xA001
			} else {
				c >>= 1
			}
		}
		t[i] = c
	}
	return t
}()
