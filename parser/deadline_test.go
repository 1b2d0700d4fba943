package parser

import (
	"context"
	"errors"
	"fmt"
	"testing"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/edgegate/edgegate/coord"
	"github.com/edgegate/edgegate/lease"
)

// TestLostDeadLetterReplyTimesOut: a dead letter whose publish
// acknowledgement never comes is given up after the publish timeout and
// tried again, while the batch's lease is alive and heartbeats keep
// moving its validity on (the lease TTL is shorter than the publish
// timeout, so the validity is always the sooner). A live lease must not
// let one publish wait forever (the controller would stall with it).
func TestLostDeadLetterReplyTimesOut(t *testing.T) {
	if testing.Short() {
		t.Skip("long: publish timeouts of seconds")
	}
	nc := jetStreamConn(t)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	pub, err := NewPublisher(ctx, nc, PublisherConfig{JetStream: true, Timeout: 2 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(pub.Close)
	js, err := jetstream.New(nc)
	if err != nil {
		t.Fatal(err)
	}
	// The dead-letter stream goes, and a subscriber that never answers
	// takes its subject: every publish there is received and its
	// acknowledgement lost.
	if err := js.DeleteStream(ctx, "EDGEGATE_DEAD"); err != nil {
		t.Fatal(err)
	}
	received := make(chan *nats.Msg, 16)
	sub, err := nc.ChanSubscribe("edgegate.dead.>", received)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = sub.Unsubscribe() })

	refuse := HandlerFunc(func(context.Context, *Message) error { return Permanent(errors.New("unparsable")) })
	store := lease.NewMemory()
	p, _ := startPoolStore(t, Config{Workers: 1, Handler: refuse, DeadLetter: pub.Dead, Attempts: 1,
		TTL: time.Second, Heartbeat: 100 * time.Millisecond,
		RetryMin: 5 * time.Millisecond, RetryMax: 50 * time.Millisecond}, store)
	r := &pipelineRig{pool: p, store: store, pub: pub, js: js}
	go func() { _, _ = r.try("ctl-d", func(uint64) []byte { return []byte(`x`) }, 1) }()

	// The first dead letter arrives; a second one for the same message
	// means the first publish was given up and retried.
	deadline := time.After(20 * time.Second)
	var ids []string
	for len(ids) < 2 {
		select {
		case m := <-received:
			ids = append(ids, m.Header.Get(jetstream.MsgIDHeader))
		case <-deadline:
			t.Fatalf("dead letters received: %v; the publish of the first one never gave up", ids)
		}
	}
	if ids[0] != ids[1] || ids[0] != fmt.Sprintf("ctl-d:%d:%d", 1, 1) {
		t.Fatalf("dead letters %v, want the retries of ctl-d:1:1", ids)
	}
}

// TestUnansweredDuplicateCheckTimesOut: when the stream takes a record
// for a duplicate, the read of the stored one (sameAsStored) is bounded
// by the publish timeout too, not only by the attempt's deadline. Its
// requests go unanswered here (the publisher's login may not read
// messages, so the server drops them; a stream leader cut off by a
// route behaves alike): the check fails after the publish timeout.
func TestUnansweredDuplicateCheckTimesOut(t *testing.T) {
	deny := []string{"$JS.API.STREAM.MSG.GET.>", "$JS.API.DIRECT.GET.>"}
	s := startServer(t, &server.Options{DontListen: true,
		Users: []*server.User{{Username: "p", Password: "p", Permissions: &server.Permissions{
			Publish: &server.SubjectPermission{Allow: []string{">"}, Deny: deny}}}}})
	nc, err := nats.Connect("", nats.InProcessServer(s), nats.UserInfo("p", "p"), nats.ErrorHandler(func(*nats.Conn, *nats.Subscription, error) {}))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(nc.Close)
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	pub, err := NewPublisher(ctx, nc, PublisherConfig{JetStream: true, Timeout: time.Second})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(pub.Close)
	m := &Message{Controller: "ctl-u", Gen: 1, Seq: 1, Fence: 1, Payload: []byte(`{"n":1}`)}
	// The first publish, and what the grant knows of the subject after
	// it (Parsed would read it, and the reads go unanswered here).
	ack, err := pub.put(ctx, pub.msg(coord.ParsedSubject(m.Controller), m, m.Payload))
	if err != nil {
		t.Fatalf("the first publish: %v", err)
	}
	pub.pipe.known.put(m.Controller, known{fence: 1, any: true, sure: true, gen: 1, seq: 1, lastSeq: ack.Sequence}, time.Now())
	// The same record again, under a deadline far beyond the publish
	// timeout (an attempt's, parser.timeout).
	done := make(chan error, 1)
	go func() { done <- pub.Parsed(ctx, m, m.Payload) }()
	select {
	case err := <-done:
		if err == nil {
			t.Fatal("the duplicate was taken as stored without reading the stored record")
		}
	case <-time.After(20 * time.Second):
		t.Fatal("the check of the duplicate still waits 20s later")
	}
}
