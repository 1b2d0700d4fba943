package device

import (
	"bufio"
	"context"
	"crypto/tls"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"math"
	"math/rand/v2"
	"net"
	"sync/atomic"
	"time"

	"github.com/edgegate/edgegate/teltonika"
)

// TeltonikaConfig configures a Teltonika client: a simulated GPS tracker
// speaking Teltonika's TCP protocol (package teltonika) to an appliance's
// Teltonika listener.
type TeltonikaConfig struct {
	// Addrs are the listener addresses; after a connection loss the
	// client goes on with the next one. At least one is required.
	Addrs []string
	// IMEI is the device's identity: 1 to 17 digits.
	IMEI string
	// TLS, when set, dials with TLS.
	TLS *tls.Config
	// DialTimeout bounds a connection attempt including the IMEI's
	// answer. Zero means 5s.
	DialTimeout time.Duration
	// AckTimeout is how long the device waits for a packet's ACK before
	// it takes the connection as broken and sends the packet again on a
	// new one (a tracker's Response Timeout). Zero means 5s.
	AckTimeout time.Duration
	// Reconnect makes Send reconnect and send the packet again after a
	// missing or wrong ACK, until it is acknowledged or ctx is done, as a
	// tracker does. False means the first failure fails Send.
	Reconnect bool
	// ReconnectWait is the first backoff between connection attempts,
	// doubling to 2s with jitter. Zero means 100ms.
	ReconnectWait time.Duration
}

// ErrIMEIRejected is returned when the listener answers the IMEI 0x00.
var ErrIMEIRejected = errors.New("device: IMEI rejected")

// TeltonikaStats counts what a Teltonika client did.
type TeltonikaStats struct {
	Packets, Records uint64 // acknowledged
	Resent           uint64 // packets sent again after a missing or wrong ACK
	Reconnects       uint64 // connections after the first
	AckErrors        uint64 // ACKs whose record count was not the packet's
}

// Teltonika is a simulated tracker. Like a real one it sends one packet
// at a time and waits for its ACK before the next (Send): its methods
// are not for concurrent use, except Stats.
type Teltonika struct {
	cfg     TeltonikaConfig
	conn    net.Conn
	r       *bufio.Reader
	addrIdx int
	dialed  bool

	packets, records, resent, reconnects, ackErrors atomic.Uint64
}

// DialTeltonika connects and sends the IMEI. A refused IMEI is
// ErrIMEIRejected.
func DialTeltonika(ctx context.Context, cfg TeltonikaConfig) (*Teltonika, error) {
	if len(cfg.Addrs) == 0 {
		return nil, errors.New("device: no address")
	}
	if cfg.DialTimeout <= 0 {
		cfg.DialTimeout = 5 * time.Second
	}
	if cfg.AckTimeout <= 0 {
		cfg.AckTimeout = 5 * time.Second
	}
	if cfg.ReconnectWait <= 0 {
		cfg.ReconnectWait = 100 * time.Millisecond
	}
	t := &Teltonika{cfg: cfg}
	if err := t.connect(ctx); err != nil {
		return nil, err
	}
	return t, nil
}

// Stats returns the counters so far.
func (t *Teltonika) Stats() TeltonikaStats {
	return TeltonikaStats{Packets: t.packets.Load(), Records: t.records.Load(), Resent: t.resent.Load(),
		Reconnects: t.reconnects.Load(), AckErrors: t.ackErrors.Load()}
}

// Close closes the connection.
func (t *Teltonika) Close() error {
	if t.conn == nil {
		return nil
	}
	err := t.conn.Close()
	t.conn = nil
	return err
}

// connect dials the current address and sends the IMEI.
func (t *Teltonika) connect(ctx context.Context) error {
	addr := t.cfg.Addrs[t.addrIdx%len(t.cfg.Addrs)]
	ctx, cancel := context.WithTimeout(ctx, t.cfg.DialTimeout)
	defer cancel()
	var nc net.Conn
	var err error
	d := &net.Dialer{}
	if t.cfg.TLS != nil {
		nc, err = (&tls.Dialer{NetDialer: d, Config: t.cfg.TLS}).DialContext(ctx, "tcp", addr)
	} else {
		nc, err = d.DialContext(ctx, "tcp", addr)
	}
	if err != nil {
		return fmt.Errorf("device: dial %s: %w", addr, err)
	}
	if t.dialed {
		t.reconnects.Add(1)
	}
	t.dialed = true
	stop := context.AfterFunc(ctx, func() { nc.SetDeadline(time.Now()) })
	defer stop()
	hs := binary.BigEndian.AppendUint16(nil, uint16(len(t.cfg.IMEI)))
	if _, err := nc.Write(append(hs, t.cfg.IMEI...)); err != nil {
		nc.Close()
		return fmt.Errorf("device: %s: IMEI: %w", addr, err)
	}
	r := bufio.NewReader(nc)
	answer, err := r.ReadByte()
	if err != nil {
		nc.Close()
		return fmt.Errorf("device: %s: IMEI answer: %w", addr, err)
	}
	if answer != teltonika.IMEIAccepted {
		nc.Close()
		return fmt.Errorf("%w: %s answered 0x%02x to %s", ErrIMEIRejected, addr, answer, t.cfg.IMEI)
	}
	if !stop() {
		nc.Close()
		return ctx.Err()
	}
	nc.SetDeadline(time.Time{})
	t.conn, t.r = nc, r
	return nil
}

