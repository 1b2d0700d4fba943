package parser

import (
	"context"
	"fmt"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/edgegate/edgegate/coord"
	"github.com/edgegate/edgegate/teltonika"
)

// teltonikaRecords is the publish handler for a Teltonika AVL packet
// (m.Proto is coord.ProtoTeltonika, m.Controller the IMEI): each record
// becomes one record on edgegate.parsed.<IMEI>, its body the record's
// JSON (teltonika.AppendJSON), with m's headers and the record's own
// message ID, teltonika.RecordID.
//
// The message ID is what makes a resent packet harmless: a device that
// got no ACK sends its records again, on this connection or another, to
// this appliance or another, and each record keeps its ID, so the stream
// stores it once (within its duplicate window). The records are
// published one at a time, each waiting for the stream's answer, so that
// they are stored in wire order: after a failure the whole packet is
// tried again, the records stored before it are taken as duplicates, and
// none is stored ahead of one before it. The message is done only when
// every record is stored.
//
// A packet that does not decode was refused by no check of the socket's
// (its frame, CRC and counts were good) and fails the same way every
// time: a permanent error, dead-lettered with its bytes.
func (p *Publisher) teltonikaRecords(ctx context.Context, m *Message) error {
	var pkt teltonika.Packet
	if err := teltonika.DecodeInto(&pkt, m.Payload); err != nil {
		return Permanent(fmt.Errorf("teltonika packet: %w", err))
	}
	subject := coord.ParsedSubject(m.Controller)
	// One buffer for every record: a publish has copied the body into
	// the connection's buffer by the time it returns.
	body := make([]byte, 0, 512)
	for i := range pkt.Records {
		r := &pkt.Records[i]
		body = teltonika.AppendJSON(body[:0], m.Controller, pkt.Codec, r)
		msg := p.msg(subject, m, body)
		msg.Header[jetstream.MsgIDHeader] = []string{teltonika.RecordID(m.Controller, r)}
		// A duplicate is taken for stored without reading the stored
		// record back (as Parsed does): the ID is a digest of the
		// record's content, so the stored record is this one, except
		// perhaps for the codec that carried it (a device whose codec
		// setting changed between a send and its resend); and a resent
		// packet would cost a read per record.
		if _, err := p.putRecord(ctx, m, msg); err != nil {
			return fmt.Errorf("parser: publish record %d of %d of %s: %w", i+1, len(pkt.Records), m.ID(), err)
		}
	}
	return nil
}
