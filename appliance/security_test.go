package appliance_test

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nkeys"

	"github.com/edgegate/edgegate/appliance"
	"github.com/edgegate/edgegate/device"
	"github.com/edgegate/edgegate/embed"
	"github.com/edgegate/edgegate/internal/redistest"
	"github.com/edgegate/edgegate/internal/wait"
	"github.com/edgegate/edgegate/parser"
)

// TestNATSClientAuth: with nats.user/password, nats.nkeys and TLS on the
// client port, a client without TLS or without credentials is refused,
// one with either credential gets in, and the appliance's own in-process
// clients still carry devices' messages.
func TestNATSClientAuth(t *testing.T) {
	dir := t.TempDir()
	ca, caKey := newCA(t)
	writePEM(t, filepath.Join(dir, "ca.pem"), "CERTIFICATE", ca.Raw)
	writeKeyPair(t, dir, "server", issue(t, ca, caKey, "127.0.0.1", false))
	user, _ := nkeys.CreateUser()
	pub, _ := user.PublicKey()
	seed, _ := user.Seed()
	seedFile := filepath.Join(dir, "user.nk")
	if err := os.WriteFile(seedFile, seed, 0o600); err != nil {
		t.Fatal(err)
	}

	cfg := testConfig(t, "nats-auth")
	cfg.NATS.Listen = "127.0.0.1:0"
	cfg.NATS.User, cfg.NATS.Password = "consumer", "s3cret-pass"
	cfg.NATS.NKeys = []string{pub}
	cfg.NATS.TLSCert, cfg.NATS.TLSKey = filepath.Join(dir, "server.pem"), filepath.Join(dir, "server.key")
	a := start(t, cfg)
	url := strings.Replace(a.NATSURL(), "nats://", "tls://", 1)
	rootCA := nats.RootCAs(filepath.Join(dir, "ca.pem"))

	if nc, err := nats.Connect(a.NATSURL(), nats.UserInfo("consumer", "s3cret-pass"), nats.Timeout(2*time.Second)); err == nil {
		nc.Close()
		t.Fatal("a plain TCP client got in past nats.tls_cert")
	}
	for name, opts := range map[string][]nats.Option{
		"no credentials": {rootCA},
		"wrong password": {rootCA, nats.UserInfo("consumer", "guess")},
		"internal user":  {rootCA, nats.UserInfo("edgegate-internal", "")},
	} {
		if nc, err := nats.Connect(url, append(opts, nats.Timeout(2*time.Second))...); err == nil {
			nc.Close()
			t.Errorf("%s: connected", name)
		} else if !strings.Contains(strings.ToLower(err.Error()), "authorization") {
			t.Errorf("%s: %v, want an authorization error", name, err)
		}
	}
	nkeyOpt, err := nats.NkeyOptionFromSeed(seedFile)
	if err != nil {
		t.Fatal(err)
	}
	for name, opts := range map[string][]nats.Option{
		"password": {rootCA, nats.UserInfo("consumer", "s3cret-pass")},
		"nkey":     {rootCA, nkeyOpt},
	} {
		nc, err := nats.Connect(url, opts...)
		if err != nil {
			t.Errorf("%s: %v", name, err)
			continue
		}
		// The client sees the parsed records of devices.
		sub, err := nc.SubscribeSync("edgegate.parsed.>")
		if err != nil {
			t.Fatal(err)
		}
		nc.Flush()
		id := "auth-" + name
		c := dialDevice(t, device.Config{Addrs: []string{a.DeviceAddr()}, ID: id})
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		if err := sendAll(ctx, c, id, 5); err != nil {
			t.Fatal(err)
		}
		cancel()
		if _, err := sub.NextMsg(5 * time.Second); err != nil {
			t.Errorf("%s: no parsed record: %v", name, err)
		}
		nc.Close()
	}
}

