package teltonika

import (
	"bufio"
	"bytes"
	"encoding/binary"
	"errors"
	"io"
	"runtime"
	"strings"
	"testing"
	"testing/iotest"
)

func TestCRC16(t *testing.T) {
	// The catalogue check value of CRC-16/ARC.
	if got := CRC16([]byte("123456789")); got != 0xBB3D {
		t.Fatalf("CRC16(123456789) = %04x, want bb3d", got)
	}
}

// stream is three packets with keep-alives before, between and after.
func stream(t testing.TB) (b []byte, packets [][]byte) {
	for _, s := range []string{wikiCodec8, wikiCodec8E, wikiCodec16} {
		p := unhex(t, s)
		packets = append(packets, p[headerLen:len(p)-trailerLen])
	}
	b = append(b, KeepAlive)
	b = append(b, unhex(t, wikiCodec8)...)
	b = append(b, KeepAlive, KeepAlive)
	b = append(b, unhex(t, wikiCodec8E)...)
	b = append(b, unhex(t, wikiCodec16)...)
	b = append(b, KeepAlive)
	return b, packets
}

func TestSplitStream(t *testing.T) {
	b, want := stream(t)
	var got [][]byte
	for len(b) > 0 {
		n, data, err := Split(b, 0)
		if err != nil || n == 0 {
			t.Fatalf("Split = %d, %v with %d bytes left", n, err, len(b))
		}
		if data != nil {
			got = append(got, data)
		}
		b = b[n:]
	}
	if !equalPackets(got, want) {
		t.Fatalf("split %x, want %x", got, want)
	}
}

// TestSplitByteByByte grows a buffer by one byte at a time, as one-byte
// reads would, and splits after each.
func TestSplitByteByByte(t *testing.T) {
	in, want := stream(t)
	var got [][]byte
	var pending []byte
	keepAlives := 0
	for _, c := range in {
		pending = append(pending, c)
		n, data, err := Split(pending, 0)
		if err != nil {
			t.Fatalf("Split: %v", err)
		}
		if data != nil {
			got = append(got, bytes.Clone(data))
		} else {
			keepAlives += n
		}
		pending = pending[n:]
	}
	if len(pending) != 0 || !equalPackets(got, want) || keepAlives != 4 {
		t.Fatalf("split %x, %d keep-alives, %d bytes left; want %x", got, keepAlives, len(pending), want)
	}
}

func TestReadPacketOneByteReads(t *testing.T) {
	in, want := stream(t)
	r := bufio.NewReaderSize(iotest.OneByteReader(bytes.NewReader(in)), 16)
	var got [][]byte
	var buf []byte
	keepAlives := 0
	for {
		data, err := ReadPacket(r, buf, 0)
		if err == io.EOF {
			break
		}
		if err != nil {
			t.Fatal(err)
		}
		if data == nil {
			keepAlives++
			continue
		}
		got = append(got, bytes.Clone(data))
		buf = data
	}
	// One-byte reads show each keep-alive alone.
	if !equalPackets(got, want) || keepAlives != 4 {
		t.Fatalf("read %x, %d keep-alives; want %x", got, keepAlives, want)
	}
}

func equalPackets(a, b [][]byte) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		if !bytes.Equal(a[i], b[i]) {
			return false
		}
	}
	return true
}

// header is a packet header announcing l data bytes.
func header(l uint32) []byte {
	return binary.BigEndian.AppendUint32(make([]byte, 4), l)
}

func TestTooLarge(t *testing.T) {
	for _, c := range []struct {
		l      uint32
		maxLen int
	}{{DefaultMaxPacket + 1, 0}, {1<<32 - 1, 0}, {1281, 1280}, {1 << 30, 1<<30 - 1}} {
		// Only the header is there: the refusal does not wait for data.
		n, data, err := Split(header(c.l), c.maxLen)
		if !errors.Is(err, ErrTooLarge) || n != 0 || data != nil {
			t.Errorf("Split(L=%d, max %d) = %d, %v, %v", c.l, c.maxLen, n, data, err)
		}
		var before, after runtime.MemStats
		runtime.ReadMemStats(&before)
		data, err = ReadPacket(bufio.NewReader(bytes.NewReader(header(c.l))), nil, c.maxLen)
		runtime.ReadMemStats(&after)
		if !errors.Is(err, ErrTooLarge) || data != nil {
			t.Errorf("ReadPacket(L=%d, max %d) = %v, %v", c.l, c.maxLen, data, err)
		}
		if d := after.TotalAlloc - before.TotalAlloc; d > 64<<10 {
			t.Errorf("ReadPacket(L=%d, max %d) allocated %d bytes", c.l, c.maxLen, d)
		}
	}
	// At the cap it is accepted, and waits for its data.
	if n, data, err := Split(header(1280), 1280); n != 0 || data != nil || err != nil {
		t.Errorf("Split(L=1280, max 1280) = %d, %v, %v", n, data, err)
	}
}

