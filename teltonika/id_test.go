package teltonika

import (
	"encoding/json"
	"strings"
	"testing"
)

func TestRecordID(t *testing.T) {
	p := decodeVector(t, wikiCodec8, Codec8, 1)
	r := p.Records[0]
	id := RecordID("356307042441013", &r)
	if !strings.HasPrefix(id, "356307042441013:") || len(id) != len("356307042441013:")+32 || strings.Trim(id[16:], "0123456789abcdef") != "" {
		t.Fatalf("ID %q", id)
	}

	// The same record in another codec, in another packet with other
	// records, is the same record.
	b, err := Encode(Codec8E, []Record{{Timestamp: 1}, r})
	if err != nil {
		t.Fatal(err)
	}
	_, data, _ := Split(b, 0)
	q, err := Decode(data)
	if err != nil {
		t.Fatal(err)
	}
	if got := RecordID("356307042441013", &q.Records[1]); got != id {
		t.Errorf("resent in Codec 8E at index 1: %s, want %s", got, id)
	}

	// Any difference is another record, as is another device.
	if RecordID("356307042441014", &r) == id {
		t.Error("another IMEI, same ID")
	}
	edits := map[string]func(*Record){
		"timestamp":  func(r *Record) { r.Timestamp++ },
		"priority":   func(r *Record) { r.Priority++ },
		"lon":        func(r *Record) { r.Lon++ },
		"lat":        func(r *Record) { r.Lat-- },
		"alt":        func(r *Record) { r.Alt = -1 },
		"angle":      func(r *Record) { r.Angle++ },
		"satellites": func(r *Record) { r.Satellites++ },
		"speed":      func(r *Record) { r.Speed++ },
		"event":      func(r *Record) { r.Event = 256 },
		"generation": func(r *Record) { r.Generation = 7 },
		"IO value":   func(r *Record) { r.IO[0].Value++ },
		"IO ID":      func(r *Record) { r.IO[0].ID = 300 },
		"IO size":    func(r *Record) { r.IO[4].Size = 4 },
		"IO order":   func(r *Record) { r.IO[0], r.IO[1] = r.IO[1], r.IO[0] },
		"IO dropped": func(r *Record) { r.IO = r.IO[1:] },
		"NX added":   func(r *Record) { r.IO = append(r.IO, IO{ID: 1}) },
	}
	for name, edit := range edits {
		e := r
		e.IO = append([]IO(nil), r.IO...)
		edit(&e)
		if RecordID("356307042441013", &e) == id {
			t.Errorf("%s changed, same ID", name)
		}
	}
}

func TestJSONNumbers(t *testing.T) {
	r := Record{IO: []IO{
		{ID: 1, Size: 8, Value: 1<<53 - 1},
		{ID: 2, Size: 8, Value: 1 << 53},
		{ID: 3, Size: 8, Value: 1<<64 - 1},
		{ID: 4, Size: 4, Value: 1<<32 - 1},
		{ID: 5, Bytes: []byte{0xAB, 0x01}},
		{ID: 6},
	}, Lon: -2147483648, Lat: 2147483647, Alt: -32768}
	j := string(AppendJSON(nil, "1", Codec8E, &r))
	for _, s := range []string{
		`"lon":-214.7483648,"lat":214.7483647,"alt":-32768,`,
		`"io":{"1":9007199254740991,"2":"9007199254740992","3":"18446744073709551615","4":4294967295,"5":"ab01","6":""}}`,
		`"ts":"1970-01-01T00:00:00.000Z"`,
	} {
		if !strings.Contains(j, s) {
			t.Errorf("JSON %s\nhas no %s", j, s)
		}
	}
	for _, c := range []struct {
		lon  int32
		want string
	}{{1, "0.0000001"}, {-1, "-0.0000001"}, {-10000000, "-1.0000000"}, {253011517, "25.3011517"}} {
		if got := string(appendDegrees(nil, c.lon)); got != c.want {
			t.Errorf("appendDegrees(%d) = %s, want %s", c.lon, got, c.want)
		}
	}
}

func TestJSONString(t *testing.T) {
	for _, s := range []string{"356307042441013", `a"b\c`, "\x00\x1f\x7f", "é€😀", "bad\xffutf8\xc3", "\u2028"} {
		j := AppendJSON(nil, s, Codec8, &Record{})
		var v struct{ IMEI string }
		if err := json.Unmarshal(j, &v); err != nil {
			t.Fatalf("%q: %v in %s", s, err, j)
		}
		want, _ := json.Marshal(s)
		var w string
		json.Unmarshal(want, &w)
		if v.IMEI != w {
			t.Errorf("%q came back as %q, want %q", s, v.IMEI, w)
		}
	}
}
