package teltonika

import (
	"encoding/binary"
	"fmt"
)

// Encode encodes records as a whole packet in codec (Codec8, Codec8E or
// Codec16): preamble, data length, data and CRC, as a device sends it.
// IO elements are written grouped by size, keeping their order within a
// group, so records whose IO is already grouped (as Decode returns it)
// come back identical. It refuses 0 or more than 255 records and any
// field the codec cannot carry: an ID or an event over 255 in Codec 8,
// a variable-length value outside Codec 8E, a generation type outside
// Codec 16, a value wider than its size, a timestamp outside
// 0..MaxTimestamp, more elements than a count holds.
func Encode(codec byte, records []Record) ([]byte, error) {
	switch codec {
	case Codec8, Codec8E, Codec16:
	default:
		return nil, fmt.Errorf("%w: 0x%02x", ErrCodec, codec)
	}
	if len(records) == 0 || len(records) > 255 {
		return nil, fmt.Errorf("teltonika: %d records in a packet, want 1 to 255", len(records))
	}
	for i := range records {
		if err := validate(codec, &records[i]); err != nil {
			return nil, fmt.Errorf("teltonika: record %d: %w", i, err)
		}
	}
	b := make([]byte, headerLen, 64*len(records))
	b = append(b, codec, byte(len(records)))
	for i := range records {
		b = appendRecord(b, codec, &records[i])
	}
	b = append(b, byte(len(records)))
	data := b[headerLen:]
	binary.BigEndian.PutUint32(b[4:], uint32(len(data)))
	return binary.BigEndian.AppendUint32(b, uint32(CRC16(data))), nil
}

func validate(codec byte, r *Record) error {
	if r.Timestamp < 0 || r.Timestamp > MaxTimestamp {
		return fmt.Errorf("timestamp %d outside 0..%d", r.Timestamp, int64(MaxTimestamp))
	}
	if codec == Codec8 && r.Event > 255 {
		return fmt.Errorf("event ID %d over 255 in Codec 8", r.Event)
	}
	if codec != Codec16 && r.Generation != 0 {
		return fmt.Errorf("generation type %d outside Codec 16", r.Generation)
	}
	// The widest count: 1 byte outside Codec 8E.
	maxCount := 255
	if codec == Codec8E {
		maxCount = 65535
	}
	var groups [5]int
	for _, e := range r.IO {
		g := group(e.Size)
		if g < 0 {
			return fmt.Errorf("IO %d: size %d, want 1, 2, 4, 8 or 0 (variable)", e.ID, e.Size)
		}
		groups[g]++
		switch {
		case codec == Codec8 && e.ID > 255:
			return fmt.Errorf("IO ID %d over 255 in Codec 8", e.ID)
		case e.Size == 0 && codec != Codec8E:
			return fmt.Errorf("IO %d: variable-length value outside Codec 8E", e.ID)
		case e.Size == 0 && len(e.Bytes) > 65535:
			return fmt.Errorf("IO %d: variable-length value of %d bytes", e.ID, len(e.Bytes))
		case e.Size != 0 && e.Size < 8 && e.Value>>(8*e.Size) != 0:
			return fmt.Errorf("IO %d: value %d wider than %d bytes", e.ID, e.Value, e.Size)
		}
	}
	for _, n := range groups {
		if n > maxCount {
			return fmt.Errorf("%d IO elements of one size, max %d", n, maxCount)
		}
	}
	if len(r.IO) > maxCount {
		return fmt.Errorf("%d IO elements, max %d", len(r.IO), maxCount)
	}
	return nil
}

// group is the wire group of an IO element of size: 1, 2, 4, 8 bytes,
// variable; -1 for no group.
func group(size byte) int {
	switch size {
	case 1:
		return 0
	case 2:
		return 1
	case 4:
		return 2
	case 8:
		return 3
	case 0:
		return 4
	}
	return -1
}

// appendRecord appends r as codec carries it, without checks: a field the
// codec cannot carry is truncated.
func appendRecord(b []byte, codec byte, r *Record) []byte {
	b = binary.BigEndian.AppendUint64(b, uint64(r.Timestamp))
	b = append(b, r.Priority)
	b = binary.BigEndian.AppendUint32(b, uint32(r.Lon))
	b = binary.BigEndian.AppendUint32(b, uint32(r.Lat))
	b = binary.BigEndian.AppendUint16(b, uint16(r.Alt))
	b = binary.BigEndian.AppendUint16(b, r.Angle)
	b = append(b, r.Satellites)
	b = binary.BigEndian.AppendUint16(b, r.Speed)
	wide := func(b []byte, v int) []byte { // an ID, or the event
		if codec == Codec8 {
			return append(b, byte(v))
		}
		return binary.BigEndian.AppendUint16(b, uint16(v))
	}
	count := func(b []byte, n int) []byte {
		if codec == Codec8E {
			return binary.BigEndian.AppendUint16(b, uint16(n))
		}
		return append(b, byte(n))
	}
	b = wide(b, int(r.Event))
	if codec == Codec16 {
		b = append(b, r.Generation)
	}
	var groups [5]int
	for _, e := range r.IO {
		if g := group(e.Size); g >= 0 {
			groups[g]++
		}
	}
	total := groups[0] + groups[1] + groups[2] + groups[3]
	if codec == Codec8E {
		total += groups[4]
	}
	b = count(b, total)
	for g, size := range [...]byte{1, 2, 4, 8} {
		b = count(b, groups[g])
		for _, e := range r.IO {
			if e.Size != size {
				continue
			}
			b = wide(b, int(e.ID))
			switch size {
			case 1:
				b = append(b, byte(e.Value))
			case 2:
				b = binary.BigEndian.AppendUint16(b, uint16(e.Value))
			case 4:
				b = binary.BigEndian.AppendUint32(b, uint32(e.Value))
			default:
				b = binary.BigEndian.AppendUint64(b, e.Value)
			}
		}
	}
	if codec == Codec8E {
		b = count(b, groups[4])
		for _, e := range r.IO {
			if e.Size == 0 {
				b = binary.BigEndian.AppendUint16(b, e.ID)
				b = binary.BigEndian.AppendUint16(b, uint16(len(e.Bytes)))
				b = append(b, e.Bytes...)
			}
		}
	}
	return b
}
