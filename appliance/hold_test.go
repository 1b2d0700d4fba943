package appliance_test

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/edgegate/edgegate/appliance"
	"github.com/edgegate/edgegate/device"
	"github.com/edgegate/edgegate/internal/redistest"
	"github.com/edgegate/edgegate/internal/wait"
	"github.com/edgegate/edgegate/lease"
)

// TestLeaseKeptAcrossBatches: a pipelining controller's batches follow one
// another under the lease its parser kept (done recorded and the lease
// extended in one script, or, while the lock as the last such keep or the
// acquire set it still holds for about the hold, no store call at all),
// not an acquire and a release each; the
// lease is given back once the controller goes quiet, and the done
// record is then exact.
func TestLeaseKeptAcrossBatches(t *testing.T) {
	const id, total = "steady", 400
	redis := redistest.Start(t)
	store := lease.NewRedis(redis.Client(), "", 0)
	j := newJournal(nil)
	cfg := testConfig(t, "keeper")
	cfg.Lease.Redis = redis.URL()
	cfg.Parser.Batch = 8
	cfg.Handler = j
	a := start(t, cfg)

	c := dialDevice(t, device.Config{Addrs: []string{a.DeviceAddr()}, ID: id, Window: 64})
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if err := sendAll(ctx, c, id, total); err != nil {
		t.Fatal(err)
	}
	checkIncreasing(t, id, j.succeeded(id), total)
	if overlaps, _ := j.snapshot(); len(overlaps) > 0 {
		t.Errorf("overlaps: %v", overlaps)
	}
	st := a.SocketStats()
	if st.Batches < uint64(total/cfg.Parser.Batch) {
		t.Fatalf("%d batches for %d messages in batches of at most %d", st.Batches, total, cfg.Parser.Batch)
	}
	if st.Continued == 0 || st.Acquired*4 > st.Batches {
		t.Errorf("%d batches, %d continued under a kept lease, %d leases acquired: want most batches without an acquire", st.Batches, st.Continued, st.Acquired)
	}
	if ps := a.ParserStats(); ps.Kept == 0 || ps.Deferred == 0 {
		t.Errorf("the parser kept no lease, or none without a store call (%+v)", ps)
	}

	// Quiet now: the socket gives the lease back, and the done record
	// covers every message.
	var ls lease.State
	wait.True(t, 10*time.Second, "the idle controller's lease released", func() bool {
		var err error
		ls, err = store.Inspect(ctx, id)
		return err == nil && !ls.Locked
	})
	if ls.Done != total {
		t.Errorf("done record %d after %d messages", ls.Done, total)
	}
	// A device that comes back is told so in its WELCOME.
	c.Close()
	// (A device that keeps its seqs: for others the seqs start again.)
	c2 := dialDevice(t, device.Config{Addrs: []string{a.DeviceAddr()}, ID: id, PersistentSeq: true})
	if got := c2.Welcome().LastSeq; got != total {
		t.Errorf("WELCOME last_seq %d, want %d", got, total)
	}
}

// TestHeldLeaseFollowsDevice: a lease kept for a controller does not hold
// the controller back when its device moves to another appliance, long
// before the lease (30 s here) would expire: the old socket releases it as
// soon as the device is gone, and when that socket cannot (it lost Redis),
// the parser pool that kept the lease releases it when the device's new
// session is announced. The batches ran on the other appliance's parser
// pool (the first has none), which took them under the lease it kept
// without a confirming heartbeat.
func TestHeldLeaseFollowsDevice(t *testing.T) {
	for _, tt := range []struct {
		name         string
		socketCutOff bool // the first appliance loses Redis before the device moves
	}{
		{"released by the socket", false},
		{"released by the parser pool", true},
	} {
		t.Run(tt.name, func(t *testing.T) { testHeldLeaseFollowsDevice(t, tt.socketCutOff) })
	}
}

func testHeldLeaseFollowsDevice(t *testing.T, socketCutOff bool) {
	const id, each = "mover", 200
	redis := redistest.Start(t)
	// A fresh Redis counts as one that just lost its data: grants would
	// wait the 30 s lease. It held no lease before.
	if err := lease.SetEpochStart(context.Background(), redis.Client(), "", time.Now().Add(-time.Hour)); err != nil {
		t.Fatal(err)
	}
	px := newProxy(t, redis.Addr())
	j := newJournal(nil)
	var apps []*appliance.Appliance
	var peers []string
	for i := 0; i < 2; i++ {
		name := fmt.Sprintf("hold-%d", i)
		cfg := testConfig(t, name)
		cfg.Lease.Redis = redis.URL()
		cfg.Lease.TTL = 30 * time.Second
		cfg.NATS.Cluster.Listen = "127.0.0.1:0"
		cfg.NATS.Cluster.Peers = append([]string(nil), peers...)
		cfg.NATS.Cluster.User, cfg.NATS.Cluster.Password = "route", "route-test-secret"
		cfg.Parser.Batch = 8
		cfg.Handler = j.on(name)
		if i == 0 {
			cfg.Parser.Workers = 0 // intake only: its devices use hold-1's parsers
			cfg.Lease.Redis = "redis://" + px.Addr() + "/0"
		}
		a := start(t, cfg)
		apps = append(apps, a)
		peers = append(peers, a.ClusterAddr())
	}
	for _, a := range apps {
		wait.True(t, 15*time.Second, "hold-1's parser pool visible", func() bool { return a.SocketStats().Pools == 1 })
	}

	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	c1 := dialDevice(t, device.Config{Addrs: []string{apps[0].DeviceAddr()}, ID: id, Window: 64})
	if err := sendAll(ctx, c1, id, each); err != nil {
		t.Fatal(err)
	}
	if st := apps[0].SocketStats(); st.Continued == 0 {
		t.Errorf("no batch continued under a kept lease across the route (%d batches)", st.Batches)
	}
	if ps := apps[1].ParserStats(); ps.Unconfirmed == 0 {
		t.Errorf("every batch from the other appliance was confirmed (%d batches, %d kept)", ps.Batches, ps.Kept)
	}
	if socketCutOff {
		px.Block() // hold-0 can no longer release anything
		t.Cleanup(px.Unblock)
	}
	c1.Close()
	// Well within the socket's hold (TTL/2, 15 s) and the lease: only a
	// release when the device left lets this through.
	ctx2, cancel2 := context.WithTimeout(context.Background(), 4*time.Second)
	defer cancel2()
	c2 := dialDevice(t, device.Config{Addrs: []string{apps[1].DeviceAddr()}, ID: id, Window: 64})
	if err := sendAll(ctx2, c2, id, each); err != nil {
		t.Fatalf("the device on the other appliance: %v", err)
	}
	if got := len(j.succeeded(id)); got != 2*each {
		t.Errorf("handled %d messages, want %d", got, 2*each)
	}
	if overlaps, _ := j.snapshot(); len(overlaps) > 0 {
		t.Errorf("overlaps: %v", overlaps)
	}
}
