package appliance_test

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"math"
	"net"
	"path/filepath"
	"testing"
	"time"

	"github.com/edgegate/edgegate/device"
	"github.com/edgegate/edgegate/egp"
)

// The tests of this file are attacks by a host on the device LAN against
// an appliance with its default settings, each answered by a rule of
// docs/security.md ("Devices").

// TestAttackSeqJump: a DATA whose seq does not follow the previous one
// ends the session with ERROR protocol, and a persistent-seq session may
// not start far beyond the done record: a seq of 2^64−1 never reaches the
// done record, where it would have every later message of the real
// device acknowledged as a duplicate and dropped.
func TestAttackSeqJump(t *testing.T) {
	cfg := testConfig(t, "seq-jump")
	a := start(t, cfg)
	const id = "victim"

	session := func(flags byte) (net.Conn, *egp.Reader, egp.Welcome) {
		t.Helper()
		c := rawConn(t, a.DeviceAddr())
		c.SetDeadline(time.Now().Add(10 * time.Second))
		if _, err := c.Write(hello(id, flags)); err != nil {
			t.Fatal(err)
		}
		r := egp.NewReader(c, 1<<20, 0)
		h, body, err := r.ReadFrame()
		if err != nil || h.Type != egp.TypeWelcome {
			t.Fatalf("no WELCOME: %v %v", h.Type, err)
		}
		w, err := egp.ParseWelcome(body)
		if err != nil {
			t.Fatal(err)
		}
		return c, r, w
	}
	// next reads frames up to the next ACK or ERROR.
	next := func(r *egp.Reader) (egp.Type, uint64) {
		t.Helper()
		for {
			h, body, err := r.ReadFrame()
			if err != nil {
				t.Fatalf("connection ended: %v", err)
			}
			switch h.Type {
			case egp.TypeAck:
				ack, _ := egp.ParseAck(body)
				return h.Type, ack.Seq
			case egp.TypeError:
				code, _, _ := egp.ParseError(body)
				return h.Type, uint64(code)
			}
		}
	}
	protoErrors := func() uint64 { return a.SocketStats().ProtocolErrors[egp.CodeProtocol] }

	// The rogue: seq 1, acknowledged; then 2^64−1.
	c, r, _ := session(egp.FlagPersistentSeq)
	c.Write(egp.AppendData(nil, 1, []byte("one")))
	if typ, seq := next(r); typ != egp.TypeAck || seq != 1 {
		t.Fatalf("after DATA 1: %s %d, want ACK 1", typ, seq)
	}
	before := protoErrors()
	c.Write(egp.AppendData(nil, math.MaxUint64, []byte("poison")))
	if typ, code := next(r); typ != egp.TypeError || egp.Code(code) != egp.CodeProtocol {
		t.Fatalf("after DATA 2^64-1: %s %d, want ERROR %d (protocol)", typ, code, egp.CodeProtocol)
	}
	if got := protoErrors() - before; got != 1 {
		t.Errorf("protocol errors counted: %d, want 1", got)
	}
	c.Close()
	// The done record says 1, once recorded, and never 2^64−1.
	var last uint64
	eventually(t, 10*time.Second, "the done record of seq 1", func() bool {
		c, _, w := session(egp.FlagPersistentSeq)
		c.Close()
		last = w.LastSeq
		return last >= 1
	})
	if last != 1 {
		t.Fatalf("WELCOME last_seq %d after the refused jump, want 1", last)
	}

	// A persistent session may not start far beyond the done record, nor
	// any session at 0.
	for _, first := range []uint64{math.MaxUint64, 1 + 1<<32 + 1, 0} {
		c, r, _ = session(egp.FlagPersistentSeq)
		c.Write(egp.AppendData(nil, first, []byte("jump")))
		if typ, code := next(r); typ != egp.TypeError || egp.Code(code) != egp.CodeProtocol {
			t.Errorf("a persistent session starting at seq %d: %s %d, want ERROR %d", first, typ, code, egp.CodeProtocol)
		}
		c.Close()
	}
	// Within a session seqs follow each other: no gap, repeat or step back.
	for _, seqs := range [][2]uint64{{2, 4}, {2, 2}, {3, 2}} {
		c, r, _ = session(0)
		c.Write(egp.AppendData(nil, seqs[0], []byte("a")))
		if typ, seq := next(r); typ != egp.TypeAck || seq != seqs[0] {
			t.Fatalf("first DATA %d: %s %d, want its ACK", seqs[0], typ, seq)
		}
		c.Write(egp.AppendData(nil, seqs[1], []byte("b")))
		if typ, code := next(r); typ != egp.TypeError || egp.Code(code) != egp.CodeProtocol {
			t.Errorf("DATA %d after %d: %s %d, want ERROR %d", seqs[1], seqs[0], typ, code, egp.CodeProtocol)
		}
		c.Close()
	}
	// The real device goes on after the done record.
	dev := dialDevice(t, device.Config{Addrs: []string{a.DeviceAddr()}, ID: id, PersistentSeq: true})
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := sendAll(ctx, dev, id, 5); err != nil {
		t.Fatal(err)
	}
	if st := a.SocketStats(); st.Suppressed != 0 {
		t.Errorf("%d messages of the real device suppressed as duplicates", st.Suppressed)
	}
}