// refuse splits and reads a packet that is refused with want, followed by
// a good one: both report want and then find the good packet.
func refuse(t *testing.T, bad []byte, want error) {
	t.Helper()
	good := unhex(t, wikiCodec8E)
	in := append(bytes.Clone(bad), good...)
	n, data, err := Split(in, 0)
	if !errors.Is(err, want) || n != len(bad) || data != nil {
		t.Fatalf("Split = %d, %v, %v; want %d, %v", n, data, err, len(bad), want)
	}
	if _, data, err := Split(in[n:], 0); err != nil || data == nil {
		t.Fatalf("Split after the refused packet: %v", err)
	}
	r := bufio.NewReaderSize(iotest.HalfReader(bytes.NewReader(in)), 16)
	if _, err := ReadPacket(r, nil, 0); !errors.Is(err, want) {
		t.Fatalf("ReadPacket = %v, want %v", err, want)
	}
	if data, err := ReadPacket(r, nil, 0); err != nil || !bytes.Equal(data, good[headerLen:len(good)-trailerLen]) {
		t.Fatalf("ReadPacket after the refused packet: %x, %v", data, err)
	}
}

func TestBadCRC(t *testing.T) {
	bad := unhex(t, wikiCodec8)
	bad[headerLen+10] ^= 0x40 // a timestamp bit
	refuse(t, bad, ErrCRC)
}

// withCRC returns a packet of data with a correct CRC.
func withCRC(data []byte) []byte {
	b := append(header(uint32(len(data))), data...)
	return binary.BigEndian.AppendUint32(b, uint32(CRC16(data)))
}

func TestCountMismatch(t *testing.T) {
	b := unhex(t, wikiCodec16)
	data := b[headerLen : len(b)-trailerLen]
	data[len(data)-1] = 1 // the first count says 2
	refuse(t, withCRC(data), ErrCount)
	if _, err := Decode(data); !errors.Is(err, ErrCount) {
		t.Fatalf("Decode: %v", err)
	}
}

func TestShortData(t *testing.T) {
	refuse(t, withCRC([]byte{Codec8, 0}), ErrMalformed)
}

func TestPreamble(t *testing.T) {
	// Reported as soon as a non-zero byte is seen in the preamble.
	for _, in := range []string{"\x01", "\x00\x00\x01", "\xff\x00\x0f123", "GET / HTTP/1.1\r\n"} {
		n, data, err := Split([]byte(in), 0)
		if !errors.Is(err, ErrPreamble) || n != 0 || data != nil {
			t.Errorf("Split(%q) = %d, %v, %v", in, n, data, err)
		}
		r := bufio.NewReader(strings.NewReader(in))
		var rerr error
		for range 2 { // a keep-alive first, then the preamble
			if _, rerr = ReadPacket(r, nil, 0); rerr != nil {
				break
			}
		}
		if !errors.Is(rerr, ErrPreamble) {
			t.Errorf("ReadPacket(%q) = %v", in, rerr)
		}
	}
	// A partial preamble of zeros waits.
	if n, data, err := Split([]byte{KeepAlive, 0, 0, 0}, 0); n != 1 || data != nil || err != nil {
		t.Errorf("Split(ff 00 00 00) = %d, %v, %v", n, data, err)
	}
}

