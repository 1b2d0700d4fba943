package main

import (
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"math/rand/v2"
	"os"
	"path/filepath"
	"slices"
	"sort"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/edgegate/edgegate/device"
	"github.com/edgegate/edgegate/internal/faultproxy"
	"github.com/edgegate/edgegate/internal/redistest"
)

var (
	faultCount      = flag.Int("faults", 20, "TestFaults: number of faults to inject")
	faultSeed       = flag.Uint64("faults.seed", 0, "TestFaults: random seed (0: from the clock)")
	faultReportPath = flag.String("faults.report", "", "TestFaults: write the report as JSON to this file")
)

// faultRig is three edgegate processes, a Redis, and fault proxies on every
// link: devices → appliance, appliance → Redis, and each route direction
// between two appliances.
type faultRig struct {
	t       *testing.T
	bin     string
	procs   []*proc
	redis   *redistest.Server
	redisPx *faultproxy.Proxy
	devPx   []*faultproxy.Proxy
	routePx map[[2]int]*faultproxy.Proxy // [from, to]
	journal string

	mu       sync.Mutex
	killedAt map[int]int64 // pid → unix ns of its SIGKILL
}

func newFaultRig(t *testing.T, n int) *faultRig {
	t.Helper()
	r := &faultRig{t: t, bin: edgegateBinary(t), redis: redistest.Start(t), routePx: map[[2]int]*faultproxy.Proxy{}, killedAt: map[int]int64{}}
	proxy := func(target string) *faultproxy.Proxy {
		p, err := faultproxy.Listen(freePort(t), target)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(p.Close)
		return p
	}
	r.redisPx = proxy(r.redis.Addr())
	dir := t.TempDir()
	r.journal = filepath.Join(dir, "journal")
	self, _ := os.Executable()
	route := make([]string, n)
	for i := 0; i < n; i++ {
		route[i] = freePort(t)
		r.procs = append(r.procs, &proc{name: fmt.Sprintf("gw-%d", i), devices: freePort(t), cluster: route[i], http: freePort(t), nats: freePort(t)})
	}
	for i := 0; i < n; i++ {
		r.devPx = append(r.devPx, proxy(r.procs[i].devices))
		for j := 0; j < n; j++ {
			if i != j {
				r.routePx[[2]int{i, j}] = proxy(route[j])
			}
		}
	}
	for i, p := range r.procs {
		var peers []string
		for j := 0; j < n; j++ {
			if j != i {
				peers = append(peers, r.routePx[[2]int{i, j}].Addr())
			}
		}
		p.args = []string{"run", "--name", p.name, "--data_dir", filepath.Join(dir, p.name),
			"--devices.listen", p.devices, "--nats.listen", p.nats, "--nats.jetstream=false",
			// Routes only through the proxies: nothing learns the real
			// route addresses (the advertised one leads nowhere).
			"--nats.cluster.listen", p.cluster, "--nats.cluster.advertise", "127.0.0.1:9",
			"--nats.cluster.peers", strings.Join(peers, ","),
			"--nats.cluster.user", "route", "--nats.cluster.password", "route-test-secret",
			"--lease.redis", "redis://" + r.redisPx.Addr() + "/0?dial_timeout=300ms&read_timeout=500ms&write_timeout=500ms",
			"--lease.ttl", "1s", "--lease.heartbeat", "200ms", "--lease.check_interval", "200ms",
			"--parser.handler", "exec", "--parser.exec", self, "--parser.workers", "4",
			"--parser.exec_env", "EDGEGATE_JOURNAL_CHILD,GORACE", // the child's mode: exec children get no other variable
			"--http.listen", p.http, "--log.level", "info"}
		var err error
		if p.log, err = os.Create(filepath.Join(dir, p.name+".log")); err != nil {
			t.Fatal(err)
		}
		r.start(p)
		t.Cleanup(func() {
			p.signal(syscall.SIGCONT)
			p.kill()
			p.log.Close()
			if t.Failed() {
				b, _ := os.ReadFile(p.log.Name())
				t.Logf("--- %s log (last 3 KiB):\n%s", p.name, tail(b, 3072))
			}
		})
	}
	for _, p := range r.procs {
		p.waitReady(t)
	}
	return r
}

func (r *faultRig) start(p *proc) {
	p.start(r.t, r.bin, []string{"EDGEGATE_JOURNAL_CHILD=" + r.journal, "GORACE=atexit_sleep_ms=0"})
}

