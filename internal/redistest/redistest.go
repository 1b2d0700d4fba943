// Package redistest starts real redis-server processes for tests, each on
// a free loopback port with its own directory.
package redistest

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"
)

// Server is a redis-server process owned by a test.
type Server struct {
	t    testing.TB
	dir  string
	port int
	cmd  *exec.Cmd
	exit chan struct{}
	args []string    // extra redis-server arguments, kept for Restart
	tls  *tls.Config // readiness checks dial with TLS when set
}

// Start starts redis-server on a free loopback port and stops it when the
// test ends. Without redis-server on PATH the test fails when
// EDGEGATE_REQUIRE_REDIS is set (CI sets it) and is skipped otherwise.
func Start(t testing.TB, args ...string) *Server {
	t.Helper()
	if _, err := exec.LookPath("redis-server"); err != nil {
		if os.Getenv("EDGEGATE_REQUIRE_REDIS") != "" {
			t.Fatalf("redis-server not found on PATH and EDGEGATE_REQUIRE_REDIS is set: install it (apt-get install redis-server)")
		}
		t.Skip("redis-server not found on PATH: skipping this Redis test (install redis-server to run it; CI requires it)")
	}
	s := &Server{t: t, dir: t.TempDir(), args: args}
	s.port = freePort(t)
	s.start()
	t.Cleanup(s.Kill)
	return s
}

// StartTLS starts redis-server with TLS only (no plain port), requiring
// client certificates signed by caFile, with extra ACL lines such as
// "user default off". Readiness is checked over TLS without credentials:
// an authentication error means the server is up.
func StartTLS(t testing.TB, certFile, keyFile, caFile string, aclLines ...string) *Server {
	t.Helper()
	cert, err := tls.LoadX509KeyPair(certFile, keyFile)
	if err != nil {
		t.Fatalf("redistest: %v", err)
	}
	pem, err := os.ReadFile(caFile)
	if err != nil {
		t.Fatalf("redistest: %v", err)
	}
	roots := x509.NewCertPool()
	roots.AppendCertsFromPEM(pem)
	dir := t.TempDir()
	acl := filepath.Join(dir, "users.acl")
	if err := os.WriteFile(acl, []byte(strings.Join(aclLines, "\n")+"\n"), 0o600); err != nil {
		t.Fatalf("redistest: %v", err)
	}
	// The server's own certificate serves as the readiness check's client
	// certificate (the test CA signs it for both uses).
	port := freePort(t)
	args := []string{"--port", "0", "--tls-port", strconv.Itoa(port), "--tls-cert-file", certFile, "--tls-key-file", keyFile,
		"--tls-ca-cert-file", caFile, "--tls-auth-clients", "yes", "--aclfile", acl}
	if _, err := exec.LookPath("redis-server"); err != nil {
		return Start(t) // fails or skips with the message of Start
	}
	s := &Server{t: t, dir: dir, port: port, args: args,
		tls: &tls.Config{RootCAs: roots, Certificates: []tls.Certificate{cert}, ServerName: "127.0.0.1"}}
	s.start()
	t.Cleanup(s.Kill)
	return s
}

func freePort(t testing.TB) int {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	return ln.Addr().(*net.TCPAddr).Port
}

func (s *Server) start() {
	s.t.Helper()
	args := []string{
		"--port", strconv.Itoa(s.port), "--bind", "127.0.0.1",
		"--save", "", "--appendonly", "no", "--dir", s.dir,
		"--protected-mode", "no", "--loglevel", "warning",
	}
	args = append(args, s.args...) // a later --port wins
	s.cmd = exec.Command("redis-server", args...)
	logf, err := os.OpenFile(s.dir+"/redis.log", os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o600)
	if err != nil {
		s.t.Fatalf("redistest: %v", err)
	}
	defer logf.Close()
	s.cmd.Stdout, s.cmd.Stderr = logf, logf
	if err := s.cmd.Start(); err != nil {
		s.t.Fatalf("redistest: start redis-server: %v", err)
	}
	s.exit = make(chan struct{})
	go func(cmd *exec.Cmd, exit chan struct{}) { cmd.Wait(); close(exit) }(s.cmd, s.exit)
	c := redis.NewClient(&redis.Options{Addr: s.Addr(), TLSConfig: s.tls})
	defer c.Close()
	deadline := time.Now().Add(10 * time.Second)
	for {
		ctx, cancel := context.WithTimeout(context.Background(), time.Second)
		err := c.Ping(ctx).Err()
		cancel()
		var rerr redis.Error
		if err == nil || errors.As(err, &rerr) { // NOAUTH and the like: it answers
			return
		}
		select {
		case <-s.exit:
			s.t.Fatalf("redistest: redis-server exited at start (port %d taken?)", s.port)
		default:
		}
		if time.Now().After(deadline) {
			s.t.Fatalf("redistest: redis-server not answering PING within 10s: %v", err)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// Addr returns host:port.
func (s *Server) Addr() string { return fmt.Sprintf("127.0.0.1:%d", s.port) }

// URL returns redis://host:port/0.
func (s *Server) URL() string { return "redis://" + s.Addr() + "/0" }

// Client returns a client closed at the end of the test.
func (s *Server) Client() *redis.Client {
	c := redis.NewClient(&redis.Options{Addr: s.Addr()})
	s.t.Cleanup(func() { c.Close() })
	return c
}

// Kill stops the server with SIGKILL (all keys are lost: nothing is saved).
func (s *Server) Kill() {
	if s.cmd == nil || s.cmd.Process == nil {
		return
	}
	s.cmd.Process.Kill()
	<-s.exit
}

// Restart kills the server and starts a new one on the same port: a new
// run_id and no keys.
func (s *Server) Restart() {
	s.t.Helper()
	s.Kill()
	s.start()
}