func TestParseIMEI(t *testing.T) {
	for _, c := range []struct {
		in   string
		n    int
		imei string
		err  error
	}{
		{"\x00\x0f356307042441013", 17, "356307042441013", nil},
		{"\xff\x00\x0f356307042441013\x00\x00", 18, "356307042441013", nil}, // keep-alive before, packet after
		{"\x00\x011", 3, "1", nil},
		{"\x00\x1112345678901234567", 19, "12345678901234567", nil},
		{"", 0, "", nil},
		{"\xff\xff", 0, "", nil},
		{"\x00", 0, "", nil},
		{"\x00\x0f3563", 0, "", nil},
		{"\x00\x00", 0, "", ErrIMEI},
		{"\x00\x12", 0, "", ErrIMEI}, // 18 digits
		{"\x00\x00\x00\x00\x00\x00\x00\x36", 0, "", ErrIMEI},
		{"\x00\x0f35a", 0, "", ErrIMEI}, // refused before the rest comes
	} {
		n, imei, err := ParseIMEI([]byte(c.in))
		if n != c.n || imei != c.imei || !errors.Is(err, c.err) || (err == nil) != (c.err == nil) {
			t.Errorf("ParseIMEI(%q) = %d, %q, %v; want %d, %q, %v", c.in, n, imei, err, c.n, c.imei, c.err)
		}
	}
}

func TestReadIMEI(t *testing.T) {
	// The handshake then a packet in one read: ReadIMEI leaves the packet.
	in := append([]byte("\xff\x00\x0f356307042441013"), unhex(t, wikiCodec8)...)
	r := bufio.NewReader(bytes.NewReader(in))
	imei, err := ReadIMEI(r)
	if err != nil || imei != "356307042441013" {
		t.Fatalf("ReadIMEI = %q, %v", imei, err)
	}
	if data, err := ReadPacket(r, nil, 0); err != nil || data[0] != Codec8 {
		t.Fatalf("ReadPacket after the handshake: %x, %v", data, err)
	}
	for _, c := range []struct {
		in  string
		err error
	}{
		{"", io.EOF},
		{"\x00", io.ErrUnexpectedEOF},
		{"\x00\x0f3563", io.ErrUnexpectedEOF},
		{"\x00\x00", ErrIMEI},
		{"\x00\x12123456789012345678", ErrIMEI},
		{"\x00\x0f35630704244101x", ErrIMEI},
	} {
		if _, err := ReadIMEI(bufio.NewReader(strings.NewReader(c.in))); !errors.Is(err, c.err) {
			t.Errorf("ReadIMEI(%q) = %v, want %v", c.in, err, c.err)
		}
	}
}

func TestReadPacketEOF(t *testing.T) {
	b := unhex(t, wikiCodec8)
	for _, n := range []int{1, 5, headerLen, headerLen + 3, len(b) - 1} {
		if _, err := ReadPacket(bufio.NewReader(bytes.NewReader(b[:n])), nil, 0); err != io.ErrUnexpectedEOF {
			t.Errorf("%d of %d bytes: %v", n, len(b), err)
		}
	}
	if _, err := ReadPacket(bufio.NewReader(bytes.NewReader(nil)), nil, 0); err != io.EOF {
		t.Errorf("empty: %v", err)
	}
}

func TestDecodeErrors(t *testing.T) {
	good := func() []byte {
		b := unhex(t, wikiCodec8)
		return b[headerLen : len(b)-trailerLen]
	}
	for _, c := range []struct {
		name string
		edit func([]byte) []byte
		want error
	}{
		{"short", func(b []byte) []byte { return b[:2] }, ErrMalformed},
		{"codec 12", func(b []byte) []byte { b[0] = 0x0C; return b }, ErrCodec},
		{"no records", func(b []byte) []byte { return []byte{Codec8, 0, 0} }, ErrMalformed},
		{"more records than bytes", func(b []byte) []byte { b[1], b[len(b)-1] = 2, 2; return b }, ErrMalformed},
		{"trailing byte", func(b []byte) []byte { return append(b[:len(b)-1], 0, 1) }, ErrMalformed},
		{"total IO count", func(b []byte) []byte { b[2+fixed+1] = 6; return b }, ErrMalformed},
		{"timestamp past 9999", func(b []byte) []byte { binary.BigEndian.PutUint64(b[2:], MaxTimestamp+1); return b }, ErrMalformed},
		{"negative timestamp", func(b []byte) []byte { b[2] = 0x80; return b }, ErrMalformed},
		{"cut IO", func(b []byte) []byte { return append(b[:len(b)-5], 1) }, ErrMalformed},
	} {
		if _, err := Decode(c.edit(good())); !errors.Is(err, c.want) {
			t.Errorf("%s: %v, want %v", c.name, err, c.want)
		}
	}
	// At the limit it decodes.
	b := good()
	binary.BigEndian.PutUint64(b[2:], MaxTimestamp)
	p, err := Decode(b)
	if err != nil {
		t.Fatal(err)
	}
	if j := AppendJSON(nil, "1", Codec8, &p.Records[0]); !bytes.Contains(j, []byte(`"ts":"9999-12-31T23:59:59.999Z"`)) {
		t.Errorf("JSON %s", j)
	}
}

