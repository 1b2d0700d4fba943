package teltonika

import (
	"bufio"
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"testing"
)

const fuzzMax = 1024

var seedPackets = []string{wikiCodec8, wikiCodec8E, wikiCodec16, traccar8NegAlt, traccar8EVIN, traccar8Wide, traccarCodec12, traccarZeroLength, traccarUDP, wikiIMEI}

// FuzzSplit cuts arbitrary bytes with Split and with ReadPacket: neither
// panics, a packet is never over the cap nor read into more than it, a
// fatal error consumes nothing, and both see the same packets and errors.
func FuzzSplit(f *testing.F) {
	in, _ := stream(f)
	f.Add(in)
	for _, s := range seedPackets {
		f.Add(unhex(f, s))
	}
	f.Add(header(fuzzMax + 1))
	f.Add(append(header(5), 8, 1, 2, 3, 1, 0, 0, 0, 0))
	f.Fuzz(func(t *testing.T, in []byte) {
		var split []string
		for b := in; ; {
			n, data, err := Split(b, fuzzMax)
			if n < 0 || n > len(b) {
				t.Fatalf("advance %d of %d bytes", n, len(b))
			}
			if data != nil && (err != nil || len(data) < minData || len(data) > fuzzMax) {
				t.Fatalf("%d bytes of data with %v", len(data), err)
			}
			if err != nil {
				split = append(split, kind(err))
				if fatal(err) != (n == 0) {
					t.Fatalf("%v with an advance of %d", err, n)
				}
			} else if data != nil {
				split = append(split, fmt.Sprintf("%x", data))
			}
			if n == 0 {
				break
			}
			b = b[n:]
		}

		var read []string
		var buf []byte
		r := bufio.NewReaderSize(bytes.NewReader(in), 16)
		for {
			data, err := ReadPacket(r, buf, fuzzMax)
			if err == io.EOF || err == io.ErrUnexpectedEOF {
				break
			}
			if cap(data) > fuzzMax+trailerLen {
				t.Fatalf("read into %d bytes", cap(data))
			}
			if err != nil {
				read = append(read, kind(err))
				if fatal(err) {
					break
				}
			} else if data != nil {
				read = append(read, fmt.Sprintf("%x", data))
				buf = data
			}
		}
		if fmt.Sprint(split) != fmt.Sprint(read) {
			t.Fatalf("Split saw %v, ReadPacket %v", split, read)
		}
	})
}

func kind(err error) string {
	for _, k := range []error{ErrPreamble, ErrTooLarge, ErrCRC, ErrCount, ErrMalformed} {
		if errors.Is(err, k) {
			return k.Error()
		}
	}
	return "unexpected: " + err.Error()
}

func fatal(err error) bool { return errors.Is(err, ErrPreamble) || errors.Is(err, ErrTooLarge) }

// FuzzDecode decodes arbitrary data: it never panics, allocates in
// proportion to the data, and whatever it accepts encodes back to the same
// bytes and gives valid JSON.
func FuzzDecode(f *testing.F) {
	for _, s := range append(seedPackets, traccar8Records14, traccar8E4, traccar16, traccarExtended) {
		b := unhex(f, s)
		if len(b) > headerLen+trailerLen {
			f.Add(b[headerLen : len(b)-trailerLen])
		}
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		var p Packet
		err := DecodeInto(&p, data)
		if cap(p.Records) > 255 || cap(p.ios) > len(data)+8 {
			t.Fatalf("%d records and %d IO elements of room for %d bytes", cap(p.Records), cap(p.ios), len(data))
		}
		if err != nil {
			if len(p.Records) != 0 {
				t.Fatalf("%d records with %v", len(p.Records), err)
			}
			return
		}
		b, err := Encode(p.Codec, p.Records)
		if err != nil {
			t.Fatalf("decoded, not encoded: %v", err)
		}
		if !bytes.Equal(b[headerLen:len(b)-trailerLen], data) {
			t.Fatalf("re-encoded as %x", b[headerLen:len(b)-trailerLen])
		}
		for i := range p.Records {
			if j := AppendJSON(nil, "1", p.Codec, &p.Records[i]); !json.Valid(j) {
				t.Fatalf("invalid JSON %s", j)
			}
			RecordID("1", &p.Records[i])
		}
		// Decoding into the used packet again gives the same.
		before := fmt.Sprint(p.Records)
		if err := DecodeInto(&p, data); err != nil || fmt.Sprint(p.Records) != before {
			t.Fatalf("decoded again: %v", err)
		}
	})
}
