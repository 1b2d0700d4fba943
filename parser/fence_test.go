package parser

import (
	"context"
	"errors"
	"fmt"
	"net"
	"runtime"
	"strconv"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/edgegate/edgegate/coord"
	"github.com/edgegate/edgegate/internal/wait"
)

// jetStreamCluster runs three in-process NATS servers clustered over
// loopback routes, with JetStream, and returns a connection to each.
func jetStreamCluster(t testing.TB) []*nats.Conn {
	t.Helper()
	var lns []net.Listener
	var routes []string
	for range 3 {
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		lns = append(lns, ln) // held until all are chosen, so they differ
		routes = append(routes, "nats://"+ln.Addr().String())
	}
	var conns []*nats.Conn
	for i, ln := range lns {
		port := ln.Addr().(*net.TCPAddr).Port
		ln.Close()
		s := startServer(t, &server.Options{ServerName: fmt.Sprintf("s%d", i), Host: "127.0.0.1", Port: server.RANDOM_PORT,
			Cluster: server.ClusterOpts{Name: "fence", Host: "127.0.0.1", Port: port},
			Routes:  server.RoutesFromStr(strings.Join(routes, ","))})
		nc, err := nats.Connect(s.ClientURL())
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(nc.Close)
		conns = append(conns, nc)
	}
	return conns
}

// fenceRig is two publishers, the appliances of an older lease grant (a)
// and a newer one (b) of controller ctl-f, on their own connections.
type fenceRig struct {
	a, b *Publisher
	js   jetstream.JetStream
}

func newFenceRig(t *testing.T, ncA, ncB *nats.Conn, replicas int) *fenceRig {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	var pubs []*Publisher
	for _, nc := range []*nats.Conn{ncA, ncB} {
		p, err := NewPublisher(ctx, nc, PublisherConfig{JetStream: true, Replicas: replicas, Timeout: 5 * time.Second})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(p.Close)
		pubs = append(pubs, p)
	}
	return &fenceRig{a: pubs[0], b: pubs[1], js: parsedStreamReady(t, ncA)}
}

// parsedStreamReady waits for the parsed stream, which in a cluster may
// come a little after NewPublisher (it retries in the background).
func parsedStreamReady(t testing.TB, nc *nats.Conn) jetstream.JetStream {
	t.Helper()
	js, err := jetstream.New(nc)
	if err != nil {
		t.Fatal(err)
	}
	wait.For(t, 30*time.Second, func() error {
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		defer cancel()
		_, err := js.Stream(ctx, StreamParsed)
		return err
	})
	return js
}

func fenceMsg(gen, seq, fence uint64) *Message {
	return &Message{Controller: "ctl-f", Gen: gen, Seq: seq, Fence: fence, Received: time.Now(),
		Payload: []byte(fmt.Sprintf(`{"gen":%d,"seq":%d}`, gen, seq))}
}

// batch runs msgs through a pipeline of p: starts them all, then
// flushes.
func batch(ctx context.Context, t *testing.T, p *Publisher, msgs []*Message) (int, error) {
	t.Helper()
	pl := p.Handler(false).(BatchHandler).Pipeline()
	if pl == nil {
		t.Fatal("no pipeline")
	}
	defer pl.Close()
	for _, m := range msgs {
		if err := pl.Start(ctx, m); err != nil {
			return 0, err
		}
	}
	return pl.Flush(ctx)
}

// staleFences reads ctl-f's records in stream order and returns those
// stored with a lower fence than one stored before them.
func staleFences(t *testing.T, js jetstream.JetStream) (fences []uint64, stale []string) {
	t.Helper()
	var high uint64
	for _, m := range parsedRecords(t, js) {
		if m.Subject != coord.ParsedSubject("ctl-f") {
			continue
		}
		f, err := strconv.ParseUint(m.Header.Get(HeaderFence), 10, 64)
		if err != nil {
			t.Fatalf("record %d without a fence", m.Sequence)
		}
		fences = append(fences, f)
		if f < high {
			stale = append(stale, fmt.Sprintf("%s (fence %d after %d)", m.Header.Get(jetstream.MsgIDHeader), f, high))
		}
		high = max(high, f)
	}
	return fences, stale
}

