package parser

import (
	"context"
	"encoding/json"
	"errors"
	"testing"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/edgegate/edgegate/coord"
	"github.com/edgegate/edgegate/embed"
	"github.com/edgegate/edgegate/teltonika"
)

// startServer runs the NATS server of o (JetStream in a store of the
// test's own, the appliance's batch limits) until the test ends.
func startServer(t testing.TB, o *server.Options) *server.Server {
	t.Helper()
	// A copy: a caller restarting a server with the same options must not
	// write them while the stopped one's goroutines still read them.
	o = o.Clone()
	o.JetStream, o.NoSigs, o.JetStreamLimits = true, true, embed.BatchLimits()
	if o.StoreDir == "" {
		o.StoreDir = t.TempDir()
	}
	s, err := server.NewServer(o)
	if err != nil {
		t.Fatal(err)
	}
	go s.Start()
	t.Cleanup(s.Shutdown)
	if !s.ReadyForConnections(10 * time.Second) {
		t.Fatal("nats server not ready")
	}
	return s
}

// jetStreamConn runs an in-process NATS server with JetStream for the
// test and returns a connection to it.
func jetStreamConn(t testing.TB) *nats.Conn {
	t.Helper()
	s := startServer(t, &server.Options{DontListen: true})
	nc, err := nats.Connect("", nats.InProcessServer(s))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(nc.Close)
	return nc
}

// TestTeltonikaRecords: the publish handler stores each record of a
// Teltonika packet once, in wire order, with the record's own message
// ID; the same records resent in another packet and codec are stored
// no more; a packet that does not decode is a permanent error.
func TestTeltonikaRecords(t *testing.T) {
	nc := jetStreamConn(t)
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	pub, err := NewPublisher(ctx, nc, PublisherConfig{JetStream: true})
	if err != nil {
		t.Fatal(err)
	}
	defer pub.Close()
	h := pub.Handler(true) // validate_json does not apply to packets
	const imei = "356307042441013"
	recs := []teltonika.Record{
		{Timestamp: 1700000000000, Lon: 250000000, Lat: 546000000, Satellites: 9, Speed: 42, IO: []teltonika.IO{{ID: 239, Size: 1, Value: 1}}},
		{Timestamp: 1700000001000, Lon: 250000100, Lat: 546000100, Satellites: 9, Speed: 43, IO: []teltonika.IO{{ID: 16, Size: 4, Value: 123456}}},
		{Timestamp: 1700000002000, Lon: 250000200, Lat: 546000200, Satellites: 8, Speed: 44},
	}
	handle := func(codec byte, rs []teltonika.Record, seq uint64) error {
		pkt, err := teltonika.Encode(codec, rs)
		if err != nil {
			t.Fatal(err)
		}
		m := &Message{Controller: imei, Seq: seq, Gen: 1, Fence: 1, Received: time.Now(), Attempt: 1,
			Proto: coord.ProtoTeltonika, Payload: pkt[8 : len(pkt)-4]}
		return h.Handle(ctx, m)
	}
	if err := handle(teltonika.Codec8, recs, 1); err != nil {
		t.Fatal(err)
	}
	// A resend after a lost ACK, with one record made meanwhile, in
	// another codec: only the new record is stored.
	more := append(append([]teltonika.Record(nil), recs[1:]...), teltonika.Record{Timestamp: 1700000003000, Satellites: 7})
	if err := handle(teltonika.Codec8E, more, 2); err != nil {
		t.Fatal(err)
	}
	js, _ := jetstream.New(nc)
	stored := parsedRecords(t, js)
	if len(stored) != 4 {
		t.Fatalf("%d records stored, want 4 (3, then 1 new of a resend)", len(stored))
	}
	want := append(recs, more[2])
	for i, m := range stored {
		var body struct {
			IMEI string `json:"imei"`
			TS   string `json:"ts"`
		}
		if err := json.Unmarshal(m.Data, &body); err != nil {
			t.Fatalf("record %d: %v: %s", i, err, m.Data)
		}
		wantTS := want[i].Time().Format("2006-01-02T15:04:05.000Z")
		if m.Subject != coord.ParsedSubject(imei) || body.IMEI != imei || body.TS != wantTS ||
			m.Header.Get(jetstream.MsgIDHeader) != teltonika.RecordID(imei, &want[i]) ||
			m.Header.Get(HeaderController) != imei || m.Header.Get(HeaderSeq) == "" {
			t.Fatalf("record %d: subject %s headers %v body %s", i, m.Subject, m.Header, m.Data)
		}
	}
	// Two record counts that differ: the frame check passed (a forged
	// assignment, a bug), the decode does not.
	bad := &Message{Controller: imei, Seq: 3, Proto: coord.ProtoTeltonika, Payload: []byte{teltonika.Codec8, 1, 0, 2}}
	if err := h.Handle(ctx, bad); !IsPermanent(err) || !errors.Is(err, teltonika.ErrCount) {
		t.Fatalf("undecodable packet: %v, want a permanent ErrCount", err)
	}
}
