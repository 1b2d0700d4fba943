package teltonika

import (
	"encoding/binary"
	"fmt"
	"time"
)

// Packet is a decoded AVL packet.
type Packet struct {
	Codec   byte
	Records []Record

	ios []IO // storage of the Records' IO elements, reused by DecodeInto
}

// Record is one AVL record: a position and the IO elements read with it.
type Record struct {
	Timestamp  int64  // milliseconds since the Unix epoch, UTC
	Priority   byte   // 0 low, 1 high, 2 panic
	Lon, Lat   int32  // 1e-7 degrees, east and north positive
	Alt        int16  // metres above sea level
	Angle      uint16 // heading, degrees clockwise from north
	Satellites byte   // satellites in use; 0 means no fix
	Speed      uint16 // km/h
	Event      uint16 // ID of the IO element that triggered the record, 0 if none
	Generation byte   // Codec 16 only: how the record was generated (0 on exit … 7 periodical)
	IO         []IO   // in wire order: grouped by size (1, 2, 4, 8 bytes, variable), as sent within a group
}

// Time returns the record's timestamp as a time.Time in UTC.
func (r *Record) Time() time.Time { return time.UnixMilli(r.Timestamp).UTC() }

// IO is one IO element of a record. Values of 1, 2, 4 or 8 bytes are
// unsigned as on the wire; an element whose meaning is signed is the
// consumer's to reinterpret.
type IO struct {
	ID    uint16
	Size  byte   // 1, 2, 4 or 8: the value is in Value; 0: a variable-length value (Codec 8E only) in Bytes
	Value uint64 // fixed-size value
	Bytes []byte // variable-length value; Decode's alias the packet data
}

// MaxTimestamp is the last millisecond of year 9999, the latest time an
// RFC 3339 timestamp can carry. Decode refuses records past it (and ones
// with the top bit set, which would be negative).
const MaxTimestamp = 253402300799999

// fixed is the size of a record's fixed part: timestamp, priority and
// the GPS element.
const fixed = 8 + 1 + 4 + 4 + 2 + 2 + 1 + 2

// minRecord is the size of a record without IO elements, per codec.
func minRecord(codec byte) int {
	switch codec {
	case Codec8:
		return fixed + 1 + 1 + 4 // event, total, four counts
	case Codec8E:
		return fixed + 2 + 2 + 5*2 // event, total, five counts
	default:
		return fixed + 2 + 1 + 1 + 4 // event, generation, total, four counts
	}
}

// Decode decodes a packet's data, the L bytes Split or ReadPacket returned.
// It checks that both record counts agree, that each record's IO element
// count matches the elements sent, and that the records fill the data
// exactly. Variable-length IO values alias data.
func Decode(data []byte) (Packet, error) {
	var p Packet
	err := DecodeInto(&p, data)
	return p, err
}

// DecodeInto is Decode into p, reusing the storage of p's records and IO
// elements: what p held before is overwritten.
func DecodeInto(p *Packet, data []byte) error {
	p.Codec, p.Records = 0, p.Records[:0]
	if len(data) < minData {
		return fmt.Errorf("%w: data length %d", ErrMalformed, len(data))
	}
	codec, n := data[0], int(data[1])
	switch codec {
	case Codec8, Codec8E, Codec16:
	default:
		return fmt.Errorf("%w: 0x%02x", ErrCodec, codec)
	}
	if data[len(data)-1] != data[1] {
		return fmt.Errorf("%w: %d then %d", ErrCount, data[1], data[len(data)-1])
	}
	if n == 0 {
		return fmt.Errorf("%w: no records", ErrMalformed)
	}
	// Bounded by the data, so that a count byte cannot make us allocate
	// for records that are not there.
	if n*minRecord(codec) > len(data)-minData {
		return fmt.Errorf("%w: %d records cannot fit in %d bytes", ErrMalformed, n, len(data))
	}
	if cap(p.Records) < n {
		p.Records = make([]Record, n)
	}
	p.Records = p.Records[:n]
	if p.ios == nil {
		p.ios = make([]IO, 0, len(data)/8)
	}
	d := decoder{b: data[:len(data)-1], off: 2, codec: codec, ios: p.ios[:0]}
	var ends [256]int
	for i := range p.Records {
		if err := d.record(&p.Records[i]); err != nil {
			p.Records = p.Records[:0]
			p.ios = d.ios
			return fmt.Errorf("record %d: %w", i, err)
		}
		ends[i] = len(d.ios)
	}
	if d.off != len(d.b) {
		p.Records = p.Records[:0]
		p.ios = d.ios
		return fmt.Errorf("%w: %d bytes after the last record", ErrMalformed, len(d.b)-d.off)
	}
	// IO slices are cut only now: appending may have moved the storage.
	start := 0
	for i := range p.Records {
		p.Records[i].IO = d.ios[start:ends[i]:ends[i]]
		start = ends[i]
	}
	p.Codec, p.ios = codec, d.ios
	return nil
}