// TestStaleGrantWritesNothingAfterNewer: records of an older lease grant
// that reach the stream after a newer grant's record (their publish was
// in flight when the lease ran out: a paused process, a stalled route)
// are refused by the stream itself, whichever way they were sent, and the
// newer grant goes on undisturbed: no record is stored with a lower fence
// than one before it, even when the newer record lands between two
// records of one batch.
func TestStaleGrantWritesNothingAfterNewer(t *testing.T) {
	for _, tc := range []struct {
		name     string
		replicas int
		// late sends the older grant's records; newer writes the
		// newer grant's record at the worst moment.
		late func(ctx context.Context, t *testing.T, r *fenceRig, newer func()) error
		// want is the fences in stream order: the older grant's two
		// records, those of its late ones stored before the newer grant
		// wrote, the newer grant's two.
		want string
	}{
		{name: "batch", replicas: 1, late: func(ctx context.Context, t *testing.T, r *fenceRig, newer func()) error {
			// The newer grant writes before the batch's first record is
			// sent, after the older grant read the subject.
			sent := 0
			r.a.beforeSend = func(*nats.Msg) {
				if sent++; sent == 1 {
					newer()
				}
			}
			n, err := batch(ctx, t, r.a, []*Message{fenceMsg(1, 3, 1), fenceMsg(1, 4, 1), fenceMsg(1, 5, 1)})
			if n != 0 && err == nil {
				return nil
			}
			return err
		}},
		{name: "alone", replicas: 1, late: func(ctx context.Context, t *testing.T, r *fenceRig, newer func()) error {
			newer()
			return r.a.Parsed(ctx, fenceMsg(1, 3, 1), fenceMsg(1, 3, 1).Payload)
		}},
		// A fast-ingest batch's first record is stored before the newer
		// grant writes; an atomic batch stores none of it.
		{name: "batch split", replicas: 1, late: splitBatch, want: "[1 1 1 2 2]"},
		{name: "replicated batch split", replicas: 3, late: splitBatch},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if tc.replicas > 1 && testing.Short() {
				t.Skip("long: three servers")
			}
			var ncA, ncB *nats.Conn
			if tc.replicas > 1 {
				conns := jetStreamCluster(t)
				ncA, ncB = conns[0], conns[1]
			} else {
				ncA = jetStreamConn(t)
				ncB = ncA
			}
			r := newFenceRig(t, ncA, ncB, tc.replicas)
			ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
			defer cancel()
			// The older grant (fence 1) stores two records, and knows
			// where it left the subject.
			if n, err := batch(ctx, t, r.a, []*Message{fenceMsg(1, 1, 1), fenceMsg(1, 2, 1)}); n != 2 || err != nil {
				t.Fatalf("first batch: %d stored, %v", n, err)
			}
			// The newer grant (fence 2, a new session's generation).
			newer := func() {
				m := fenceMsg(2, 1, 2)
				if err := r.b.Parsed(ctx, m, m.Payload); err != nil {
					t.Errorf("the newer grant's record: %v", err)
				}
			}
			if err := tc.late(ctx, t, r, newer); err == nil {
				t.Error("the older grant's late records were taken as stored")
			}
			// The newer grant goes on where it left the subject: the
			// refused records moved nothing.
			if m := fenceMsg(2, 2, 2); r.b.Parsed(ctx, m, m.Payload) != nil {
				t.Error("the newer grant's next record was refused")
			}
			fences, stale := staleFences(t, r.js)
			if len(stale) > 0 {
				t.Errorf("records stored after a newer grant's: %v (fences in stream order %v)", stale, fences)
			}
			want := tc.want
			if want == "" {
				want = "[1 1 2 2]"
			}
			if fmt.Sprint(fences) != want {
				t.Errorf("fences in stream order %v, want %s", fences, want)
			}
		})
	}
}

