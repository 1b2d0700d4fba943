package appliance_test

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/sha256"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/hex"
	"encoding/pem"
	"errors"
	"log/slog"
	"math/big"
	"net"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/edgegate/edgegate/device"
	"github.com/edgegate/edgegate/egp"
	"github.com/edgegate/edgegate/internal/wait"
)

// dialCode dials a device and returns the ERROR code it was refused with,
// 0 when it got in.
func dialCode(t *testing.T, cfg device.Config) egp.Code {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	c, err := device.Dial(ctx, cfg)
	if err == nil {
		c.Close()
		return 0
	}
	var pe *egp.Error
	if errors.As(err, &pe) {
		return pe.Code
	}
	t.Fatalf("dial %s: %v", cfg.ID, err)
	return 0
}

// TestTokens: with devices.tokens every HELLO must carry its controller's
// token (exact, prefix or wildcard entry; plain or sha256); a wrong one is
// ERROR auth; the file is re-read when it changes.
func TestTokens(t *testing.T) {
	if testing.Short() {
		t.Skip("long: two reload periods of the token file")
	}
	file := filepath.Join(t.TempDir(), "tokens")
	sum := sha256.Sum256([]byte("hashed-secret"))
	os.WriteFile(file, []byte("# test tokens\n"+
		"pump-1 exact-secret\n"+
		"sensor-* prefix-secret\n"+
		"sensor-vip-* vip-secret\n"+
		"meter-9 sha256:"+hex.EncodeToString(sum[:])+"\n"), 0o600)
	cfg := testConfig(t, "tokens")
	cfg.Devices.Tokens = file
	var logs lockedBuffer
	cfg.Logger = slog.New(slog.NewTextHandler(&logs, nil))
	a := start(t, cfg)
	addr := []string{a.DeviceAddr()}
	for _, tt := range []struct {
		id, token string
		want      egp.Code
	}{
		{"pump-1", "exact-secret", 0},
		{"pump-1", "exact-secreT", egp.CodeAuth},
		{"pump-1", "", egp.CodeAuth},
		{"sensor-17", "prefix-secret", 0},
		{"sensor-vip-2", "vip-secret", 0},
		{"sensor-vip-2", "prefix-secret", egp.CodeAuth}, // the longest prefix wins
		{"meter-9", "hashed-secret", 0},
		{"meter-9", "sha256:" + hex.EncodeToString(sum[:]), egp.CodeAuth},
		{"stranger", "anything", egp.CodeAuth},
	} {
		if got := dialCode(t, device.Config{Addrs: addr, ID: tt.id, Token: []byte(tt.token)}); got != tt.want {
			t.Errorf("%s with %q: code %d, want %d", tt.id, tt.token, got, tt.want)
		}
	}
	// Hot reload: a wildcard entry admits the stranger.
	os.WriteFile(file, []byte("* open-sesame\n"), 0o600)
	wait.True(t, 10*time.Second, "token file reloaded", func() bool {
		return dialCode(t, device.Config{Addrs: addr, ID: "stranger", Token: []byte("open-sesame")}) == 0
	})
	// A broken file keeps the tokens loaded.
	os.WriteFile(file, []byte("only-one-field\n"), 0o600)
	wait.True(t, 10*time.Second, "the broken token file refused", func() bool {
		return strings.Contains(logs.String(), "token file refused")
	})
	if got := dialCode(t, device.Config{Addrs: addr, ID: "stranger", Token: []byte("open-sesame")}); got != 0 {
		t.Errorf("after a broken token file: code %d, want the previous tokens to stay", got)
	}
}

// TestTLS: devices connect over TLS; with a client CA, a device without a
// certificate signed by it is refused and one with it is served.
func TestTLS(t *testing.T) { servings(t, testTLS) }

func testTLS(t *testing.T, lean bool) {
	dir := t.TempDir()
	ca, caKey := newCA(t)
	writePEM(t, filepath.Join(dir, "ca.pem"), "CERTIFICATE", ca.Raw)
	serverCert := issue(t, ca, caKey, "127.0.0.1", false)
	writeKeyPair(t, dir, "server", serverCert)
	clientCert := issue(t, ca, caKey, "tls-dev", true) // its CN names its controller

	cfg := testConfig(t, "tls")
	serve(&cfg, lean)
	cfg.Devices.TLSCert = filepath.Join(dir, "server.pem")
	cfg.Devices.TLSKey = filepath.Join(dir, "server.key")
	cfg.Devices.TLSClientCA = filepath.Join(dir, "ca.pem")
	a := start(t, cfg)

	roots := x509.NewCertPool()
	roots.AddCert(ca)
	withCert := &tls.Config{RootCAs: roots, Certificates: []tls.Certificate{clientCert}}
	c := dialDevice(t, device.Config{Addrs: []string{a.DeviceAddr()}, ID: "tls-dev", TLS: withCert})
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := sendAll(ctx, c, "tls-dev", 20); err != nil {
		t.Fatal(err)
	}
	_, err := device.Dial(ctx, device.Config{Addrs: []string{a.DeviceAddr()}, ID: "no-cert", TLS: &tls.Config{RootCAs: roots}})
	if err == nil {
		t.Fatal("a device without a client certificate got in")
	}
	plain, err := net.Dial("tcp", a.DeviceAddr())
	if err != nil {
		t.Fatal(err)
	}
	defer plain.Close()
	plain.Write(hello("plain", 0))
	plain.SetReadDeadline(time.Now().Add(5 * time.Second))
	if _, _, err := egp.NewReader(plain, 1<<20, 0).ReadFrame(); err == nil {
		t.Fatal("a plain TCP device got an EGP/1 answer from a TLS listener")
	}
}