// faultDevices streams from n devices, each reconnecting over all the
// device proxies, until stop is closed; then each flushes.
type faultDevices struct {
	mu       sync.Mutex
	acked    map[string][]uint64
	lastAck  map[string]time.Time
	mark     time.Time                // start of the current fault
	stall    map[string]time.Duration // longest time without an ACK since mark
	sent     int
	clients  []*device.Client
	ids      []string
	stop     chan struct{}
	wg       sync.WaitGroup
	sendErrs []error
}

func streamForever(t *testing.T, addrs []string, n int, rate float64) *faultDevices {
	t.Helper()
	d := &faultDevices{acked: map[string][]uint64{}, lastAck: map[string]time.Time{}, stall: map[string]time.Duration{}, stop: make(chan struct{})}
	ctx := context.Background()
	for i := 0; i < n; i++ {
		id := fmt.Sprintf("fd-%02d", i)
		rot := append(append([]string(nil), addrs[i%len(addrs):]...), addrs[:i%len(addrs)]...)
		c, err := device.Dial(ctx, device.Config{Addrs: rot, ID: id, PersistentSeq: true, Window: 16, Reconnect: true,
			OnAck: func(a device.Acked) {
				seq, now := a.Seq, time.Now()
				d.mu.Lock()
				d.acked[id] = append(d.acked[id], seq)
				from := d.lastAck[id]
				if from.Before(d.mark) {
					from = d.mark
				}
				d.stall[id] = max(d.stall[id], now.Sub(from))
				d.lastAck[id] = now
				d.mu.Unlock()
			}})
		if err != nil {
			t.Fatalf("%s: %v", id, err)
		}
		t.Cleanup(func() { c.Close() })
		d.clients = append(d.clients, c)
		d.ids = append(d.ids, id)
		d.wg.Go(func() {
			tick := time.NewTicker(time.Duration(float64(time.Second) / rate))
			defer tick.Stop()
			for k := 0; ; k++ {
				select {
				case <-d.stop:
					return
				case <-tick.C:
				}
				sctx, cancel := context.WithTimeout(ctx, time.Minute)
				_, err := c.Send(sctx, []byte(fmt.Sprintf(`{"k":%d}`, k)))
				cancel()
				if err != nil {
					d.mu.Lock()
					d.sendErrs = append(d.sendErrs, fmt.Errorf("%s: %w", id, err))
					d.mu.Unlock()
					return
				}
				d.mu.Lock()
				d.sent++
				d.mu.Unlock()
			}
		})
	}
	return d
}

// markFault starts measuring stalls.
func (d *faultDevices) markFault(t time.Time) {
	d.mu.Lock()
	d.mark = t
	clear(d.stall)
	d.mu.Unlock()
}

// longestStall is the longest time any device went without an ACK since
// the mark.
func (d *faultDevices) longestStall() time.Duration {
	d.mu.Lock()
	defer d.mu.Unlock()
	var worst time.Duration
	for _, s := range d.stall {
		worst = max(worst, s)
	}
	return worst
}

// progressedSince reports whether every device had an ACK after t.
func (d *faultDevices) progressedSince(t time.Time) bool {
	d.mu.Lock()
	defer d.mu.Unlock()
	for _, id := range d.ids {
		if !d.lastAck[id].After(t) {
			return false
		}
	}
	return true
}

type faultRecord struct {
	Kind     string        `json:"kind"`
	Target   string        `json:"target"`
	Duration time.Duration `json:"duration_ns"`
	// Stall is the longest time any device went without an ACK, from the
	// injection until every device was acknowledged again after the
	// fault ended: what a user sees of the fault.
	Stall time.Duration `json:"stall_ns"`
	// Recovery is the time from the end of the fault (process restarted
	// or resumed, link back) until every device was acknowledged again.
	Recovery time.Duration `json:"recovery_ns"`
}