// splitBatch sends a batch of the older grant, and the newer grant reads
// the stream after the batch's first record is sent, before the others
// are, and writes: the older grant's publisher stopped in the middle of a
// batch past its lease.
func splitBatch(ctx context.Context, t *testing.T, r *fenceRig, newer func()) error {
	sent := 0
	r.a.beforeSend = func(*nats.Msg) {
		if sent++; sent != 2 {
			return
		}
		// A fast-ingest batch's first record is stored by now: wait for
		// it. An atomic batch stores nothing before its commit, so this
		// waits its whole bound, and goes on.
		_ = wait.Until(time.Second, func() error {
			st, err := r.js.Stream(ctx, StreamParsed)
			if err != nil {
				return err
			}
			last, err := st.GetLastMsgForSubject(ctx, coord.ParsedSubject("ctl-f"))
			if err == nil && last.Header.Get(HeaderSeq) == "3" {
				return nil
			}
			return errors.New("not stored")
		})
		newer()
	}
	n, err := batch(ctx, t, r.a, []*Message{fenceMsg(1, 3, 1), fenceMsg(1, 4, 1), fenceMsg(1, 5, 1)})
	if n != 0 && err == nil {
		return nil
	}
	return err
}

// BenchmarkRecordBatches measures the two kinds of batch a pipeline sends
// (fast-ingest, atomic) into a single-replica and a three-replica file
// stream: 64 records of 100 bytes a batch, the first conditional on the
// subject's last record (or, fast-marked, each on the grant's marker),
// 100 controllers' batches at once.
//
//	go test ./parser -run '^$' -bench RecordBatches -benchtime 5s
func BenchmarkRecordBatches(b *testing.B) {
	for _, replicas := range []int{1, 3} {
		// One server or cluster for every run of both kinds.
		var nc *nats.Conn
		if replicas > 1 {
			nc = jetStreamCluster(b)[0]
		} else {
			nc = jetStreamConn(b)
		}
		ctx := context.Background()
		p, err := NewPublisher(ctx, nc, PublisherConfig{JetStream: true, Replicas: replicas, Timeout: 10 * time.Second})
		if err != nil {
			b.Fatal(err)
		}
		b.Cleanup(p.Close)
		js := parsedStreamReady(b, nc)
		// The stream takes records (its leader is known where nc is).
		wait.For(b, 30*time.Second, func() error {
			_, err := js.Publish(ctx, coord.ParsedSubject("bench-probe"), nil)
			return err
		})
		var next atomic.Int64
		kinds := []string{"fast", "atomic"}
		if replicas == 1 {
			// As a pipeline sends them there: each record conditional on
			// the grant's marker (markGrant).
			kinds = append(kinds, "fast-marked")
		}
		for _, kind := range kinds {
			b.Run(fmt.Sprintf("R%d/%s", replicas, kind), func(b *testing.B) {
				const batch, controllers = 64, 100
				body := make([]byte, 100)
				b.SetParallelism(controllers / max(1, runtime.GOMAXPROCS(0)))
				b.ResetTimer()
				b.RunParallel(func(pb *testing.PB) {
					ctl := fmt.Sprintf("bench-%d", next.Add(1))
					var last, seq uint64
					var k known
					if kind == "fast-marked" {
						var err error
						if k.mark, err = p.markGrant(ctx, &Message{Controller: ctl, Fence: 1}, 0); err != nil {
							b.Error(err)
							return
						}
					}
					for pb.Next() {
						msgs := make([]*nats.Msg, batch)
						for i := range msgs {
							seq++
							m := &Message{Controller: ctl, Gen: 1, Seq: seq, Fence: 1}
							msgs[i] = p.msg(coord.ParsedSubject(ctl), m, body)
							if k.mark > 0 {
								k.condition(msgs[i], ctl)
							}
						}
						if k.mark == 0 {
							expectAfter(msgs[0], last)
						}
						var rb recordBatch = newAtomicBatch(nc)
						if kind != "atomic" {
							fb, err := p.pipe.ingest(nc).begin(msgs[0].Subject)
							if err != nil {
								b.Error(err)
								return
							}
							rb = fb
						}
						for _, m := range msgs[:batch-1] {
							if err := rb.send(ctx, m, 10*time.Second); err != nil {
								b.Error(err)
								return
							}
						}
						n, l, err := rb.commit(ctx, msgs[batch-1], 10*time.Second)
						if err != nil || n != batch {
							b.Errorf("%d stored: %v", n, err)
							return
						}
						last = l
					}
				})
				b.ReportMetric(float64(b.N*batch)/b.Elapsed().Seconds(), "records/s")
			})
		}
	}
}

// expiredLease is the context of a lease that ran out by the clock while
// nothing cancelled it yet (leaseContext between its deadline and the
// heartbeat's cancel): Err says so, Done is not closed.
type expiredLease struct{ context.Context }

