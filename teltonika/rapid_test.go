package teltonika

import (
	"bytes"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"strconv"
	"strings"
	"testing"
	"time"

	"pgregory.net/rapid"
)

var codecs = []byte{Codec8, Codec8E, Codec16}

// record draws a record that codec can carry, its IO grouped by size as
// on the wire.
func record(codec byte) *rapid.Generator[Record] {
	return rapid.Custom(func(t *rapid.T) Record {
		maxID := 65535
		if codec == Codec8 {
			maxID = 255
		}
		r := Record{
			Timestamp:  rapid.Int64Range(0, MaxTimestamp).Draw(t, "ts"),
			Priority:   rapid.Byte().Draw(t, "priority"),
			Lon:        rapid.Int32().Draw(t, "lon"),
			Lat:        rapid.Int32().Draw(t, "lat"),
			Alt:        rapid.Int16().Draw(t, "alt"),
			Angle:      rapid.Uint16().Draw(t, "angle"),
			Satellites: rapid.Byte().Draw(t, "satellites"),
			Speed:      rapid.Uint16().Draw(t, "speed"),
			Event:      uint16(rapid.IntRange(0, maxID).Draw(t, "event")),
		}
		if codec == Codec16 {
			r.Generation = rapid.Byte().Draw(t, "generation")
		}
		sizes := []byte{1, 2, 4, 8}
		if codec == Codec8E {
			sizes = append(sizes, 0)
		}
		for _, size := range sizes {
			for range rapid.IntRange(0, 6).Draw(t, "n") {
				e := IO{ID: uint16(rapid.IntRange(0, maxID).Draw(t, "id")), Size: size}
				if size == 0 {
					e.Bytes = rapid.SliceOfN(rapid.Byte(), 0, 40).Draw(t, "bytes")
				} else {
					e.Value = rapid.Uint64().Draw(t, "value")
					if size < 8 {
						e.Value &= 1<<(8*size) - 1
					}
				}
				r.IO = append(r.IO, e)
			}
		}
		return r
	})
}

func sameRecord(a, b *Record) bool {
	if a.Timestamp != b.Timestamp || a.Priority != b.Priority || a.Lon != b.Lon || a.Lat != b.Lat ||
		a.Alt != b.Alt || a.Angle != b.Angle || a.Satellites != b.Satellites || a.Speed != b.Speed ||
		a.Event != b.Event || a.Generation != b.Generation || len(a.IO) != len(b.IO) {
		return false
	}
	for i := range a.IO {
		x, y := a.IO[i], b.IO[i]
		if x.ID != y.ID || x.Size != y.Size || x.Value != y.Value || !bytes.Equal(x.Bytes, y.Bytes) {
			return false
		}
	}
	return true
}

// TestRoundTrip: records encoded in each codec split and decode back to
// themselves, with their IDs, and their JSON says what they hold.
func TestRoundTrip(t *testing.T) {
	rapid.Check(t, func(t *rapid.T) {
		codec := rapid.SampledFrom(codecs).Draw(t, "codec")
		recs := rapid.SliceOfN(record(codec), 1, 12).Draw(t, "records")
		imei := rapid.OneOf(rapid.StringMatching(`[0-9]{1,17}`), rapid.String(), rapid.Map(rapid.SliceOf(rapid.Byte()), func(b []byte) string { return string(b) })).Draw(t, "imei")
		b, err := Encode(codec, recs)
		if err != nil {
			t.Fatal(err)
		}
		n, data, err := Split(b, len(b))
		if err != nil || n != len(b) || data == nil {
			t.Fatalf("Split = %d of %d, %v", n, len(b), err)
		}
		p, err := Decode(data)
		if err != nil {
			t.Fatal(err)
		}
		if p.Codec != codec || len(p.Records) != len(recs) {
			t.Fatalf("codec 0x%02x, %d records; want 0x%02x, %d", p.Codec, len(p.Records), codec, len(recs))
		}
		for i := range recs {
			if !sameRecord(&p.Records[i], &recs[i]) {
				t.Fatalf("record %d\n got %+v\nwant %+v", i, p.Records[i], recs[i])
			}
			if RecordID(imei, &p.Records[i]) != RecordID(imei, &recs[i]) {
				t.Fatalf("record %d: ID changed", i)
			}
			checkJSON(t, AppendJSON(nil, imei, codec, &p.Records[i]), imei, codec, &recs[i])
		}
	})
}

