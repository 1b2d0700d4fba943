package teltonika

import (
	"crypto/sha256"
	"encoding/hex"
)

// RecordID returns an identity for r from device imei, for deduplication
// (a JetStream message ID): imei, a colon and 32 hex digits, the first
// 128 bits of the SHA-256 of the record's content.
//
// The digest is over the record itself, not over the packet it came in,
// nor its index there: a device that got no ACK resends its records, on
// the same connection or a new one, to this appliance or another, and
// not always grouped as before (records made meanwhile may join the
// packet). Records with equal content get equal IDs whatever packet and
// codec carried them; two records with equal content are the same
// record, as they share the millisecond, the position and every IO value.
//
// r must be one a codec can carry, as every decoded record is.
func RecordID(imei string, r *Record) string {
	var buf [512]byte
	// One canonical encoding whatever the codec: Codec 8E's layout, which
	// carries every ID and value of the others, then the generation type.
	b := appendRecord(buf[:0], Codec8E, r)
	b = append(b, r.Generation)
	sum := sha256.Sum256(b)
	id := make([]byte, 0, 64)
	id = append(id, imei...)
	id = append(id, ':')
	id = hex.AppendEncode(id, sum[:16])
	return string(id)
}
