package appliance_test

import (
	"bytes"
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/edgegate/edgegate/appliance"
	"github.com/edgegate/edgegate/coord"
	"github.com/edgegate/edgegate/device"
	"github.com/edgegate/edgegate/internal/wait"
	"github.com/edgegate/edgegate/lease"
	"github.com/edgegate/edgegate/parser"
	"github.com/edgegate/edgegate/teltonika"
)

// teltonikaConfig is testConfig with JetStream and a Teltonika listener
// that takes the IMEIs imeis.
func teltonikaConfig(t *testing.T, name string, imeis []string) appliance.Config {
	t.Helper()
	cfg := testConfig(t, name)
	cfg.NATS.JetStream = true
	cfg.Devices.TeltonikaListen = "127.0.0.1:0"
	cfg.Devices.TeltonikaIMEIs = filepath.Join(t.TempDir(), "imeis")
	if err := os.WriteFile(cfg.Devices.TeltonikaIMEIs, []byte("# test devices\n"+strings.Join(imeis, "\n")+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	return cfg
}

// avl is a packet a test device sends: its codec, records and bytes.
type avl struct {
	codec byte
	recs  []teltonika.Record
	wire  []byte
}

// tracker is the packets a test device sends, in wire order, resends
// included: the records it expects stored, each once, in that order.
type tracker struct {
	imei string
	mu   sync.Mutex
	sent []avl
}

func (tr *tracker) packet(t *testing.T, codec byte, dev, first, n int, start time.Time) avl {
	t.Helper()
	recs := device.TeltonikaRecords(codec, dev, first, n, start)
	wire, err := teltonika.Encode(codec, recs)
	if err != nil {
		t.Fatal(err)
	}
	// The records as the wire carries them (IO grouped by size): what
	// the appliance decodes.
	pkt, err := teltonika.Decode(wire[8 : len(wire)-4])
	if err != nil {
		t.Fatal(err)
	}
	return avl{codec: codec, recs: pkt.Records, wire: wire}
}

// sending notes p as sent (before it is: it may be stored before Send
// returns).
func (tr *tracker) sending(p avl) {
	tr.mu.Lock()
	tr.sent = append(tr.sent, p)
	tr.mu.Unlock()
}

// want is what the stream must hold of the device, in order: the records
// of its packets in wire order, a record sent again skipped.
func (tr *tracker) want() (ids []string, bodies [][]byte, sent int) {
	tr.mu.Lock()
	defer tr.mu.Unlock()
	seen := map[string]bool{}
	for _, p := range tr.sent {
		for i := range p.recs {
			sent++
			id := teltonika.RecordID(tr.imei, &p.recs[i])
			if seen[id] {
				continue
			}
			seen[id] = true
			ids = append(ids, id)
			bodies = append(bodies, teltonika.AppendJSON(nil, tr.imei, p.codec, &p.recs[i]))
		}
	}
	return ids, bodies, sent
}

// sendAndDrop is a device that sends p on a connection of its own and
// closes it without reading the ACK: the ACK is lost.
func sendAndDrop(t *testing.T, addr, imei string, p avl) error {
	c, err := net.DialTimeout("tcp", addr, 5*time.Second)
	if err != nil {
		return err
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(10 * time.Second))
	if err := imeiHandshake(c, imei); err != nil {
		return err
	}
	_, err = c.Write(p.wire)
	return err
}

// imeiHandshake sends imei on c and reads the answer, which must be
// accepted.
func imeiHandshake(c net.Conn, imei string) error {
	hs := binary.BigEndian.AppendUint16(nil, uint16(len(imei)))
	if _, err := c.Write(append(hs, imei...)); err != nil {
		return err
	}
	var b [1]byte
	if _, err := io.ReadFull(c, b[:]); err != nil {
		return fmt.Errorf("IMEI answer: %w", err)
	}
	if b[0] != teltonika.IMEIAccepted {
		return fmt.Errorf("IMEI %s answered 0x%02x", imei, b[0])
	}
	return nil
}

// readAck reads a 4-byte Teltonika ACK from c.
func readAck(c net.Conn) (uint32, error) {
	var b [4]byte
	if _, err := io.ReadFull(c, b[:]); err != nil {
		return 0, err
	}
	return binary.BigEndian.Uint32(b[:]), nil
}

// storedOf counts the records of imei in the parsed stream.
func storedOf(ctx context.Context, js jetstream.JetStream, imei string) (uint64, error) {
	s, err := js.Stream(ctx, parser.StreamParsed)
	if err != nil {
		return 0, err
	}
	subject := coord.ParsedSubject(imei)
	info, err := s.Info(ctx, jetstream.WithSubjectFilter(subject))
	if err != nil {
		return 0, err
	}
	return info.State.Subjects[subject], nil
}

// waitStoredOf waits until the parsed stream holds n records of imei, for
// at most d.
func waitStoredOf(ctx context.Context, js jetstream.JetStream, imei string, n uint64, d time.Duration) error {
	ctx, cancel := context.WithTimeout(ctx, d)
	defer cancel()
	tick := time.NewTicker(10 * time.Millisecond)
	defer tick.Stop()
	for {
		got, err := storedOf(ctx, js, imei)
		if err == nil && got >= n {
			return nil
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("%s: %d of %d records stored within %v (%v)", imei, got, n, d, err)
		case <-tick.C:
		}
	}
}

// loopbackAddrs returns k distinct free loopback addresses.
func loopbackAddrs(t *testing.T, k int) []string {
	t.Helper()
	var out []string
	for range k {
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		defer ln.Close() // held until all are chosen, so they differ
		out = append(out, ln.Addr().String())
	}
	return out
}

// TestTeltonikaEndToEnd: Teltonika trackers on two appliances that share
// a lease store and a JetStream cluster send packets of all three codecs;
// one loses an ACK and sends the packet again on a new connection, one
// loses an ACK on one appliance and sends it again to the other, where it
// stays; one sends packets with a bad CRC and bad record counts between
// good ones, and keep-alives; an IMEI not on the list is refused. The
// stream holds every record exactly once, in wire order per IMEI, its
// body the record's JSON: no duplicate from the resends.
func TestTeltonikaEndToEnd(t *testing.T) {
	if testing.Short() {
		t.Skip("long")
	}
	const (
		plain   = 4  // devices that only send
		packets = 12 // per device
	)
	imeis := make([]string, plain+3)
	for i := range imeis {
		imeis[i] = fmt.Sprintf("35630704244%04d", i)
	}
	const lostAck, mover, bad = plain, plain + 1, plain + 2

	// A JetStream cluster needs its routes from the start: each appliance
	// lists both route addresses.
	store := lease.NewMemory()
	routes := loopbackAddrs(t, 2)
	var apps []*appliance.Appliance
	for i := range 2 {
		cfg := teltonikaConfig(t, fmt.Sprintf("telt-%d", i), imeis)
		cfg.LeaseStore = store
		cfg.NATS.Cluster.Listen = routes[i]
		cfg.NATS.Cluster.Peers = routes
		cfg.NATS.Cluster.User, cfg.NATS.Cluster.Password = "route", "route-test-secret" // routes are authenticated
		apps = append(apps, start(t, cfg))
	}
	for _, a := range apps {
		wait.True(t, 15*time.Second, "parser pools visible across the cluster", func() bool { return a.SocketStats().Pools == 2 })
	}
	addr := func(i int) string { return apps[i%2].TeltonikaAddr() }
	nc, err := apps[0].Connect("test-teltonika")
	if err != nil {
		t.Fatal(err)
	}
	defer nc.Close()
	js, err := jetstream.New(nc)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 90*time.Second)
	defer cancel()

	startAt := time.Now().Add(-time.Hour).Truncate(time.Second)
	trackers := make([]*tracker, len(imeis))
	for i := range trackers {
		trackers[i] = &tracker{imei: imeis[i]}
	}
	codecs := []byte{teltonika.Codec8, teltonika.Codec8E, teltonika.Codec16}
	// pkt is device i's packet p: codecs in turn, 1 to 5 records.
	pkt := func(i, p int) avl {
		return trackers[i].packet(t, codecs[(i+p)%3], i, p*5, 1+(i+p)%5, startAt)
	}
	dial := func(i, app int) (*device.Teltonika, error) {
		return device.DialTeltonika(ctx, device.TeltonikaConfig{Addrs: []string{addr(app)}, IMEI: imeis[i], Reconnect: true, AckTimeout: 10 * time.Second})
	}
	send := func(c *device.Teltonika, i int, p avl) error {
		trackers[i].sending(p)
		return c.Send(ctx, p.wire)
	}

	var wg sync.WaitGroup
	var resent sync.Map // IMEI → packets resent after a lost ACK
	for i := range plain {
		wg.Go(func() {
			c, err := dial(i, i)
			if err != nil {
				t.Error(err)
				return
			}
			defer c.Close()
			for p := range packets {
				if err := send(c, i, pkt(i, p)); err != nil {
					t.Errorf("%s packet %d: %v", imeis[i], p, err)
					return
				}
			}
		})
	}
	// The lost ACK: packet 5 reaches the appliance and is stored, its ACK
	// never read; the device sends it again on a new connection.
	wg.Go(func() {
		i := lostAck
		c, err := dial(i, 0)
		if err != nil {
			t.Error(err)
			return
		}
		defer c.Close()
		for p := range packets {
			if p == 5 {
				lost := pkt(i, p)
				trackers[i].sending(lost)
				if err := sendAndDrop(t, addr(0), imeis[i], lost); err != nil {
					t.Errorf("%s: %v", imeis[i], err)
					return
				}
				// Stored before it is sent again: the resend is a
				// duplicate, not a first copy.
				ids, _, _ := trackers[i].want()
				if err := waitStoredOf(ctx, js, imeis[i], uint64(len(ids)), 20*time.Second); err != nil {
					t.Errorf("after the packet whose ACK was lost: %v", err)
					return
				}
				resent.Store(imeis[i], 1)
			}
			// The client's connection was taken over by sendAndDrop's:
			// packet 5 goes again on a new one.
			if err := send(c, i, pkt(i, p)); err != nil {
				t.Errorf("%s packet %d: %v", imeis[i], p, err)
				return
			}
		}
		if st := c.Stats(); st.Reconnects == 0 || st.Resent == 0 {
			t.Errorf("%s: %d reconnects, %d packets resent; want both", imeis[i], st.Reconnects, st.Resent)
		}
	})
	// The mover: packet 5's ACK is lost on appliance 0; it goes again,
	// with the rest, to appliance 1.
	wg.Go(func() {
		i := mover
		c, err := dial(i, 0)
		if err != nil {
			t.Error(err)
			return
		}
		for p := range 5 {
			if err := send(c, i, pkt(i, p)); err != nil {
				t.Errorf("%s packet %d: %v", imeis[i], p, err)
				c.Close()
				return
			}
		}
		c.Close()
		lost := pkt(i, 5)
		trackers[i].sending(lost)
		if err := sendAndDrop(t, addr(0), imeis[i], lost); err != nil {
			t.Errorf("%s: %v", imeis[i], err)
			return
		}
		c, err = dial(i, 1)
		if err != nil {
			t.Error(err)
			return
		}
		defer c.Close()
		resent.Store(imeis[i], 1)
		for p := 5; p < packets; p++ {
			if err := send(c, i, pkt(i, p)); err != nil {
				t.Errorf("%s packet %d: %v", imeis[i], p, err)
				return
			}
		}
	})
	// Bad packets between good ones, and keep-alives, on one connection:
	// a bad CRC and two record counts that differ get no ACK; the good
	// packets after them do, on the same connection.
	wg.Go(func() {
		i := bad
		c, err := net.DialTimeout("tcp", addr(0), 5*time.Second)
		if err != nil {
			t.Error(err)
			return
		}
		defer c.Close()
		c.SetDeadline(time.Now().Add(30 * time.Second))
		if err := imeiHandshake(c, imeis[i]); err != nil {
			t.Error(err)
			return
		}
		// Its records are never sent well: none may be stored.
		badCRC := trackers[i].packet(t, teltonika.Codec8E, i, 1000, 3, startAt)
		badCRC.wire[len(badCRC.wire)-1] ^= 0x5a
		badCount := trackers[i].packet(t, teltonika.Codec16, i, 2000, 3, startAt)
		data := badCount.wire[8 : len(badCount.wire)-4]
		data[len(data)-1] = 2 // the second count; the CRC made to match
		binary.BigEndian.PutUint32(badCount.wire[len(badCount.wire)-4:], uint32(teltonika.CRC16(data)))
		for p := range packets {
			good := pkt(i, p)
			var out []byte
			if p%4 == 1 {
				out = append(out, teltonika.KeepAlive)
			}
			if p == 2 {
				out = append(out, badCRC.wire...)
			}
			if p == 7 {
				out = append(append(out, badCount.wire...), teltonika.KeepAlive, teltonika.KeepAlive)
			}
			trackers[i].sending(good)
			if _, err := c.Write(append(out, good.wire...)); err != nil {
				t.Errorf("%s packet %d: %v", imeis[i], p, err)
				return
			}
			// The first ACK after a bad packet is the good one's: the bad
			// one got none (3 records, the good one never has 3 then).
			n, err := readAck(c)
			if err != nil || n != uint32(len(good.recs)) {
				t.Errorf("%s packet %d of %d records: ACK %d, %v", imeis[i], p, len(good.recs), n, err)
				return
			}
		}
	})
	wg.Wait()
	if t.Failed() {
		t.FailNow()
	}

	// An IMEI not on the list is answered 0x00 and disconnected.
	for _, a := range apps {
		_, err := device.DialTeltonika(ctx, device.TeltonikaConfig{Addrs: []string{a.TeltonikaAddr()}, IMEI: "356307042449999"})
		if !errors.Is(err, device.ErrIMEIRejected) {
			t.Errorf("an IMEI not on the list: %v, want rejected", err)
		}
	}

	// The checker: every record once, in wire order per IMEI.
	var total, sent int
	want := map[string][]string{}
	bodies := map[string][][]byte{}
	for _, tr := range trackers {
		ids, b, n := tr.want()
		want[tr.imei], bodies[tr.imei] = ids, b
		total += len(ids)
		sent += n
	}
	msgs := readStream(t, apps[1], parser.StreamParsed, total)
	got := map[string][]string{}
	for _, m := range msgs {
		imei := strings.TrimPrefix(m.Subject, "edgegate.parsed.")
		k := len(got[imei])
		got[imei] = append(got[imei], m.Header.Get(jetstream.MsgIDHeader))
		if k < len(bodies[imei]) && !bytes.Equal(m.Data, bodies[imei][k]) {
			t.Errorf("%s record %d: body %s, want %s", imei, k, m.Data, bodies[imei][k])
		}
		if m.Header.Get(parser.HeaderController) != imei || m.Header.Get(parser.HeaderFence) == "" || m.Header.Get(parser.HeaderReceived) == "" {
			t.Errorf("%s record %d: headers %v", imei, k, m.Header)
		}
	}
	for _, tr := range trackers {
		if g, w := got[tr.imei], want[tr.imei]; strings.Join(g, ",") != strings.Join(w, ",") {
			t.Errorf("%s: stored %d records, want %d, in wire order:\n got %v\nwant %v", tr.imei, len(g), len(w), g, w)
		}
	}
	s, err := js.Stream(ctx, parser.StreamParsed)
	if err != nil {
		t.Fatal(err)
	}
	held, _, err := recordCount(ctx, s)
	if err != nil {
		t.Fatal(err)
	}
	if held != uint64(total) {
		t.Errorf("the stream holds %d records, want %d: %d duplicates", held, total, int(held)-total)
	}
	var badPackets, refused uint64
	for _, a := range apps {
		st := a.SocketStats().Teltonika
		badPackets += st.BadPackets
		refused += st.IMEIRefused
	}
	if badPackets != 2 || refused != 2 {
		t.Errorf("%d bad packets counted, want 2; %d IMEIs refused, want 2", badPackets, refused)
	}
	n := 0
	resent.Range(func(any, any) bool { n++; return true })
	t.Logf("%d devices over 2 appliances, %d packets sent (%d with lost ACKs, resent), %d records sent, %d stored, duplicates %d",
		len(imeis), func() (p int) {
			for _, tr := range trackers {
				p += len(tr.sent)
			}
			return p
		}(), n, sent, held, int(held)-total)
}

// TestTeltonikaTLS: with devices.teltonika_tls the Teltonika listener
// speaks TLS with the devices' certificate; a plain connection gets no
// answer to its IMEI.
func TestTeltonikaTLS(t *testing.T) {
	dir := t.TempDir()
	ca, caKey := newCA(t)
	writeKeyPair(t, dir, "server", issue(t, ca, caKey, "127.0.0.1", false))
	const imei = "356307042441013"
	cfg := teltonikaConfig(t, "telt-tls", []string{imei})
	cfg.Devices.TLSCert, cfg.Devices.TLSKey = filepath.Join(dir, "server.pem"), filepath.Join(dir, "server.key")
	cfg.Devices.TeltonikaTLS = true
	a := start(t, cfg)
	roots := x509.NewCertPool()
	roots.AddCert(ca)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	c, err := device.DialTeltonika(ctx, device.TeltonikaConfig{Addrs: []string{a.TeltonikaAddr()}, IMEI: imei, TLS: &tls.Config{RootCAs: roots}})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	var records int
	for k, codec := range []byte{teltonika.Codec8, teltonika.Codec8E, teltonika.Codec16} {
		p, err := teltonika.Encode(codec, device.TeltonikaRecords(codec, 0, k*2, 2, time.Now()))
		if err != nil {
			t.Fatal(err)
		}
		if err := c.Send(ctx, p); err != nil {
			t.Fatal(err)
		}
		records += 2
	}
	readStream(t, a, parser.StreamParsed, records)
	plain := rawConn(t, a.TeltonikaAddr())
	plain.SetDeadline(time.Now().Add(10 * time.Second))
	if err := imeiHandshake(plain, imei); err == nil {
		t.Fatal("a plain TCP device was accepted by a TLS listener")
	}
}

// TestTeltonikaConfig: the Teltonika listener needs its IMEI list and
// ACKs, and TLS needs the certificate.
func TestTeltonikaConfig(t *testing.T) {
	for _, tt := range []struct {
		name   string
		mutate func(*appliance.Config)
		want   string
	}{
		{"no IMEI list", func(c *appliance.Config) { c.Devices.TeltonikaIMEIs = "" }, "devices.teltonika_imeis"},
		{"no IMEI list, devices.auth open", func(c *appliance.Config) { c.Devices.TeltonikaIMEIs, c.Devices.Auth = "", "open" }, ""},
		{"ack none", func(c *appliance.Config) { c.Devices.Ack = "none" }, "devices.ack"},
		{"TLS without a certificate", func(c *appliance.Config) { c.Devices.TeltonikaTLS = true }, "devices.teltonika_tls"},
		{"bad address", func(c *appliance.Config) { c.Devices.TeltonikaListen = "5027" }, "devices.teltonika_listen"},
		{"only the Teltonika listener", func(c *appliance.Config) { c.Devices.Listen, c.Parser.Workers = "", 0 }, ""},
	} {
		cfg := appliance.DefaultConfig()
		cfg.Devices.TeltonikaListen, cfg.Devices.TeltonikaIMEIs = "127.0.0.1:5027", "/etc/edgegate/imeis"
		tt.mutate(&cfg)
		err := cfg.Validate()
		if tt.want == "" && err != nil || tt.want != "" && (err == nil || !strings.Contains(err.Error(), tt.want)) {
			t.Errorf("%s: %v, want an error naming %q", tt.name, err, tt.want)
		}
	}
	// A bad line in the IMEI file is an error at the start.
	cfg := teltonikaConfig(t, "telt-bad-file", []string{"35630704244101x"})
	if _, err := appliance.New(context.Background(), cfg); err == nil || !strings.Contains(err.Error(), "line 2") {
		t.Errorf("an IMEI file with a bad line: %v, want an error naming line 2", err)
	}
}

// TestTeltonikaLimits: the Teltonika listener keeps the limits of the
// others: a connection that sends no IMEI within devices.hello_timeout
// is closed, so is one silent for devices.idle_timeout after it (a
// device's keep-alives keep it open), and one beyond
// devices.max_per_ip is closed at once.
func TestTeltonikaLimits(t *testing.T) {
	if testing.Short() {
		t.Skip("long")
	}
	imeis := []string{"356307042441013", "356307042441014"}
	cfg := teltonikaConfig(t, "telt-limits", imeis)
	cfg.Devices.HelloTimeout = 300 * time.Millisecond
	cfg.Devices.IdleTimeout = 2 * time.Second
	cfg.Devices.MaxPerIP = 2
	a := start(t, cfg)
	closed := func(c net.Conn, within time.Duration) error {
		c.SetReadDeadline(time.Now().Add(within))
		var b [1]byte
		if n, err := c.Read(b[:]); !errors.Is(err, io.EOF) {
			return fmt.Errorf("read %d bytes, %v; want the connection closed", n, err)
		}
		return nil
	}
	if err := closed(rawConn(t, a.TeltonikaAddr()), 5*time.Second); err != nil {
		t.Fatalf("no IMEI: %v", err)
	}
	wait.True(t, 5*time.Second, "the connection without an IMEI gone", func() bool { return a.SocketStats().Connections == 0 })
	if st := a.SocketStats().Teltonika; st.BadHandshakes != 1 {
		t.Errorf("%d bad handshakes counted, want 1", st.BadHandshakes)
	}

	alive, silent := rawConn(t, a.TeltonikaAddr()), rawConn(t, a.TeltonikaAddr())
	for i, c := range []net.Conn{alive, silent} {
		c.SetDeadline(time.Now().Add(10 * time.Second))
		if err := imeiHandshake(c, imeis[i]); err != nil {
			t.Fatal(err)
		}
	}
	if err := closed(rawConn(t, a.TeltonikaAddr()), 5*time.Second); err != nil {
		t.Errorf("a third connection from the address: %v", err)
	}
	var wg sync.WaitGroup
	wg.Go(func() {
		if err := closed(silent, 5*time.Second); err != nil {
			t.Errorf("silent for the idle timeout: %v", err)
		}
	})
	// Keep-alives for longer than the idle timeout, then a packet.
	tick := time.NewTicker(400 * time.Millisecond)
	defer tick.Stop()
	until := time.Now().Add(3 * time.Second)
	for now := range tick.C {
		if now.After(until) {
			break
		}
		if _, err := alive.Write([]byte{teltonika.KeepAlive}); err != nil {
			t.Fatal(err)
		}
	}
	p, err := teltonika.Encode(teltonika.Codec8, device.TeltonikaRecords(teltonika.Codec8, 0, 0, 2, time.Now()))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := alive.Write(p); err != nil {
		t.Fatal(err)
	}
	if n, err := readAck(alive); err != nil || n != 2 {
		t.Errorf("after keep-alives for 3s: ACK %d, %v; want 2", n, err)
	}
	wg.Wait()
	if st := a.SocketStats(); st.IdleClosed != 1 {
		t.Errorf("%d sessions closed idle, want 1", st.IdleClosed)
	}
}