// TestRoutesAuthAndTLS: appliances with route credentials and mutual TLS
// form a cluster; a NATS server with the right TLS certificate but the
// wrong route password, and one without TLS, are kept out.
func TestRoutesAuthAndTLS(t *testing.T) {
	if testing.Short() {
		t.Skip("long: a cluster of appliances")
	}
	dir := t.TempDir()
	ca, caKey := newCA(t)
	writePEM(t, filepath.Join(dir, "ca.pem"), "CERTIFICATE", ca.Raw)
	writeKeyPair(t, dir, "route", issue(t, ca, caKey, "127.0.0.1", false))
	j := newJournal(parser.HandlerFunc(func(context.Context, *parser.Message) error { return nil }))
	apps := startCluster(t, 2, j, func(i int, cfg *appliance.Config) {
		cfg.NATS.Cluster.User, cfg.NATS.Cluster.Password = "route", "r0ute-secret"
		cfg.NATS.Cluster.TLSCert = filepath.Join(dir, "route.pem")
		cfg.NATS.Cluster.TLSKey = filepath.Join(dir, "route.key")
		cfg.NATS.Cluster.TLSCA = filepath.Join(dir, "ca.pem")
	})
	// The cluster works: a device on one appliance, its controller's
	// parser pool may be on either.
	c := dialDevice(t, device.Config{Addrs: []string{apps[0].DeviceAddr()}, ID: "routed"})
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := sendAll(ctx, c, "routed", 50); err != nil {
		t.Fatal(err)
	}

	pair, err := tls.LoadX509KeyPair(filepath.Join(dir, "route.pem"), filepath.Join(dir, "route.key"))
	if err != nil {
		t.Fatal(err)
	}
	pool := x509.NewCertPool()
	pool.AddCert(ca)
	for _, tt := range []struct {
		name string
		cc   embed.ClusterConfig
		log  string // what the intruder logs when refused
	}{
		{"wrong password", embed.ClusterConfig{User: "route", Password: "guess", TLS: &tls.Config{Certificates: []tls.Certificate{pair}, ClientCAs: pool}}, "authorization violation"},
		{"no TLS", embed.ClusterConfig{User: "route", Password: "r0ute-secret"}, "router connection closed"},
	} {
		name, cc := tt.name, tt.cc
		var logs lockedBuffer
		cc.Listen = "127.0.0.1:0"
		cc.Peers = []string{apps[0].ClusterAddr()}
		intruder, err := embed.New(embed.Config{Name: "intruder", Cluster: cc, Logger: slog.New(slog.NewTextHandler(&logs, nil))})
		if err != nil {
			t.Fatal(err)
		}
		// The intruder's route attempt is refused: it logs why.
		wait.True(t, 10*time.Second, name+": the intruder's route refused", func() bool {
			return strings.Contains(strings.ToLower(logs.String()), tt.log)
		})
		// A refused route may still be counted for a moment while it is
		// torn down; an accepted one stays.
		if err := wait.Until(5*time.Second, func() error {
			if n := intruder.NATS().NumRoutes(); n != 0 {
				return fmt.Errorf("%s: the intruder has %d routes", name, n)
			}
			return nil
		}); err != nil {
			t.Error(err)
		}
		intruder.Shutdown()
	}
}

// TestRedisAuthAndTLS: the lease store reaches a Redis that requires an
// ACL user and TLS with a private CA and client certificates.
func TestRedisAuthAndTLS(t *testing.T) {
	dir := t.TempDir()
	ca, caKey := newCA(t)
	writePEM(t, filepath.Join(dir, "ca.pem"), "CERTIFICATE", ca.Raw)
	writeKeyPair(t, dir, "redis", issue(t, ca, caKey, "127.0.0.1", false))
	writeKeyPair(t, dir, "client", issue(t, ca, caKey, "edgegate", true))
	r := redistest.StartTLS(t, filepath.Join(dir, "redis.pem"), filepath.Join(dir, "redis.key"), filepath.Join(dir, "ca.pem"),
		"user default off", "user edgegate on >s3cret ~* &* +@all")

	cfg := testConfig(t, "redis-tls")
	cfg.Lease.Redis = "rediss://edgegate:s3cret@" + r.Addr() + "/0"
	cfg.Lease.RedisTLSCA = filepath.Join(dir, "ca.pem")
	cfg.Lease.RedisTLSCert, cfg.Lease.RedisTLSKey = filepath.Join(dir, "client.pem"), filepath.Join(dir, "client.key")
	cfg.Handler = parser.HandlerFunc(func(context.Context, *parser.Message) error { return nil })
	a := start(t, cfg)
	c := dialDevice(t, device.Config{Addrs: []string{a.DeviceAddr()}, ID: "over-tls"})
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := sendAll(ctx, c, "over-tls", 20); err != nil {
		t.Fatal(err)
	}
	if n := a.SocketStats().StoreErrors; n != 0 {
		t.Errorf("%d lease store errors over TLS", n)
	}
}