// TestFaults injects faults on a random schedule into three edgegate
// processes sharing a Redis, while devices stream and reconnect: SIGKILL
// (restarted after a while), SIGSTOP longer than the lease, Redis killed
// and restarted empty, Redis unreachable, a route cut between two
// appliances, device connections reset. A journal written by the handler
// (outside the code under test) is checked at the end: nothing
// acknowledged is lost or reordered, no controller is handled twice at
// once; duplicates are counted. The CI run injects 20 faults; a long run:
//
//	go test ./cmd/edgegate -run TestFaults -v -timeout 2h -args -faults=200
func TestFaults(t *testing.T) {
	if testing.Short() {
		t.Skip("multi-process fault suite")
	}
	seed := *faultSeed
	if seed == 0 {
		seed = uint64(time.Now().UnixNano())
	}
	rng := rand.New(rand.NewPCG(seed, seed>>1|1))
	t.Logf("faults %d, seed %d", *faultCount, seed)
	r := newFaultRig(t, 3)
	var addrs []string
	for _, p := range r.devPx {
		addrs = append(addrs, p.Addr())
	}
	devs := streamForever(t, addrs, 12, 60)
	eventually := func(d time.Duration, cond func() bool) bool {
		deadline := time.Now().Add(d)
		for !cond() {
			if time.Now().After(deadline) {
				return false
			}
			time.Sleep(20 * time.Millisecond)
		}
		return true
	}
	if !eventually(30*time.Second, func() bool { return devs.progressedSince(time.Now().Add(-time.Second)) }) {
		t.Fatal("devices do not make progress before any fault")
	}
	pause := func(lo, hi time.Duration) time.Duration { return lo + time.Duration(rng.Int64N(int64(hi-lo))) }
	kinds := []string{"sigkill", "sigstop", "redis-restart", "redis-unreachable", "route-cut", "device-reset"}
	var records []faultRecord
	for f := 0; f < *faultCount; f++ {
		kind := kinds[rng.IntN(len(kinds))]
		rec := faultRecord{Kind: kind}
		start := time.Now()
		devs.markFault(start)
		switch kind {
		case "sigkill":
			i := rng.IntN(len(r.procs))
			p := r.procs[i]
			rec.Target = p.name
			r.mu.Lock()
			r.killedAt[p.cmd.Process.Pid] = time.Now().UnixNano()
			r.mu.Unlock()
			p.kill()
			time.Sleep(pause(time.Second, 3*time.Second)) // the fault: the appliance is down
			r.start(p)
			p.waitReady(t)
		case "sigstop":
			p := r.procs[rng.IntN(len(r.procs))]
			rec.Target = p.name
			p.signal(syscall.SIGSTOP)
			time.Sleep(pause(1500*time.Millisecond, 3*time.Second)) // longer than the 1s lease
			p.signal(syscall.SIGCONT)
		case "redis-restart":
			rec.Target = "redis"
			r.redis.Restart()
		case "redis-unreachable":
			rec.Target = "redis"
			r.redisPx.Block()
			time.Sleep(pause(time.Second, 3*time.Second))
			r.redisPx.Unblock()
		case "route-cut":
			i := rng.IntN(3)
			j := (i + 1 + rng.IntN(2)) % 3
			rec.Target = fmt.Sprintf("gw-%d<>gw-%d", i, j)
			a, b := r.routePx[[2]int{i, j}], r.routePx[[2]int{j, i}]
			a.Block()
			b.Block()
			time.Sleep(pause(time.Second, 3*time.Second))
			a.Unblock()
			b.Unblock()
		case "device-reset":
			k := rng.IntN(len(r.devPx))
			rec.Target = r.procs[k].name
			r.devPx[k].Cut()
		}
		end := time.Now()
		rec.Duration = end.Sub(start)
		if !eventually(60*time.Second, func() bool { return devs.progressedSince(end) }) {
			t.Errorf("fault %d (%s %s): devices made no progress within 60s after it", f, kind, rec.Target)
			r.diagnose(devs, end)
			rec.Recovery, rec.Stall = -1, -1
		} else {
			rec.Recovery, rec.Stall = time.Since(end), devs.longestStall()
		}
		records = append(records, rec)
		t.Logf("fault %2d %-17s %-11s lasted %6v, longest stall %6v, recovered %v after it", f, kind, rec.Target,
			rec.Duration.Round(time.Millisecond), rec.Stall.Round(time.Millisecond), rec.Recovery.Round(time.Millisecond))
	}

	// Stop sending; everything sent must be acknowledged.
	close(devs.stop)
	devs.wg.Wait()
	for i, c := range devs.clients {
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
		if err := c.Flush(ctx); err != nil {
			t.Errorf("%s: flush: %v (unacked %d)", devs.ids[i], err, c.Unacked())
		}
		cancel()
	}
	for _, err := range devs.sendErrs {
		t.Errorf("send: %v", err)
	}
	devs.mu.Lock()
	acked := 0
	for _, s := range devs.acked {
		acked += len(s)
	}
	sent := devs.sent
	devs.mu.Unlock()
	r.mu.Lock()
	killed := r.killedAt
	r.mu.Unlock()
	check := checkJournal(t, readJournal(t, r.journal), devs.acked, killed)
	report := faultReport(records, sent, acked, check, seed)
	t.Logf("\n%s", report.text())
	if *faultReportPath != "" {
		b, _ := json.MarshalIndent(report, "", "  ")
		os.WriteFile(*faultReportPath, b, 0o644)
	}
}

