package embed

import (
	"context"
	"fmt"
	"net"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"go.uber.org/goleak"

	"github.com/edgegate/edgegate/internal/wait"
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
	// Published again until it arrives: the interest may reach pub's
	// server (over a route, a gateway) only after a while.
	wait.For(t, 10*time.Second, func() error {
		pub.Publish(subject, []byte("hi"))
		select {
		case m := <-ch:
			if string(m.Data) != "hi" {
				t.Fatalf("got %q", m.Data)
			}
			return nil
		case <-time.After(50 * time.Millisecond):
			return fmt.Errorf("no message on %s", subject)
		}
	})
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
	s := start(t, Config{Listen: "127.0.0.1:0", JetStream: true, StoreDir: t.TempDir(), Clients: ClientRights{Streams: []string{"T"}}})
	if !strings.HasPrefix(s.ClientURL(), "nats://127.0.0.1:") || strings.HasSuffix(s.ClientURL(), ":0") {
		t.Fatalf("ClientURL %q: want the real loopback port", s.ClientURL())
	}
	// The appliance's own connection administers the stream and writes it.
	own, err := s.Connect("own")
	if err != nil {
		t.Fatal(err)
	}
	defer own.Close()
	ojs, _ := jetstream.New(own)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if _, err := ojs.CreateStream(ctx, jetstream.StreamConfig{Name: "T", Subjects: []string{"t.>"}}); err != nil {
		t.Fatal(err)
	}
	ack, err := ojs.Publish(ctx, "t.x", []byte("stored"))
	if err != nil || ack.Sequence != 1 {
		t.Fatalf("publish: %+v, %v", ack, err)
	}
	// A client on the port (without credentials on loopback) reads what
	// Clients allows, and changes nothing.
	nc, err := nats.Connect(s.ClientURL())
	if err != nil {
		t.Fatal(err)
	}
	defer nc.Close()
	js, _ := jetstream.New(nc)
	st, err := js.Stream(ctx, "T")
	if err != nil {
		t.Fatalf("client: stream info: %v", err)
	}
	if m, err := st.GetMsg(ctx, 1); err != nil || string(m.Data) != "stored" {
		t.Fatalf("client: read: %v, %v", m, err)
	}
	short, cancel := context.WithTimeout(ctx, time.Second)
	defer cancel()
	if err := st.Purge(short); err == nil {
		t.Fatal("client: purged the stream")
	}
}

// TestInProcessUsersOnly: the in-process users are refused on the client
// port whatever password is tried, and a client cannot reach the
// coordination account.
func TestInProcessUsersOnly(t *testing.T) {
	s := start(t, Config{Listen: "127.0.0.1:0", Clients: ClientRights{Subjects: []string{"records.>"}}})
	for _, user := range []string{internalUser, coordUser} {
		pass := map[string]string{internalUser: s.internal, coordUser: s.coord}[user]
		if nc, err := nats.Connect(s.ClientURL(), nats.UserInfo(user, pass)); err == nil {
			nc.Close()
			t.Errorf("%s logged in on the client port", user)
		}
	}
	co, err := s.ConnectCoord("coord")
	if err != nil {
		t.Fatal(err)
	}
	defer co.Close()
	got, err := co.SubscribeSync(">")
	if err != nil {
		t.Fatal(err)
	}
	co.Flush()
	nc, err := nats.Connect(s.ClientURL(), nats.ErrorHandler(func(*nats.Conn, *nats.Subscription, error) {}))
	if err != nil {
		t.Fatal(err)
	}
	defer nc.Close()
	for _, subject := range []string{"records.x", "edgegate.ready", "anything"} {
		nc.Publish(subject, []byte("x"))
	}
	nc.Flush()
	own, _ := s.Connect("own")
	defer own.Close()
	own.Publish("records.y", []byte("x"))
	own.Flush()
	if m, err := got.NextMsg(200 * time.Millisecond); err == nil {
		t.Errorf("the coordination account received %s from outside it", m.Subject)
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