// Send sends packet, a whole AVL packet (teltonika.Encode), and waits
// for its ACK, which must be its record count. With Reconnect a missing
// or wrong ACK makes it reconnect (to the next address) and send the
// packet again, until it is acknowledged or ctx is done.
func (t *Teltonika) Send(ctx context.Context, packet []byte) error {
	if len(packet) < 12 {
		return errors.New("device: not a Teltonika packet")
	}
	n := int(packet[9]) // the record count after the codec ID
	wait := t.cfg.ReconnectWait
	sent := false
	for attempt := 0; ; attempt++ {
		if err := ctx.Err(); err != nil {
			return err
		}
		if attempt > 0 {
			// Not the first try, so the previous one failed: wait a bit
			// before the next connection, as a device backs off.
			if !sleepJitter(ctx, wait) {
				return ctx.Err()
			}
			wait = min(2*wait, 2*time.Second)
		}
		if t.conn == nil {
			if err := t.connect(ctx); err != nil {
				if !t.cfg.Reconnect || errors.Is(err, ErrIMEIRejected) {
					return err
				}
				t.addrIdx++
				continue
			}
		}
		if sent {
			t.resent.Add(1)
		}
		sent = true
		err := t.exchange(ctx, packet, n)
		if err == nil {
			t.packets.Add(1)
			t.records.Add(uint64(n))
			return nil
		}
		// A device that misses its ACK drops the connection and sends the
		// packet again on a new one.
		t.Close()
		t.addrIdx++
		if !t.cfg.Reconnect {
			return err
		}
	}
}

// exchange writes packet on the connection and reads its ACK.
func (t *Teltonika) exchange(ctx context.Context, packet []byte, n int) error {
	stop := context.AfterFunc(ctx, func() { t.conn.SetDeadline(time.Now()) })
	defer stop()
	t.conn.SetDeadline(time.Now().Add(t.cfg.AckTimeout))
	if _, err := t.conn.Write(packet); err != nil {
		return fmt.Errorf("device: send: %w", err)
	}
	var ack [4]byte
	if _, err := io.ReadFull(t.r, ack[:]); err != nil {
		return fmt.Errorf("device: ACK: %w", err)
	}
	if got := binary.BigEndian.Uint32(ack[:]); got != uint32(n) {
		t.ackErrors.Add(1)
		return fmt.Errorf("device: ACK of %d records for a packet of %d", got, n)
	}
	return nil
}

// sleepJitter waits d give or take a quarter, or until ctx is done.
func sleepJitter(ctx context.Context, d time.Duration) bool {
	d += time.Duration(rand.Int64N(int64(d)/2+1)) - d/4
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return false
	case <-t.C:
		return true
	}
}

// TeltonikaRecords returns records first to first+n-1 of simulated
// device dev's track, in the shape codec carries: one a second from
// start, driving round a circle about 2 km across (a centre per device),
// with the IO elements of an FMB tracker. Every codec gets ignition,
// movement, GSM signal, external and battery voltage, odometer and an
// 8-byte value; Codec 8 Extended adds IDs over 255 and variable-length
// values (a VIN, a beacon), Codec 16 IDs over 255 and the generation
// type. The same arguments give the same records: a resent packet is the
// same packet.
func TeltonikaRecords(codec byte, dev, first, n int, start time.Time) []teltonika.Record {
	recs := make([]teltonika.Record, n)
	centreLat := 546870000 + int32(dev%100)*100000 // Vilnius, then 0.01° north per device
	centreLon := 252790000 + int32(dev/100%100)*100000
	for i := range recs {
		k := first + i
		theta := float64(k) * 2 * math.Pi / 360 // a degree a second
		r := &recs[i]
		*r = teltonika.Record{
			Timestamp:  start.UnixMilli() + int64(k)*1000,
			Lat:        centreLat + int32(100000*math.Sin(theta)),
			Lon:        centreLon + int32(160000*math.Cos(theta)), // a degree of longitude is shorter here
			Alt:        int16(110 + k%20),
			Angle:      uint16((k + 90) % 360),
			Satellites: byte(7 + k%6),
			Speed:      uint16(40 + k%30),
		}
		if k%50 == 49 {
			r.Priority = 1
		}
		r.IO = []teltonika.IO{
			{ID: 239, Size: 1, Value: 1},                    // ignition
			{ID: 240, Size: 1, Value: 1},                    // movement
			{ID: 21, Size: 1, Value: uint64(3 + k%3)},       // GSM signal
			{ID: 66, Size: 2, Value: uint64(12400 + k%300)}, // external voltage, mV
			{ID: 67, Size: 2, Value: 4100},                  // battery voltage, mV
			{ID: 16, Size: 4, Value: uint64(k) * 11},        // odometer, m
			{ID: 78, Size: 8, Value: 0x01020304050607ff},    // iButton
		}
		if k%10 == 0 {
			r.Event = 239 // the ignition element triggered it
		}
		switch codec {
		case teltonika.Codec8E:
			r.IO = append(r.IO,
				teltonika.IO{ID: 389, Size: 2, Value: uint64(k % 1000)},
				teltonika.IO{ID: 256, Bytes: []byte("WVWZZZ1JZXW000001")},                  // VIN
				teltonika.IO{ID: 385, Bytes: []byte{0x11, 0x21, 0x01, byte(dev), byte(k)}}, // beacon
			)
		case teltonika.Codec16:
			r.IO = append(r.IO, teltonika.IO{ID: 1148, Size: 2, Value: uint64(k % 1000)})
			r.Generation = 7 // periodical
			if r.Event != 0 {
				r.Generation = 5 // on change
			}
		}
	}
	return recs
}
