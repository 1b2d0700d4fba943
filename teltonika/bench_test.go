package teltonika

import "testing"

var benchPackets = []struct{ name, hex string }{
	{"codec8", traccar8Records14},
	{"codec8E", traccar8E4},
	{"codec16", traccar16},
}

// BenchmarkDecode decodes real packets into a reused Packet, as a parser
// worker would.
func BenchmarkDecode(b *testing.B) {
	for _, c := range benchPackets {
		b.Run(c.name, func(b *testing.B) {
			_, data, err := Split(unhex(b, c.hex), 0)
			if err != nil {
				b.Fatal(err)
			}
			var p Packet
			b.SetBytes(int64(len(data)))
			b.ReportAllocs()
			records := 0
			for b.Loop() {
				if err := DecodeInto(&p, data); err != nil {
					b.Fatal(err)
				}
				records += len(p.Records)
			}
			b.ReportMetric(float64(records)/b.Elapsed().Seconds(), "records/s")
		})
	}
}

// BenchmarkAppendJSON formats the records of real packets into a reused
// buffer.
func BenchmarkAppendJSON(b *testing.B) {
	for _, c := range benchPackets {
		b.Run(c.name, func(b *testing.B) {
			_, data, err := Split(unhex(b, c.hex), 0)
			if err != nil {
				b.Fatal(err)
			}
			p, err := Decode(data)
			if err != nil {
				b.Fatal(err)
			}
			var dst []byte
			b.ReportAllocs()
			records := 0
			for b.Loop() {
				for i := range p.Records {
					dst = AppendJSON(dst[:0], "356307042441013", p.Codec, &p.Records[i])
				}
				records += len(p.Records)
			}
			b.ReportMetric(float64(records)/b.Elapsed().Seconds(), "records/s")
		})
	}
}