// TestAttackSilentConnectionAtLimit: at the connection limit, a TCP
// connection that never starts its TLS handshake does not hold up the
// accepts: the next device gets its refusal (ERROR busy).
func TestAttackSilentConnectionAtLimit(t *testing.T) {
	dir := t.TempDir()
	ca, caKey := newCA(t)
	writeKeyPair(t, dir, "server", issue(t, ca, caKey, "127.0.0.1", false))
	cfg := testConfig(t, "silent-at-limit")
	cfg.Devices.TLSCert, cfg.Devices.TLSKey = filepath.Join(dir, "server.pem"), filepath.Join(dir, "server.key")
	cfg.Devices.MaxConnections = 1
	a := start(t, cfg)
	roots := x509.NewCertPool()
	roots.AddCert(ca)
	tlsCfg := &tls.Config{RootCAs: roots}
	dialDevice(t, device.Config{Addrs: []string{a.DeviceAddr()}, ID: "first", TLS: tlsCfg})
	rawConn(t, a.DeviceAddr()) // TCP only: it never sends its ClientHello
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	_, err := device.Dial(ctx, device.Config{Addrs: []string{a.DeviceAddr()}, ID: "second", TLS: tlsCfg, DialTimeout: 10 * time.Second})
	var pe *egp.Error
	if !errors.As(err, &pe) || pe.Code != egp.CodeBusy {
		t.Fatalf("the device after a silent connection at the limit: %v, want ERROR %d (busy)", err, egp.CodeBusy)
	}
}

// TestAttackPingFlood: a device that sends PINGs of max_frame bytes and
// never reads the PONGs gets at most about a frame's worth queued for it:
// its reader stops reading until the device takes what is queued.
func TestAttackPingFlood(t *testing.T) {
	cfg := testConfig(t, "ping-flood")
	a := start(t, cfg)
	c := rawConn(t, a.DeviceAddr())
	if _, err := c.Write(hello("pinger", 0)); err != nil {
		t.Fatal(err)
	}
	// The device reads nothing, not even its WELCOME.
	ping := egp.AppendPing(nil, make([]byte, cfg.Devices.MaxFrame))
	sent := make(chan int, 1)
	go func() {
		n := 0
		c.SetWriteDeadline(time.Now().Add(time.Minute))
		for ; n < 200; n++ {
			if _, err := c.Write(ping); err != nil {
				break
			}
		}
		sent <- n
	}()
	n := -1
	eventually(t, 30*time.Second, "the flood sent, or the device's reader stopped", func() bool {
		select {
		case n = <-sent:
			return true
		default:
			return a.SocketStats().WriteWaits > 0
		}
	})
	if queued, bound := a.SocketStats().WriteQueued, int64(2*cfg.Devices.MaxFrame); queued > bound {
		t.Errorf("%d bytes queued for a device that reads nothing (%d PINGs of %d bytes sent), want at most %d", queued, n, cfg.Devices.MaxFrame, bound)
	}
	c.Close()
	if n < 0 {
		<-sent
	}
}