// checkJSON reads j token by token, so that order and repeated IO IDs
// count, and compares every field with what r holds. String values are
// written "s:value", numbers as they are.
func checkJSON(t *rapid.T, j []byte, imei string, codec byte, r *Record) {
	if !json.Valid(j) {
		t.Fatalf("invalid JSON %s", j)
	}
	var wantIMEI string
	quoted, _ := json.Marshal(imei)
	json.Unmarshal(quoted, &wantIMEI)
	u := strconv.FormatUint
	want := []string{
		"imei", "s:" + wantIMEI,
		"codec", u(uint64(codec), 10),
		"ts", "s:" + time.UnixMilli(r.Timestamp).UTC().Format("2006-01-02T15:04:05.000Z07:00"),
		"priority", u(uint64(r.Priority), 10),
		"lon", strconv.FormatFloat(float64(r.Lon)/1e7, 'f', 7, 64),
		"lat", strconv.FormatFloat(float64(r.Lat)/1e7, 'f', 7, 64),
		"alt", strconv.Itoa(int(r.Alt)),
		"angle", u(uint64(r.Angle), 10),
		"satellites", u(uint64(r.Satellites), 10),
		"speed", u(uint64(r.Speed), 10),
		"event", u(uint64(r.Event), 10),
	}
	if codec == Codec16 {
		want = append(want, "generation", u(uint64(r.Generation), 10))
	}
	want = append(want, "io")
	for _, e := range r.IO {
		want = append(want, u(uint64(e.ID), 10))
		switch {
		case e.Size == 0:
			want = append(want, "s:"+hex.EncodeToString(e.Bytes))
		case e.Value > 1<<53-1:
			want = append(want, "s:"+u(e.Value, 10))
		default:
			want = append(want, u(e.Value, 10))
		}
	}
	dec := json.NewDecoder(bytes.NewReader(j))
	dec.UseNumber()
	got, err := object(dec)
	if err != nil || dec.More() {
		t.Fatalf("JSON %s: %v", j, err)
	}
	if strings.Join(got, "\x00") != strings.Join(want, "\x00") {
		t.Fatalf("JSON %s\n got %q\nwant %q", j, got, want)
	}
}

// object reads an object's keys and values, flattening nested objects.
func object(dec *json.Decoder) ([]string, error) {
	if tok, err := dec.Token(); err != nil || tok != json.Delim('{') {
		return nil, fmt.Errorf("%v, %v: not an object", tok, err)
	}
	var out []string
	for dec.More() {
		k, err := dec.Token()
		if err != nil {
			return nil, err
		}
		out = append(out, k.(string))
		if k == "io" {
			io, err := object(dec)
			if err != nil {
				return nil, err
			}
			out = append(out, io...)
			continue
		}
		v, err := dec.Token()
		if err != nil {
			return nil, err
		}
		switch v := v.(type) {
		case string:
			out = append(out, "s:"+v)
		case json.Number:
			out = append(out, string(v))
		default:
			return nil, fmt.Errorf("value %v of %s", v, k)
		}
	}
	_, err := dec.Token()
	return out, err
}

// TestSplitAnywhere: a stream of encoded packets and keep-alives, cut at
// random places, splits into the same packets.
func TestSplitAnywhere(t *testing.T) {
	rapid.Check(t, func(t *rapid.T) {
		var in []byte
		var want [][]byte
		for range rapid.IntRange(1, 5).Draw(t, "packets") {
			in = append(in, bytes.Repeat([]byte{KeepAlive}, rapid.IntRange(0, 2).Draw(t, "keep-alives"))...)
			codec := rapid.SampledFrom(codecs).Draw(t, "codec")
			b, err := Encode(codec, rapid.SliceOfN(record(codec), 1, 3).Draw(t, "records"))
			if err != nil {
				t.Fatal(err)
			}
			in = append(in, b...)
			want = append(want, b[headerLen:len(b)-trailerLen])
		}
		var got [][]byte
		var pending []byte
		for len(in) > 0 {
			k := rapid.IntRange(1, len(in)).Draw(t, "read")
			pending, in = append(pending, in[:k]...), in[k:]
			for {
				n, data, err := Split(pending, 0)
				if err != nil {
					t.Fatal(err)
				}
				pending = pending[n:]
				if data == nil {
					break
				}
				got = append(got, bytes.Clone(data))
			}
		}
		if len(pending) != 0 || !equalPackets(got, want) {
			t.Fatalf("split %x with %d bytes left, want %x", got, len(pending), want)
		}
	})
}
