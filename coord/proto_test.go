package coord

import (
	"bytes"
	"testing"
	"time"
)

// TestAssignProtoRoundTrip: the protocol of a batch crosses NATS, so a
// pool on another appliance parses a Teltonika packet as one.
func TestAssignProtoRoundTrip(t *testing.T) {
	for _, proto := range []byte{ProtoRaw, ProtoTeltonika} {
		a := &Assign{Controller: "356307042441013", Valid: time.Second, Gen: 7, Proto: proto,
			Msgs: []Msg{{Seq: 1, Received: time.Unix(0, 5), Payload: []byte{0x08, 1, 0, 1}}}}
		got, err := DecodeAssign(AppendAssign(nil, a))
		if err != nil {
			t.Fatalf("proto %d: %v", proto, err)
		}
		if got.Proto != proto || got.Gen != a.Gen || len(got.Msgs) != 1 || !bytes.Equal(got.Msgs[0].Payload, a.Msgs[0].Payload) {
			t.Fatalf("proto %d: got %+v", proto, got)
		}
	}
}