func (expiredLease) Err() error { return context.DeadlineExceeded }

// TestExpiredGrantWritesNoMarker: a grant whose lease ran out writes no
// marker (a single-replica stream). Its marker would make the stream
// refuse the newer grant's records and take its own late ones after them.
func TestExpiredGrantWritesNoMarker(t *testing.T) {
	nc := jetStreamConn(t)
	r := newFenceRig(t, nc, nc, 1)
	m := fenceMsg(1, 1, 1)
	if err := r.a.Parsed(expiredLease{context.Background()}, m, m.Payload); err == nil {
		t.Fatal("a record written under an expired lease")
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	st, err := r.js.Stream(ctx, StreamParsed)
	if err != nil {
		t.Fatal(err)
	}
	if mk, err := st.GetLastMsgForSubject(ctx, coord.GrantSubject("ctl-f")); !errors.Is(err, jetstream.ErrMsgNotFound) {
		t.Fatalf("the expired grant's marker: %v, %v", mk, err)
	}
}

// TestStaleMarkerRefused: a grant's marker is conditional on the
// controller's last record being the one the grant read. Once a newer
// grant stored a record, an older grant's marker on what it read before
// is refused (its records would be taken after the newer grant's), and
// the newer grant goes on; a marker on the last record is taken.
func TestStaleMarkerRefused(t *testing.T) {
	nc := jetStreamConn(t)
	r := newFenceRig(t, nc, nc, 1)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if n, err := batch(ctx, t, r.a, []*Message{fenceMsg(1, 1, 1), fenceMsg(1, 2, 1)}); n != 2 || err != nil {
		t.Fatalf("first batch: %d stored, %v", n, err)
	}
	st, err := r.js.Stream(ctx, StreamParsed)
	if err != nil {
		t.Fatal(err)
	}
	read, err := st.GetLastMsgForSubject(ctx, coord.ParsedSubject("ctl-f"))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := r.a.markGrant(ctx, fenceMsg(1, 3, 1), read.Sequence); err != nil {
		t.Fatalf("a marker on the last record: %v", err)
	}
	m := fenceMsg(2, 1, 2)
	if err := r.b.Parsed(ctx, m, m.Payload); err != nil {
		t.Fatalf("the newer grant's record: %v", err)
	}
	if seq, err := r.a.markGrant(ctx, fenceMsg(1, 3, 1), read.Sequence); err == nil {
		t.Fatalf("the older grant's marker taken after the newer grant's record (stream seq %d)", seq)
	}
	if m := fenceMsg(2, 2, 2); r.b.Parsed(ctx, m, m.Payload) != nil {
		t.Error("the newer grant's next record was refused")
	}
	if fences, stale := staleFences(t, r.js); len(stale) > 0 || fmt.Sprint(fences) != "[1 1 2 2]" {
		t.Errorf("fences in stream order %v, stale %v", fences, stale)
	}
}

// TestStreamsTakeDuplicateWindow: the streams remember message IDs for
// the window configured (nats.duplicate_window), which bounds the memory
// the IDs take.
func TestStreamsTakeDuplicateWindow(t *testing.T) {
	nc := jetStreamConn(t)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	p, err := NewPublisher(ctx, nc, PublisherConfig{JetStream: true, Duplicates: 45 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	defer p.Close()
	js := parsedStreamReady(t, nc)
	for _, name := range []string{StreamParsed, StreamDead} {
		st, err := js.Stream(ctx, name)
		if err != nil {
			t.Fatal(err)
		}
		if d := st.CachedInfo().Config.Duplicates; d != 45*time.Second {
			t.Errorf("%s: duplicate window %v, want 45s", name, d)
		}
	}
}

// TestRegrantFindsWhatAnotherGrantStored: a pool keeps what its last
// grant of a controller left in the stream, and a new grant of its own
// starts from that without reading the stream (the marker's condition
// checks it). When another appliance's grant stored records in between,
// the new grant finds them all the same: a resent message it holds is not
// stored twice, and another message under a stored message's ID is not
// acknowledged as stored.
func TestRegrantFindsWhatAnotherGrantStored(t *testing.T) {
	nc := jetStreamConn(t)
	r := newFenceRig(t, nc, nc, 1)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	reads := make(chan string, 64)
	sub, err := nc.Subscribe("$JS.API.DIRECT.GET.>", func(m *nats.Msg) { reads <- m.Subject })
	if err != nil {
		t.Fatal(err)
	}
	defer sub.Unsubscribe()
	readsSoFar := func() int {
		if err := nc.Flush(); err != nil {
			t.Fatal(err)
		}
		return len(reads)
	}

	if n, err := batch(ctx, t, r.a, []*Message{fenceMsg(1, 1, 1), fenceMsg(1, 2, 1), fenceMsg(1, 3, 1)}); n != 3 || err != nil {
		t.Fatalf("a, grant 1: %d stored, %v", n, err)
	}
	if n, err := batch(ctx, t, r.b, []*Message{fenceMsg(1, 4, 2), fenceMsg(1, 5, 2)}); n != 2 || err != nil {
		t.Fatalf("b, grant 2: %d stored, %v", n, err)
	}
	// Back on a: 4 resent as it was, 5 another message under 5's ID.
	other := fenceMsg(1, 5, 3)
	other.Payload = []byte(`{"another":"message"}`)
	if n, err := batch(ctx, t, r.a, []*Message{fenceMsg(1, 4, 3)}); n != 1 || err != nil {
		t.Fatalf("a, grant 3, the resent message: %d stored, %v", n, err)
	}
	if n, err := batch(ctx, t, r.a, []*Message{other}); n != 0 || err == nil {
		t.Fatalf("a, grant 3, another message under a stored one's ID: %d counted as stored (%v)", n, err)
	}
	before := readsSoFar()
	if n, err := batch(ctx, t, r.a, []*Message{fenceMsg(1, 6, 4)}); n != 1 || err != nil {
		t.Fatalf("a, grant 4: %d stored, %v", n, err)
	}
	if after := readsSoFar(); after != before {
		t.Errorf("a grant after the pool's own read the stream %d times", after-before)
	}

	var got []string
	for _, m := range parsedRecords(t, r.js) {
		got = append(got, m.Header.Get(HeaderSeq)+"@"+m.Header.Get(HeaderFence)+":"+string(m.Data))
	}
	want := []string{`1@1:{"gen":1,"seq":1}`, `2@1:{"gen":1,"seq":2}`, `3@1:{"gen":1,"seq":3}`,
		`4@2:{"gen":1,"seq":4}`, `5@2:{"gen":1,"seq":5}`, `6@4:{"gen":1,"seq":6}`}
	if fmt.Sprint(got) != fmt.Sprint(want) {
		t.Errorf("records in stream order\n got %v\nwant %v", got, want)
	}
}

// TestLastRecordWithCopiedSequenceHeader: the last message on a record
// subject carries a Nats-Sequence header of its own (a copy of a direct
// read's answer, stored there), before the one the server adds when it is
// read. A grant's marker must be conditional on the message's real stream
// seq, or the stream refuses it, and every grant after, for good.
func TestLastRecordWithCopiedSequenceHeader(t *testing.T) {
	nc := jetStreamConn(t)
	r := newFenceRig(t, nc, nc, 1)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if n, err := batch(ctx, t, r.a, []*Message{fenceMsg(1, 1, 1), fenceMsg(1, 2, 1)}); n != 2 || err != nil {
		t.Fatalf("grant 1: %d stored, %v", n, err)
	}
	st, err := r.js.Stream(ctx, StreamParsed)
	if err != nil {
		t.Fatal(err)
	}
	old, err := st.GetMsg(ctx, 1, jetstream.WithGetMsgSubject(coord.ParsedSubject("ctl-f")))
	if err != nil {
		t.Fatal(err)
	}
	cp := nats.NewMsg(coord.ParsedSubject("ctl-f"))
	for k, v := range old.Header {
		cp.Header[k] = v
	}
	cp.Header[jetstream.MsgIDHeader] = []string{"a-copy"}
	cp.Header[jetstream.SequenceHeader] = []string{strconv.FormatUint(old.Sequence, 10)}
	cp.Data = old.Data
	if _, err := r.js.PublishMsg(ctx, cp); err != nil {
		t.Fatal(err)
	}
	if n, err := batch(ctx, t, r.b, []*Message{fenceMsg(1, 3, 2)}); n != 1 || err != nil {
		t.Fatalf("grant 2 after the copy: %d stored, %v", n, err)
	}
}