type decoder struct {
	b     []byte
	off   int
	codec byte
	ios   []IO
}

// add appends a zero IO element and returns it. Its fields are then set
// one by one: building an IO and copying it in makes the CPU read back
// the narrow stores just made as wide loads, which stalls.
func (d *decoder) add() *IO {
	if len(d.ios) == cap(d.ios) {
		d.ios = append(d.ios, IO{})
	} else {
		d.ios = d.ios[:len(d.ios)+1]
		d.ios[len(d.ios)-1] = IO{}
	}
	return &d.ios[len(d.ios)-1]
}

func (d *decoder) short(what string) error {
	return fmt.Errorf("%w: %s cut short at byte %d", ErrMalformed, what, d.off)
}

// count reads an IO count or ID: 2 bytes in Codec 8E, 1 byte otherwise.
// wide makes it 2 bytes in Codec 16 too (IDs and the event ID).
func (d *decoder) count(wide bool) (int, bool) {
	if d.codec == Codec8E || wide && d.codec == Codec16 {
		if len(d.b)-d.off < 2 {
			return 0, false
		}
		v := binary.BigEndian.Uint16(d.b[d.off:])
		d.off += 2
		return int(v), true
	}
	if d.off >= len(d.b) {
		return 0, false
	}
	v := d.b[d.off]
	d.off++
	return int(v), true
}

func (d *decoder) record(r *Record) error {
	if len(d.b)-d.off < fixed {
		return d.short("record")
	}
	b := d.b[d.off : d.off+fixed]
	ts := binary.BigEndian.Uint64(b)
	if ts > MaxTimestamp {
		return fmt.Errorf("%w: timestamp %d ms is past year 9999", ErrMalformed, ts)
	}
	*r = Record{
		Timestamp:  int64(ts),
		Priority:   b[8],
		Lon:        int32(binary.BigEndian.Uint32(b[9:])),
		Lat:        int32(binary.BigEndian.Uint32(b[13:])),
		Alt:        int16(binary.BigEndian.Uint16(b[17:])),
		Angle:      binary.BigEndian.Uint16(b[19:]),
		Satellites: b[21],
		Speed:      binary.BigEndian.Uint16(b[22:]),
	}
	d.off += fixed
	ev, ok := d.count(true)
	if !ok {
		return d.short("event ID")
	}
	r.Event = uint16(ev)
	if d.codec == Codec16 {
		if d.off >= len(d.b) {
			return d.short("generation type")
		}
		r.Generation = d.b[d.off]
		d.off++
	}
	total, ok := d.count(false)
	if !ok {
		return d.short("IO count")
	}
	start := len(d.ios)
	for _, size := range [...]int{1, 2, 4, 8} {
		n, ok := d.count(false)
		if !ok {
			return d.short("IO count")
		}
		idLen := 1
		if d.codec != Codec8 {
			idLen = 2
		}
		if n > (len(d.b)-d.off)/(idLen+size) {
			return fmt.Errorf("%w: %d IO elements of %d bytes cut short at byte %d", ErrMalformed, n, size, d.off)
		}
		for range n {
			id, _ := d.count(true)
			v := d.b[d.off : d.off+size]
			d.off += size
			var val uint64
			switch size {
			case 1:
				val = uint64(v[0])
			case 2:
				val = uint64(binary.BigEndian.Uint16(v))
			case 4:
				val = uint64(binary.BigEndian.Uint32(v))
			default:
				val = binary.BigEndian.Uint64(v)
			}
			e := d.add()
			e.ID, e.Size, e.Value = uint16(id), byte(size), val
		}
	}
	if d.codec == Codec8E {
		n, ok := d.count(false)
		if !ok {
			return d.short("NX count")
		}
		for range n {
			if len(d.b)-d.off < 4 {
				return d.short("NX element")
			}
			id := binary.BigEndian.Uint16(d.b[d.off:])
			l := int(binary.BigEndian.Uint16(d.b[d.off+2:]))
			d.off += 4
			if len(d.b)-d.off < l {
				return d.short("NX value")
			}
			e := d.add()
			e.ID, e.Bytes = id, d.b[d.off:d.off+l:d.off+l]
			d.off += l
		}
	}
	if got := len(d.ios) - start; got != total {
		return fmt.Errorf("%w: IO count %d, %d elements sent", ErrMalformed, total, got)
	}
	return nil
}