func TestEncodeErrors(t *testing.T) {
	ok := Record{Timestamp: 1, IO: []IO{{ID: 1, Size: 1, Value: 255}}}
	for _, c := range []struct {
		name  string
		codec byte
		r     Record
	}{
		{"codec 12", 0x0C, ok},
		{"negative timestamp", Codec8, Record{Timestamp: -1}},
		{"timestamp past 9999", Codec8, Record{Timestamp: MaxTimestamp + 1}},
		{"event over 255 in Codec 8", Codec8, Record{Event: 256}},
		{"ID over 255 in Codec 8", Codec8, Record{IO: []IO{{ID: 256, Size: 1}}}},
		{"generation outside Codec 16", Codec8E, Record{Generation: 1}},
		{"NX in Codec 16", Codec16, Record{IO: []IO{{ID: 1, Bytes: []byte{1}}}}},
		{"value wider than its size", Codec8E, Record{IO: []IO{{ID: 1, Size: 2, Value: 1 << 16}}}},
		{"size 3", Codec8E, Record{IO: []IO{{ID: 1, Size: 3}}}},
		{"256 elements in Codec 16", Codec16, Record{IO: make([]IO, 256)}},
	} {
		if c.name == "256 elements in Codec 16" {
			for i := range c.r.IO {
				c.r.IO[i] = IO{ID: uint16(i), Size: 1}
			}
		}
		if _, err := Encode(c.codec, []Record{c.r}); err == nil {
			t.Errorf("%s: encoded", c.name)
		}
	}
	if _, err := Encode(Codec8, nil); err == nil {
		t.Error("no records: encoded")
	}
	if _, err := Encode(Codec8, make([]Record, 256)); err == nil {
		t.Error("256 records: encoded")
	}
	if _, err := Encode(Codec8, []Record{ok}); err != nil {
		t.Error(err)
	}
}

// TestReadPacketGrowsAsItArrives: a connection that announces the longest
// packet and sends little of it makes ReadPacket allocate about what
// arrived, not what was announced (the IMEI that let it in is no secret).
func TestReadPacketGrowsAsItArrives(t *testing.T) {
	pr, pw := io.Pipe()
	r := bufio.NewReaderSize(pr, 16)
	done := make(chan error, 1)
	var before, during runtime.MemStats
	runtime.GC()
	runtime.ReadMemStats(&before)
	go func() {
		_, err := ReadPacket(r, nil, DefaultMaxPacket)
		done <- err
	}()
	hdr := []byte{0, 0, 0, 0, 0, 0, 0xff, 0xf0} // 65,520 bytes announced
	if _, err := pw.Write(append(hdr, 0x08, 1, 2, 3, 4, 5, 6, 7, 8, 9)); err != nil {
		t.Fatal(err)
	}
	// A write returns once the reader took it: this one, once the reader
	// reads the packet (its buffer for it made).
	if _, err := pw.Write([]byte{10}); err != nil {
		t.Fatal(err)
	}
	runtime.ReadMemStats(&during)
	pw.Close()
	if err := <-done; !errors.Is(err, io.ErrUnexpectedEOF) {
		t.Fatalf("ReadPacket of a cut packet: %v", err)
	}
	if grew := during.TotalAlloc - before.TotalAlloc; grew >= 32<<10 {
		t.Fatalf("%d bytes allocated for a packet of which 11 bytes arrived", grew)
	}
}