type faultSummary struct {
	Seed    uint64                 `json:"seed"`
	Faults  int                    `json:"faults"`
	Sent    int                    `json:"sent"`
	Acked   int                    `json:"acked"`
	Check   journalCheck           `json:"check"`
	ByKind  map[string]kindSummary `json:"by_kind"`
	Records []faultRecord          `json:"records"`
}

type kindSummary struct {
	Count         int           `json:"count"`
	MedianStall   time.Duration `json:"median_stall_ns"`
	WorstStall    time.Duration `json:"worst_stall_ns"`
	MedianRecover time.Duration `json:"median_recovery_ns"`
	WorstRecover  time.Duration `json:"worst_recovery_ns"`
	Failures      int           `json:"no_recovery"`
}

func faultReport(records []faultRecord, sent, acked int, check journalCheck, seed uint64) faultSummary {
	s := faultSummary{Seed: seed, Faults: len(records), Sent: sent, Acked: acked, Check: check, ByKind: map[string]kindSummary{}, Records: records}
	stalls, recs := map[string][]time.Duration{}, map[string][]time.Duration{}
	for _, r := range records {
		k := s.ByKind[r.Kind]
		k.Count++
		if r.Recovery < 0 {
			k.Failures++
		} else {
			stalls[r.Kind] = append(stalls[r.Kind], r.Stall)
			recs[r.Kind] = append(recs[r.Kind], r.Recovery)
		}
		s.ByKind[r.Kind] = k
	}
	medianWorst := func(ds []time.Duration) (time.Duration, time.Duration) {
		slices.Sort(ds)
		return ds[len(ds)/2], ds[len(ds)-1]
	}
	for kind := range stalls {
		k := s.ByKind[kind]
		k.MedianStall, k.WorstStall = medianWorst(stalls[kind])
		k.MedianRecover, k.WorstRecover = medianWorst(recs[kind])
		s.ByKind[kind] = k
	}
	return s
}

func (s faultSummary) text() string {
	var b strings.Builder
	fmt.Fprintf(&b, "faults %d (seed %d): sent %d, acked %d, lost %d, reordered %d, overlaps %d, duplicates handled %d\n",
		s.Faults, s.Seed, s.Sent, s.Acked, s.Check.Lost, s.Check.Reordered, s.Check.Overlaps, s.Check.Duplicates)
	kinds := make([]string, 0, len(s.ByKind))
	for k := range s.ByKind {
		kinds = append(kinds, k)
	}
	sort.Strings(kinds)
	fmt.Fprintf(&b, "%-18s %5s %13s %13s %15s %15s %11s\n", "fault", "count", "median stall", "worst stall", "median recovery", "worst recovery", "no recovery")
	for _, k := range kinds {
		v := s.ByKind[k]
		r := func(d time.Duration) time.Duration { return d.Round(time.Millisecond) }
		fmt.Fprintf(&b, "%-18s %5d %13v %13v %15v %15v %11d\n", k, v.Count, r(v.MedianStall), r(v.WorstStall), r(v.MedianRecover), r(v.WorstRecover), v.Failures)
	}
	return b.String()
}

// diagnose logs the devices without progress since t and what every
// appliance's socket says of their controllers.
func (r *faultRig) diagnose(d *faultDevices, since time.Time) {
	d.mu.Lock()
	stuck := map[string]bool{}
	for i, id := range d.ids {
		if !d.lastAck[id].After(since) {
			stuck[id] = true
			st := d.clients[i].Stats()
			r.t.Logf("stuck %s: unacked %d, reconnects %d, resent %d, errors %v, last ack %v ago",
				id, d.clients[i].Unacked(), st.Reconnects, st.Resent, st.Errors, time.Since(d.lastAck[id]).Round(time.Millisecond))
		}
	}
	d.mu.Unlock()
	for _, p := range r.procs {
		nc, err := nats.Connect("nats://"+p.nats, nats.Timeout(time.Second))
		if err != nil {
			r.t.Logf("%s: %v", p.name, err)
			continue
		}
		answers, err := collectStatus(nc, 500*time.Millisecond)
		nc.Close()
		if err != nil {
			r.t.Logf("%s: status: %v", p.name, err)
			continue
		}
		for _, a := range answers {
			if a.Kind != "socket" || a.Appliance != p.name {
				continue
			}
			for _, c := range a.Controllers {
				if stuck[c.ID] {
					r.t.Logf("%s socket: %+v", p.name, c)
				}
			}
			r.t.Logf("%s socket: paused %v, in flight %d, queued %d, counters %v", p.name, a.Paused, a.InFlight, a.Queued, a.Counters)
		}
	}
}
