package appliance_test

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"errors"
	"math"
	"math/big"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/edgegate/edgegate/appliance"
	"github.com/edgegate/edgegate/device"
	"github.com/edgegate/edgegate/egp"
	"github.com/edgegate/edgegate/internal/wait"
)

// The tests of this file are attacks by a host on the device LAN against
// an appliance with its default settings, each answered by a rule of
// docs/security.md ("Devices").

// TestAttackNoAuthByDefault: with nothing to authenticate devices with,
// no device port is reachable from the network: a non-loopback listen
// address is refused at start with a message saying how to enrol a
// device, and the default wildcard address serves loopback only. The
// packaged setup (an empty token file) refuses a HELLO without a token.
func TestAttackNoAuthByDefault(t *testing.T) {
	cfg := appliance.DefaultConfig()
	cfg.Devices.Listen = "198.51.100.7:7400"
	if err := cfg.Validate(); err == nil || !strings.Contains(err.Error(), "edgegate devices add") {
		t.Errorf("devices.listen on a network address without device authentication: Validate says %v, want a refusal naming `edgegate devices add`", err)
	}

	cfg = testConfig(t, "auth-default")
	cfg.Devices.Listen = "0.0.0.0:0" // the default's host
	a := start(t, cfg)
	host, port, err := net.SplitHostPort(a.DeviceAddr())
	if err != nil {
		t.Fatal(err)
	}
	if ip := net.ParseIP(host); ip == nil || !ip.IsLoopback() {
		t.Errorf("without device authentication the device listener is on %s, want loopback only", a.DeviceAddr())
	}
	// Every other address of this host is closed to devices.
	addrs, _ := net.InterfaceAddrs()
	for _, ad := range addrs {
		ipn, ok := ad.(*net.IPNet)
		if !ok || ipn.IP.IsLoopback() || ipn.IP.IsLinkLocalUnicast() {
			continue
		}
		if c, err := net.DialTimeout("tcp", net.JoinHostPort(ipn.IP.String(), port), 5*time.Second); err == nil {
			c.Close()
			t.Errorf("the device port is reachable on %s without device authentication", ipn.IP)
		}
	}

	// The package's setup: devices.tokens names a file with no device yet.
	tokens := filepath.Join(t.TempDir(), "devices.tokens")
	if err := os.WriteFile(tokens, nil, 0o640); err != nil {
		t.Fatal(err)
	}
	cfg = testConfig(t, "auth-packaged")
	cfg.Devices.Listen = "0.0.0.0:0"
	cfg.Devices.Tokens = tokens
	a = start(t, cfg)
	_, port, _ = net.SplitHostPort(a.DeviceAddr())
	if got := dialCode(t, device.Config{Addrs: []string{"127.0.0.1:" + port}, ID: "intruder"}); got != egp.CodeAuth {
		t.Errorf("a HELLO without a token: code %d, want %d (auth)", got, egp.CodeAuth)
	}
}

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
	wait.True(t, 10*time.Second, "the done record of seq 1", func() bool {
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

// TestAttackCertForAnotherController: with devices.tls_client_ca, a
// device's certificate names the controller it may open (its CN or a DNS
// SAN): a certificate for controller A cannot open controller B.
func TestAttackCertForAnotherController(t *testing.T) {
	dir := t.TempDir()
	ca, caKey := newCA(t)
	writePEM(t, filepath.Join(dir, "ca.pem"), "CERTIFICATE", ca.Raw)
	writeKeyPair(t, dir, "server", issue(t, ca, caKey, "127.0.0.1", false))
	cfg := testConfig(t, "cert-bound")
	cfg.Devices.TLSCert, cfg.Devices.TLSKey = filepath.Join(dir, "server.pem"), filepath.Join(dir, "server.key")
	cfg.Devices.TLSClientCA = filepath.Join(dir, "ca.pem")
	a := start(t, cfg)
	roots := x509.NewCertPool()
	roots.AddCert(ca)
	withCert := func(c tls.Certificate) *tls.Config {
		return &tls.Config{RootCAs: roots, Certificates: []tls.Certificate{c}}
	}
	certA := issue(t, ca, caKey, "ctrl-a", true)
	certSAN := issueSAN(t, ca, caKey, "some device", "ctrl-c")
	for _, tt := range []struct {
		name string
		cert tls.Certificate
		id   string
		want egp.Code
	}{
		{"CN names the controller", certA, "ctrl-a", 0},
		{"CN names another controller", certA, "ctrl-b", egp.CodeAuth},
		{"DNS SAN names the controller", certSAN, "ctrl-c", 0},
		{"DNS SAN names another controller", certSAN, "ctrl-a", egp.CodeAuth},
	} {
		if got := dialCode(t, device.Config{Addrs: []string{a.DeviceAddr()}, ID: tt.id, TLS: withCert(tt.cert)}); got != tt.want {
			t.Errorf("%s: %s got code %d, want %d", tt.name, tt.id, got, tt.want)
		}
	}
}

// issueSAN issues a client certificate with subject CN cn and one DNS SAN.
func issueSAN(t *testing.T, ca *x509.Certificate, caKey *ecdsa.PrivateKey, cn, san string) tls.Certificate {
	t.Helper()
	key, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	tpl := &x509.Certificate{
		SerialNumber: big.NewInt(time.Now().UnixNano()), Subject: pkix.Name{CommonName: cn}, DNSNames: []string{san},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour),
		KeyUsage: x509.KeyUsageDigitalSignature, ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth},
	}
	der, err := x509.CreateCertificate(rand.Reader, tpl, ca, &key.PublicKey, caKey)
	if err != nil {
		t.Fatal(err)
	}
	return tls.Certificate{Certificate: [][]byte{der}, PrivateKey: key}
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

// TestAttackOneHostTakesAllConnections: by default one source address
// gets at most devices.max_per_ip connections; the next from it is
// refused with ERROR busy while other addresses are still served.
func TestAttackOneHostTakesAllConnections(t *testing.T) {
	limit := appliance.DefaultConfig().Devices.MaxPerIP
	if limit <= 0 {
		t.Fatalf("devices.max_per_ip defaults to %d: one host may take every connection", limit)
	}
	cfg := testConfig(t, "per-ip")
	cfg.Devices.MaxPerIP = limit
	cfg.Devices.HelloTimeout = time.Minute // the held connections stay
	a := start(t, cfg)
	attacker := &net.Dialer{LocalAddr: &net.TCPAddr{IP: net.ParseIP("127.0.0.3")}, Timeout: 5 * time.Second}
	for i := range limit {
		c, err := attacker.Dial("tcp", a.DeviceAddr())
		if err != nil {
			t.Fatalf("connection %d: %v", i, err)
		}
		t.Cleanup(func() { c.Close() })
	}
	extra, err := attacker.Dial("tcp", a.DeviceAddr())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { extra.Close() })
	if code := readError(t, extra); code != egp.CodeBusy {
		t.Fatalf("connection %d from one address: ERROR %d, want %d (busy)", limit+1, code, egp.CodeBusy)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := sendAll(ctx, dialDevice(t, device.Config{Addrs: []string{a.DeviceAddr()}, ID: "neighbour"}), "neighbour", 3); err != nil {
		t.Fatal(err)
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
	wait.True(t, 30*time.Second, "the flood sent, or the device's reader stopped", func() bool {
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
