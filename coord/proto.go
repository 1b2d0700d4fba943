package coord

// Protocols of the messages of an assignment (Assign.Proto).
const (
	// ProtoRaw: each payload is a message as the device sent it (an
	// EGP/1 DATA body after its seq, or a line), opaque to the socket.
	ProtoRaw byte = 0
	// ProtoTeltonika: each payload is the data field of one Teltonika
	// AVL packet (codec ID, record count, records, record count; see
	// package teltonika), whose frame and CRC the socket checked. The
	// controller is the device's IMEI.
	ProtoTeltonika byte = 1
)
