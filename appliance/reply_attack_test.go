package appliance_test

import (
	"context"
	"strconv"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/edgegate/edgegate/coord"
	"github.com/edgegate/edgegate/device"
	"github.com/edgegate/edgegate/parser"
)

// TestClientRepliesStayOutOfTheStreams: a client login sends what it may
// (a status request, JetStream API reads) with a reply subject of the
// streams, a record's or a dead letter's. nats-server checks a client's
// permissions on the subject it publishes to, never on the reply
// subject: answered in the records account, the answers (the status,
// JetStream's own, a copy of a stored record with its headers) were
// stored as records and dead letters nobody wrote, and a copy's second
// Nats-Sequence header stalled its controller for good. The answers must
// reach the client, and nothing of them the streams.
func TestClientRepliesStayOutOfTheStreams(t *testing.T) {
	const id = "meter-1"
	a := start(t, trustConfig(t, "reply-victim"))
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	dev := dialDevice(t, device.Config{Addrs: []string{a.DeviceAddr()}, ID: id})
	if err := sendAll(ctx, dev, id, 3); err != nil {
		t.Fatal(err)
	}
	recs := readStream(t, a, parser.StreamParsed, 3)

	nc := dialClient(t, a)
	answers := make(chan *nats.Msg, 64)
	for _, subj := range []string{coord.ParsedSubject(">"), coord.DeadSubject(">")} {
		if _, err := nc.ChanSubscribe(subj, answers); err != nil {
			t.Fatal(err)
		}
	}
	if err := nc.Flush(); err != nil {
		t.Fatal(err)
	}
	get := []byte(`{"seq":` + strconv.FormatUint(recs[0].Sequence, 10) + `}`)
	requests := []struct {
		subject, reply string
		body           []byte
	}{
		{coord.SubjectStatus, coord.ParsedSubject("forged-by-status"), nil},
		{"$JS.API.INFO", coord.ParsedSubject("forged-by-api"), nil},
		{"$JS.API.INFO", coord.DeadSubject("forged-by-api"), nil},
		{"$JS.API.DIRECT.GET." + parser.StreamParsed, coord.ParsedSubject("forged-by-get"), get},
	}
	for _, r := range requests {
		if err := nc.PublishRequest(r.subject, r.reply, r.body); err != nil {
			t.Fatal(err)
		}
		// The answer reaches the client: the request was answered (the
		// status has an answer from each socket and pool).
		for answered := false; !answered; {
			select {
			case m := <-answers:
				answered = m.Subject == r.reply
			case <-ctx.Done():
				t.Fatalf("%s: no answer on %s", r.subject, r.reply)
			}
		}
	}

	// Anything the answers put in a stream's queue is stored before a
	// record published after them.
	own, err := a.Connect("test-admin")
	if err != nil {
		t.Fatal(err)
	}
	defer own.Close()
	js, err := jetstream.New(own)
	if err != nil {
		t.Fatal(err)
	}
	for _, stream := range []struct{ name, subject string }{
		{parser.StreamParsed, coord.ParsedSubject("sentinel")},
		{parser.StreamDead, coord.DeadSubject("sentinel")},
	} {
		if _, err := js.Publish(ctx, stream.subject, nil); err != nil {
			t.Fatal(err)
		}
		st, err := js.Stream(ctx, stream.name)
		if err != nil {
			t.Fatal(err)
		}
		info, err := st.Info(ctx, jetstream.WithSubjectFilter(">"))
		if err != nil {
			t.Fatal(err)
		}
		for subj, n := range info.State.Subjects {
			switch subj {
			case coord.ParsedSubject(id), coord.GrantSubject(id), stream.subject:
				continue
			}
			t.Errorf("%s holds %d message(s) on %s, which only a client's reply subject named", stream.name, n, subj)
		}
		if stream.name == parser.StreamParsed && info.State.Subjects[coord.ParsedSubject(id)] != 3 {
			t.Errorf("%s holds %d records of %s, want its 3", stream.name, info.State.Subjects[coord.ParsedSubject(id)], id)
		}
	}
	if err := sendAll(ctx, dev, id, 3); err != nil {
		t.Errorf("%s's next messages: %v", id, err)
	}
}