// TestFloodAndSlowloris: a host that opens many connections and never
// finishes its HELLO (or trickles it byte by byte) uses up its own
// per-address allowance only; a legitimate device on another address still
// connects and is served.
func TestFloodAndSlowloris(t *testing.T) {
	cfg := testConfig(t, "flood")
	cfg.Devices.MaxPerIP = 20
	cfg.Devices.HelloTimeout = time.Second
	a := start(t, cfg)
	attacker := &net.Dialer{LocalAddr: &net.TCPAddr{IP: net.ParseIP("127.0.0.2")}, Timeout: 2 * time.Second}
	var conns []net.Conn
	defer func() {
		for _, c := range conns {
			c.Close()
		}
	}()
	refused := 0
	for i := 0; i < 60; i++ {
		c, err := attacker.Dial("tcp", a.DeviceAddr())
		if err != nil {
			t.Fatalf("attacker dial: %v", err)
		}
		conns = append(conns, c)
	}
	// Slowloris: the held connections trickle a HELLO one byte at a time.
	stop := make(chan struct{})
	var wg sync.WaitGroup
	wg.Go(func() {
		h := hello("slow", 0)
		for i := 0; i < len(h); i++ {
			select {
			case <-stop:
				return
			case <-time.After(300 * time.Millisecond):
			}
			for _, c := range conns {
				c.SetWriteDeadline(time.Now().Add(100 * time.Millisecond))
				c.Write(h[i : i+1])
			}
		}
	})
	// Meanwhile a legitimate device connects from 127.0.0.1 and is served.
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	c := dialDevice(t, device.Config{Addrs: []string{a.DeviceAddr()}, ID: "legit"})
	if err := sendAll(ctx, c, "legit", 50); err != nil {
		t.Fatal(err)
	}
	// The trickling connections are cut by the hello timeout.
	wait.True(t, 10*time.Second, "slowloris connections closed by the hello timeout", func() bool {
		return a.SocketStats().ProtocolErrors[egp.CodeHelloTimeout] >= 20
	})
	close(stop)
	wg.Wait()
	if refused = int(a.SocketStats().Refused); refused < 40 {
		t.Errorf("refused %d of 60 connections from one address with max_per_ip 20", refused)
	}
}

// TestIdleTimeout: a silent session gets a PING at half the idle timeout;
// a device that answers stays, one that does not is closed.
func TestIdleTimeout(t *testing.T) {
	if testing.Short() {
		t.Skip("long: idle timeouts of seconds")
	}
	servings(t, testIdleTimeout)
}

func testIdleTimeout(t *testing.T, lean bool) {
	cfg := testConfig(t, "idle")
	serve(&cfg, lean)
	cfg.Devices.IdleTimeout = 2 * time.Second
	a := start(t, cfg)
	live := dialDevice(t, device.Config{Addrs: []string{a.DeviceAddr()}, ID: "live"})
	mute := rawConn(t, a.DeviceAddr())
	mute.Write(hello("mute", 0))
	r := egp.NewReader(mute, 1<<20, 0)
	mute.SetReadDeadline(time.Now().Add(10 * time.Second))
	var got []egp.Type
	for {
		h, _, err := r.ReadFrame()
		if err != nil {
			break
		}
		got = append(got, h.Type)
	}
	if len(got) != 2 || got[0] != egp.TypeWelcome || got[1] != egp.TypePing {
		t.Fatalf("a mute device got %v, then the connection closed; want WELCOME, PING", got)
	}
	// The live device answered its PINGs and still works.
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := sendAll(ctx, live, "live", 5); err != nil {
		t.Fatalf("the device that answers PING: %v", err)
	}
	if st := a.SocketStats(); st.IdleClosed != 1 {
		t.Errorf("idle closed %d sessions, want 1", st.IdleClosed)
	}
}

func newCA(t *testing.T) (*x509.Certificate, *ecdsa.PrivateKey) {
	t.Helper()
	key, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	tpl := &x509.Certificate{
		SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "edgegate test CA"},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour),
		IsCA: true, BasicConstraintsValid: true, KeyUsage: x509.KeyUsageCertSign,
	}
	der, err := x509.CreateCertificate(rand.Reader, tpl, tpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	cert, _ := x509.ParseCertificate(der)
	return cert, key
}

func issue(t *testing.T, ca *x509.Certificate, caKey *ecdsa.PrivateKey, name string, client bool) tls.Certificate {
	t.Helper()
	key, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	tpl := &x509.Certificate{
		SerialNumber: big.NewInt(time.Now().UnixNano()), Subject: pkix.Name{CommonName: name},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour),
		KeyUsage: x509.KeyUsageDigitalSignature, ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth, x509.ExtKeyUsageClientAuth},
	}
	if client {
		tpl.ExtKeyUsage = []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}
	} else {
		tpl.IPAddresses = []net.IP{net.ParseIP(name)}
	}
	der, err := x509.CreateCertificate(rand.Reader, tpl, ca, &key.PublicKey, caKey)
	if err != nil {
		t.Fatal(err)
	}
	return tls.Certificate{Certificate: [][]byte{der}, PrivateKey: key}
}

func writePEM(t *testing.T, path, kind string, der []byte) {
	t.Helper()
	if err := os.WriteFile(path, pem.EncodeToMemory(&pem.Block{Type: kind, Bytes: der}), 0o600); err != nil {
		t.Fatal(err)
	}
}

func writeKeyPair(t *testing.T, dir, name string, c tls.Certificate) {
	t.Helper()
	writePEM(t, filepath.Join(dir, name+".pem"), "CERTIFICATE", c.Certificate[0])
	der, err := x509.MarshalPKCS8PrivateKey(c.PrivateKey)
	if err != nil {
		t.Fatal(err)
	}
	writePEM(t, filepath.Join(dir, name+".key"), "PRIVATE KEY", der)
}
