package embed

import (
	"context"
	"net"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"go.uber.org/goleak"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

func start(t *testing.T, cfg Config) *Server {
	t.Helper()
	s, err := New(cfg)
	if err != nil {
		t.Fatalf("New: %v", err)
	}
	t.Cleanup(s.Shutdown)
	return s
}

func roundTrip(t *testing.T, pub, sub *nats.Conn, subject string) {
	t.Helper()
	ch := make(chan *nats.Msg, 1)
	s, err := sub.ChanSubscribe(subject, ch)
	if err != nil {
		t.Fatal(err)
	}
	defer s.Unsubscribe()
	sub.Flush()
	deadline := time.Now().Add(10 * time.Second)
	for {
		pub.Publish(subject, []byte("hi"))
		select {
		case m := <-ch:
			if string(m.Data) != "hi" {
				t.Fatalf("got %q", m.Data)
			}
			return
		case <-time.After(50 * time.Millisecond):
		}
		if time.Now().After(deadline) {
			t.Fatalf("no message on %s within 10s", subject)
		}
	}
}

func TestInProcessOnly(t *testing.T) {
	s := start(t, Config{})
	if s.ClientURL() != "" {
		t.Fatalf("ClientURL %q without a client listener", s.ClientURL())
	}
	nc, err := s.Connect("test")
	if err != nil {
		t.Fatal(err)
	}
	defer nc.Close()
	roundTrip(t, nc, nc, "a.b")
}

func TestClientListenerAndJetStream(t *testing.T) {
	s := start(t, Config{Listen: "127.0.0.1:0", JetStream: true, StoreDir: t.TempDir()})
	if !strings.HasPrefix(s.ClientURL(), "nats://127.0.0.1:") || strings.HasSuffix(s.ClientURL(), ":0") {
		t.Fatalf("ClientURL %q: want the real loopback port", s.ClientURL())
	}
	nc, err := nats.Connect(s.ClientURL())
	if err != nil {
		t.Fatal(err)
	}
	defer nc.Close()
	js, _ := jetstream.New(nc)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if _, err := js.CreateStream(ctx, jetstream.StreamConfig{Name: "T", Subjects: []string{"t.>"}}); err != nil {
		t.Fatal(err)
	}
	ack, err := js.Publish(ctx, "t.x", []byte("stored"))
	if err != nil || ack.Sequence != 1 {
		t.Fatalf("publish: %+v, %v", ack, err)
	}
}

func TestCluster(t *testing.T) {
	a := start(t, Config{Name: "a", Cluster: ClusterConfig{Listen: "127.0.0.1:0"}})
	b := start(t, Config{Name: "b", Cluster: ClusterConfig{Listen: "127.0.0.1:0", Peers: []string{a.ClusterAddr()}}})
	na, _ := a.Connect("a")
	defer na.Close()
	nb, _ := b.Connect("b")
	defer nb.Close()
	roundTrip(t, na, nb, "across")
}

func TestPortInUse(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	_, err = New(Config{Listen: ln.Addr().String(), ReadyTimeout: 2 * time.Second})
	if err == nil {
		t.Fatal("started on a port in use")
	}
	if !strings.Contains(err.Error(), ln.Addr().String()) {
		t.Fatalf("error %q does not name the address", err)
	}
}

func TestShutdownTwice(t *testing.T) {
	s, err := New(Config{})
	if err != nil {
		t.Fatal(err)
	}
	s.Shutdown()
	s.Shutdown()
}
