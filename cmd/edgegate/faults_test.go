package main

import (
	"bufio"
	"bytes"
	"cmp"
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"math/rand/v2"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"sort"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/redis/go-redis/v9"

	"github.com/edgegate/edgegate/device"
	"github.com/edgegate/edgegate/egp"
	"github.com/edgegate/edgegate/internal/faultproxy"
	"github.com/edgegate/edgegate/internal/redistest"
	"github.com/edgegate/edgegate/internal/wait"
)

var (
	faultCount      = flag.Int("faults", 44, "TestFaults: number of faults to inject (in rounds of 1–3 overlapping faults)")
	faultSeed       = flag.Uint64("faults.seed", 0, "TestFaults: random seed (0: from the clock)")
	faultReportPath = flag.String("faults.report", "", "TestFaults: write the report as JSON to this file")
	faultRate       = flag.Float64("faults.rate", 25, "TestFaults: messages a second per device")
	faultKindsFlag  = flag.String("faults.kinds", "", "TestFaults: comma-separated fault kinds to inject (default: all)")
	faultContinue   = flag.Bool("faults.continue", false, "TestFaults: go on after a round that did not recover, up to 5 such rounds, leaving its stuck devices out until they are acknowledged again (default: stop injecting and check)")
	faultComboFlag  = flag.String("faults.combo", "", "TestFaults: make every round the combo whose name contains this (default: a combo in about a third of the rounds)")
)

// The rig's lease timing, from which the recovery bounds are derived.
const (
	fTTL       = time.Second
	fHeartbeat = 200 * time.Millisecond
	fCheck     = 200 * time.Millisecond
	// jsElection is the longest a JetStream (raft) group waits for its
	// leader before it elects another: nats-server's
	// maxElectionTimeoutDefault. A fault that takes a stream's or the
	// meta group's leader away (kill, stop, route cut) costs up to that.
	jsElection = 9 * time.Second
	// reconnect is the device's first reconnect attempt after a loss:
	// device.Config.ReconnectWait (100 ms) with its jitter (+50 %).
	reconnect = 150 * time.Millisecond
	// slack covers what the configuration does not say: a 2-core machine
	// running three appliances, Redis, their exec children and the
	// devices; the 20 ms polls; and the readiness and consumer checks.
	slack = 2 * time.Second
	// faultToken is every device's HELLO token (devices.tokens "*").
	faultToken = "fault-suite-token"
)

// faultRig is three edgegate processes, one Redis, and fault proxies on
// every link: devices → appliance (EGP/1 and lines), appliance → Redis
// (one proxy per appliance), and each route direction between two
// appliances.
type faultRig struct {
	t        *testing.T
	bin      string
	dir      string
	procs    []*proc
	lines    []string // each appliance's lines listener
	redis    *redistest.Server
	rc       *redis.Client // to Redis itself, not through a proxy
	redisDir string
	sentinel *redistest.Sentinel
	redisPx  []*faultproxy.Proxy
	devPx    []*faultproxy.Proxy
	linesPx  []*faultproxy.Proxy
	routePx  map[[2]int]*faultproxy.Proxy // [from, to]
	journal  string
	jtail    *journalTail

	mu       sync.Mutex // the fields below, and procs[i].cmd and .exited
	killedAt map[int]int64
	pauses   map[int][][2]int64 // appliance pid → its pauses with its children [SIGSTOP, SIGCONT] in unix ns
	started  int                // appliance starts after the first ones
	startsIn []string           // per start during other faults: those faults
}

func newFaultRig(t *testing.T, n int, sentinel bool) *faultRig {
	t.Helper()
	dir, err := os.MkdirTemp("", "edgegate-faults-")
	if err != nil {
		t.Fatal(err)
	}
	// Kept when the test fails: the appliances' logs, the journal and
	// their data, for the report of what the checker found.
	t.Cleanup(func() {
		if t.Failed() {
			t.Logf("the appliances' logs, the journal and their data are kept in %s", dir)
			return
		}
		os.RemoveAll(dir)
	})
	r := &faultRig{t: t, bin: edgegateBinary(t), dir: dir, routePx: map[[2]int]*faultproxy.Proxy{},
		killedAt: map[int]int64{}, pauses: map[int][][2]int64{}}
	proxy := func(target string) *faultproxy.Proxy {
		p, err := faultproxy.Listen(freePort(t), target)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(p.Close)
		return p
	}
	if sentinel {
		r.sentinel = redistest.StartSentinel(t, "edgegate")
	} else {
		r.redis = redistest.Start(t)
		r.rc = redis.NewClient(&redis.Options{Addr: r.redis.Addr()})
		t.Cleanup(func() { r.rc.Close() })
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		dir, err := r.rc.ConfigGet(ctx, "dir").Result()
		cancel()
		if err != nil {
			t.Fatal(err)
		}
		r.redisDir = dir["dir"]
	}
	r.journal = filepath.Join(r.dir, "journal")
	r.jtail = &journalTail{path: r.journal, open: map[int]jopen{}}
	tokens := filepath.Join(r.dir, "tokens")
	if err := os.WriteFile(tokens, []byte("* "+faultToken+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	for i := 0; i < n; i++ {
		r.procs = append(r.procs, &proc{name: fmt.Sprintf("gw-%d", i), devices: freePort(t), cluster: freePort(t), http: freePort(t), nats: freePort(t)})
		r.lines = append(r.lines, freePort(t))
	}
	for i := 0; i < n; i++ {
		r.devPx = append(r.devPx, proxy(r.procs[i].devices))
		r.linesPx = append(r.linesPx, proxy(r.lines[i]))
		if !sentinel {
			r.redisPx = append(r.redisPx, proxy(r.redis.Addr()))
		}
		for j := 0; j < n; j++ {
			if i != j {
				r.routePx[[2]int{i, j}] = proxy(r.procs[j].cluster)
			}
		}
	}
	self, _ := os.Executable()
	timeouts := "dial_timeout=300ms&read_timeout=500ms&write_timeout=500ms"
	for i, p := range r.procs {
		// Every appliance is listed, itself included (its own route
		// listener: a route to itself is dropped), so that three get
		// streams of 3 replicas; the others only through the proxies,
		// and nothing learns the real route addresses (the advertised
		// one leads nowhere).
		peers := []string{p.cluster}
		for j := 0; j < n; j++ {
			if j != i {
				peers = append(peers, r.routePx[[2]int{i, j}].Addr())
			}
		}
		var leaseURL []string
		if sentinel {
			leaseURL = []string{"--lease.redis", r.sentinel.URL() + "&" + timeouts, "--lease.redis_mode", "sentinel"}
		} else {
			leaseURL = []string{"--lease.redis", "redis://" + r.redisPx[i].Addr() + "/0?" + timeouts}
		}
		p.args = append([]string{"run", "--name", p.name, "--data_dir", filepath.Join(r.dir, p.name),
			"--devices.listen", p.devices, "--devices.lines_listen", r.lines[i], "--devices.tokens", tokens,
			"--nats.listen", p.nats, "--nats.jetstream=true",
			"--nats.cluster.listen", p.cluster, "--nats.cluster.advertise", "127.0.0.1:9",
			"--nats.cluster.peers", strings.Join(peers, ","),
			"--nats.cluster.user", "route", "--nats.cluster.password", "route-test-secret",
			"--lease.ttl", fTTL.String(), "--lease.heartbeat", fHeartbeat.String(), "--lease.check_interval", fCheck.String(),
			"--parser.handler", "exec", "--parser.exec", self, "--parser.workers", "4",
			"--parser.exec_env", "EDGEGATE_JOURNAL_CHILD=" + r.journal,
			"--http.listen", p.http, "--http.pprof", "--log.level", "info"}, leaseURL...)
		var err error
		if p.log, err = os.Create(filepath.Join(r.dir, p.name+".log")); err != nil {
			t.Fatal(err)
		}
		if err := r.launch(i); err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() {
			r.mu.Lock()
			cmd, exited := p.cmd, p.exited
			r.mu.Unlock()
			signalTree(cmd.Process.Pid, syscall.SIGCONT)
			cmd.Process.Kill()
			<-exited
			p.log.Close()
			if t.Failed() {
				b, _ := os.ReadFile(p.log.Name())
				t.Logf("--- %s log (last 4 KiB; whole: %s):\n%s", p.name, p.log.Name(), tail(b, 4096))
			}
		})
	}
	for i, p := range r.procs {
		if !pollUntil(60*time.Second, 20*time.Millisecond, func() bool { return r.ready(i) }) {
			t.Fatalf("%s not ready within 60s", p.name)
		}
	}
	return r
}

// pollUntil calls cond every interval until it returns true, for at most
// d; it reports whether cond held.
func pollUntil(d, interval time.Duration, cond func() bool) bool {
	return wait.UntilEvery(d, interval, func() error {
		if cond() {
			return nil
		}
		return errors.New("not yet")
	}) == nil
}

// launch starts appliance i (again). The appliance's environment is
// this process's; its exec children get the journal's path
// (parser.exec_env).
func (r *faultRig) launch(i int) error {
	p := r.procs[i]
	cmd := exec.Command(r.bin, p.args...)
	// The journal's path is in the appliance's environment too, for
	// appliances that pass theirs to the exec children whole.
	cmd.Env = append(os.Environ(), "GORACE=atexit_sleep_ms=0", "EDGEGATE_JOURNAL_CHILD="+r.journal)
	cmd.Stdout, cmd.Stderr = p.log, p.log
	if err := cmd.Start(); err != nil {
		return fmt.Errorf("start %s: %w", p.name, err)
	}
	exited := make(chan struct{})
	go func() { cmd.Wait(); close(exited) }()
	r.mu.Lock()
	p.cmd, p.exited = cmd, exited
	r.mu.Unlock()
	return nil
}

func (r *faultRig) pid(i int) int {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.procs[i].cmd.Process.Pid
}

// ready reports whether appliance i answers /readyz with 200.
func (r *faultRig) ready(i int) bool {
	c := http.Client{Timeout: 500 * time.Millisecond}
	resp, err := c.Get("http://" + r.procs[i].http + "/readyz")
	if err != nil {
		return false
	}
	resp.Body.Close()
	return resp.StatusCode == 200
}

// alive returns an error for an appliance process that exited on its own.
func (r *faultRig) alive() error {
	r.mu.Lock()
	defer r.mu.Unlock()
	for _, p := range r.procs {
		select {
		case <-p.exited:
			return fmt.Errorf("%s (pid %d) exited: %v", p.name, p.cmd.Process.Pid, p.cmd.ProcessState)
		default:
		}
	}
	return nil
}

// kill SIGKILLs appliance i (its exec children die with it: Pdeathsig).
func (r *faultRig) kill(i int) {
	r.mu.Lock()
	p := r.procs[i]
	cmd, exited := p.cmd, p.exited
	r.killedAt[cmd.Process.Pid] = time.Now().UnixNano()
	r.mu.Unlock()
	cmd.Process.Kill()
	<-exited
}

// children returns the pids of process pid's children.
func children(pid int) []int {
	var out []int
	tasks, _ := filepath.Glob(fmt.Sprintf("/proc/%d/task/*/children", pid))
	for _, f := range tasks {
		b, _ := os.ReadFile(f)
		for _, s := range strings.Fields(string(b)) {
			if c, err := strconv.Atoi(s); err == nil {
				out = append(out, c)
			}
		}
	}
	return out
}

// signalTree signals process pid and its children (the exec children lead
// process groups of their own: a signal to the appliance's group misses
// them). SIGSTOP goes to the children first, so that a child is caught
// where it is and not after its appliance stopped reading from it.
// running reports whether process pid is not stopped (state T in
// /proc/<pid>/stat; a process that is gone is not running).
func running(pid int) bool {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return false
	}
	// The state follows the command name, which is in parentheses.
	i := bytes.LastIndexByte(b, ')')
	return i >= 0 && i+2 < len(b) && b[i+2] != 'T' && b[i+2] != 't'
}

func signalTree(pid int, sig syscall.Signal) {
	if sig == syscall.SIGSTOP {
		for _, c := range children(pid) {
			syscall.Kill(c, sig)
		}
		syscall.Kill(pid, sig)
		return
	}
	syscall.Kill(pid, sig)
	for _, c := range children(pid) {
		syscall.Kill(c, sig)
	}
}

// journalTail follows the journal while the suite runs, for the handlings
// under way: a pause waits for one of its appliance's.
type journalTail struct {
	mu   sync.Mutex
	path string
	off  int64
	part []byte
	open map[int]jopen // child pid → handling under way
}

type jopen struct {
	ppid  int
	token string
}

// underway returns the tokens handled at this moment by children of
// appliance ppid, as far as the journal says.
func (j *journalTail) underway(ppid int) []string {
	j.mu.Lock()
	defer j.mu.Unlock()
	f, err := os.Open(j.path)
	if err != nil {
		return nil
	}
	defer f.Close()
	f.Seek(j.off, 0)
	buf := make([]byte, 64<<10)
	for {
		n, err := f.Read(buf)
		j.off += int64(n)
		j.part = append(j.part, buf[:n]...)
		if err != nil || n == 0 {
			break
		}
	}
	for {
		k := slices.Index(j.part, '\n')
		if k < 0 {
			break
		}
		fields := strings.Fields(string(j.part[:k]))
		j.part = j.part[k+1:]
		if len(fields) != 8 {
			continue
		}
		pid, _ := strconv.Atoi(fields[6])
		switch fields[0] {
		case "S":
			pp, _ := strconv.Atoi(fields[5])
			j.open[pid] = jopen{pp, fields[2]}
		case "E", "P":
			delete(j.open, pid)
		}
	}
	var out []string
	live := children(ppid) // a child killed mid-message never ends its line
	for pid, o := range j.open {
		if o.ppid == ppid && slices.Contains(live, pid) {
			out = append(out, o.token)
		}
	}
	return out
}

// ---- devices ----

// devClass is how a device numbers its messages across sessions.
type devClass int

const (
	persistentDev devClass = iota // EGP/1, persistent seq: a restart numbers on from WELCOME's last_seq
	resetDev                      // EGP/1, persistent seq, and a restart resets it (HELLO bit0): numbers from 1
	plainDev                      // EGP/1 without persistent seq: a restart numbers from 1
	linesDev                      // the lines listener: every connection numbers from 1
)

func (c devClass) String() string { return [...]string{"persistent", "reset", "plain", "lines"}[c] }

// fmsg is one message a device made: its token names it.
type fmsg struct {
	token  string
	inc, n int // the device's incarnation (a restart begins the next) and the message's number in it
	seq    uint64
	acked  bool
	dead   bool      // acknowledged as dead-lettered
	ackAt  time.Time // when its first ACK arrived
}

// finc is one incarnation of a device: from a start to the next restart.
type finc struct {
	idx     int
	ctx     context.Context
	cancel  context.CancelFunc // a restart
	egp     *device.Client
	lines   *linesClient
	bySeq   map[uint64]*fmsg // EGP/1: the message of each seq
	acks    []device.Acked   // EGP/1: matched with bySeq at the end (an ACK may come before Send returns)
	lastSeq uint64           // the first WELCOME's last_seq
	n       int
}

// fdev is a simulated device: it sends a token per message at the fleet's
// rate, reconnects on any error, and restarts when a fault asks.
type fdev struct {
	f     *fleet
	id    string
	class devClass
	addrs []string // its protocol's proxies, one per appliance
	rng   *rand.Rand

	mu      sync.Mutex
	msgs    []*fmsg
	incs    []*finc
	cur     *finc
	lastAck time.Time
	acked   int // ACKs received, for the devices slow after a recovery
	mark    time.Time
	stall   time.Duration
	armed   bool // restart right after the next ACK
	busy    bool // every message takes 20 ms: a batch of it is nearly always running
	// stuckAt is when a round that did not recover left the device
	// without an ACK (-faults.continue): it is reported once, and left out
	// of the recovery and the stalls until it is acknowledged again.
	stuckAt  time.Time
	restarts int
	problems []string
}

type fleet struct {
	t    *testing.T
	rate float64
	stop chan struct{}
	ctx  context.Context // cancelled with stop: every incarnation's sends
	halt func()          // closes stop and cancels ctx, once
	wg   sync.WaitGroup
	devs []*fdev
	acks atomic.Int64

	mu   sync.Mutex
	errs []error
}

func (f *fleet) fail(err error) {
	f.mu.Lock()
	f.errs = append(f.errs, err)
	f.mu.Unlock()
}

// startFleet starts the devices: counts[c] of each class.
func startFleet(t *testing.T, r *faultRig, counts map[devClass]int, rate float64, seed uint64) *fleet {
	f := &fleet{t: t, rate: rate, stop: make(chan struct{})}
	var cancel context.CancelFunc
	f.ctx, cancel = context.WithCancel(context.Background())
	f.halt = sync.OnceFunc(func() { close(f.stop); cancel() })
	var egpAddrs, linesAddrs []string
	for i := range r.procs {
		egpAddrs = append(egpAddrs, r.devPx[i].Addr())
		linesAddrs = append(linesAddrs, r.linesPx[i].Addr())
	}
	prefix := map[devClass]string{persistentDev: "pd", resetDev: "rd", plainDev: "nd", linesDev: "ld"}
	k := 0
	for _, c := range []devClass{persistentDev, resetDev, plainDev, linesDev} {
		for i := 0; i < counts[c]; i++ {
			addrs := egpAddrs
			if c == linesDev {
				addrs = linesAddrs
			}
			d := &fdev{f: f, id: fmt.Sprintf("%s-%02d", prefix[c], i), class: c, addrs: addrs,
				rng: rand.New(rand.NewPCG(seed, uint64(k))), busy: i == 0 && (c == persistentDev || c == linesDev)}
			f.devs = append(f.devs, d)
			k++
		}
	}
	for _, d := range f.devs {
		f.wg.Add(1)
		go d.run()
	}
	return f
}

// run sends until the fleet stops, restarting when asked. A client that
// fails for good (an ERROR the device package does not retry: taken over,
// auth, protocol) is reported, and the device restarts, so that one
// finding does not silence the rest of the run.
func (d *fdev) run() {
	defer d.f.wg.Done()
	tick := time.NewTicker(time.Duration(float64(time.Second) / d.f.rate))
	defer tick.Stop()
	failures := 0
	for inc := 0; ; inc++ {
		in, err := d.open(inc)
		if err != nil {
			d.f.fail(fmt.Errorf("%s: incarnation %d: %w", d.id, inc, err))
			return
		}
		restart, err := d.send(in, tick)
		select {
		case <-d.f.stop: // (which also cancels every incarnation)
			if err != nil {
				d.f.fail(fmt.Errorf("%s: incarnation %d: %w", d.id, inc, err))
			}
			return // the client stays, to be flushed
		default:
		}
		if !restart && err == nil {
			return
		}
		// A restart: the device forgets what was not acknowledged.
		if in.egp != nil {
			in.egp.Close()
		} else {
			in.lines.close()
		}
		if err != nil {
			d.f.fail(fmt.Errorf("%s: incarnation %d: %w (the device restarts)", d.id, inc, err))
			if failures++; failures > 20 {
				return
			}
			select {
			case <-d.f.stop:
				return
			case <-time.After(200 * time.Millisecond):
			}
		}
	}
}

// open starts incarnation inc: a new client (a device that rebooted),
// connected to a random appliance.
func (d *fdev) open(inc int) (*finc, error) {
	ctx, cancel := context.WithCancel(d.f.ctx)
	in := &finc{idx: inc, ctx: ctx, cancel: cancel, bySeq: map[uint64]*fmsg{}}
	start := d.rng.IntN(len(d.addrs))
	addrs := append(append([]string(nil), d.addrs[start:]...), d.addrs[:start]...)
	deadline := time.Now().Add(60 * time.Second)
	backoff := 100 * time.Millisecond
	for attempt := 0; ; attempt++ {
		var err error
		if d.class == linesDev {
			in.lines, err = dialLines(d, in, addrs[attempt%len(addrs):])
		} else {
			rot := append(append([]string(nil), addrs[attempt%len(addrs):]...), addrs[:attempt%len(addrs)]...)
			in.egp, err = device.Dial(context.Background(), device.Config{
				Addrs: rot, ID: d.id, Token: []byte(faultToken), Window: 16, Reconnect: true, SocketTimes: true,
				PersistentSeq: d.class != plainDev, ResetSeq: d.class == resetDev, DialTimeout: 2 * time.Second,
				OnAck: d.onAck(in),
			})
			if err == nil {
				in.lastSeq = in.egp.Welcome().LastSeq
			}
		}
		if err == nil {
			break
		}
		if time.Now().After(deadline) {
			cancel()
			return nil, fmt.Errorf("no session within 60s: %w", err)
		}
		select {
		case <-d.f.stop:
			cancel()
			return nil, errors.New("stopped while connecting")
		case <-time.After(backoff):
		}
		backoff = min(2*backoff, time.Second)
	}
	d.mu.Lock()
	d.incs = append(d.incs, in)
	d.cur = in
	if inc > 0 {
		d.restarts++
	}
	d.mu.Unlock()
	return in, nil
}

// send sends a message a tick until the fleet stops (false), a restart
// is asked (true) or the client fails (the error).
func (d *fdev) send(in *finc, tick *time.Ticker) (bool, error) {
	for {
		select {
		case <-d.f.stop:
			return false, nil
		case <-in.ctx.Done():
			return true, nil
		case <-tick.C:
		}
		m := &fmsg{inc: in.idx, n: in.n + 1}
		m.token = fmt.Sprintf("%s/%d/%d", d.id, m.inc, m.n)
		switch x := d.rng.IntN(200); {
		case x == 0:
			m.token += "/bad" // refused by the handler: dead-lettered
		case x < 8:
			m.token += "/slow" // 50 ms
		case d.busy:
			m.token += "/busy" // 20 ms: half of the device's time
		}
		var err error
		if in.egp != nil {
			var seq uint64
			if seq, err = in.egp.Send(in.ctx, []byte(m.token)); err == nil {
				d.mu.Lock()
				m.seq = seq
				in.bySeq[seq] = m
				d.mu.Unlock()
			}
		} else {
			err = in.lines.send(in.ctx, m)
		}
		if err != nil {
			select {
			case <-d.f.stop:
				return false, nil // stopped while the window was full: the client stays, to be flushed
			default:
			}
			if in.ctx.Err() != nil {
				return true, nil // a restart while the window was full: m was not sent
			}
			return false, fmt.Errorf("send: %w", err)
		}
		d.mu.Lock()
		in.n++
		d.msgs = append(d.msgs, m)
		d.mu.Unlock()
	}
}

// stuckLocked reports whether d is left out for now (see stuckAt).
func (d *fdev) stuckLocked() bool { return !d.stuckAt.IsZero() && !d.lastAck.After(d.stuckAt) }

// noteAckLocked records an ACK's arrival for the stall figures.
func (d *fdev) noteAckLocked(now time.Time) {
	from := d.lastAck
	if from.Before(d.mark) {
		from = d.mark
	}
	d.stall = max(d.stall, now.Sub(from))
	d.lastAck = now
	d.acked++
}

func (d *fdev) onAck(in *finc) func(device.Acked) {
	return func(a device.Acked) {
		now := time.Now()
		d.mu.Lock()
		in.acks = append(in.acks, a)
		d.noteAckLocked(now)
		restart := d.armed && d.cur == in
		if restart {
			d.armed = false
		}
		d.mu.Unlock()
		d.f.acks.Add(1)
		if restart {
			in.cancel() // right after this ACK
		}
	}
}

// linesAcked records a lines ACK of m.
func (d *fdev) linesAcked(in *finc, m *fmsg, at time.Time, dead bool) {
	d.mu.Lock()
	if !m.acked {
		m.acked, m.ackAt, m.dead = true, at, dead
	}
	d.noteAckLocked(at)
	restart := d.armed && d.cur == in
	if restart {
		d.armed = false
	}
	d.mu.Unlock()
	d.f.acks.Add(1)
	if restart {
		in.cancel()
	}
}

// resolve matches the EGP/1 ACKs with their messages.
func (d *fdev) resolve() {
	d.mu.Lock()
	defer d.mu.Unlock()
	for _, in := range d.incs {
		for _, a := range in.acks {
			m := in.bySeq[a.Seq]
			if m == nil {
				d.problems = append(d.problems, fmt.Sprintf("incarnation %d: ACK of seq %d, never sent", in.idx, a.Seq))
				continue
			}
			if !m.acked {
				m.acked, m.ackAt, m.dead = true, a.Arrived, a.Status == egp.StatusDeadLettered
			}
		}
	}
}

// flush waits until everything sent is acknowledged.
func (d *fdev) flush(ctx context.Context) error {
	d.mu.Lock()
	in := d.cur
	d.mu.Unlock()
	if in == nil {
		return nil
	}
	if in.egp != nil {
		return in.egp.Flush(ctx)
	}
	return in.lines.flush(ctx)
}

func (d *fdev) unacked() int {
	d.mu.Lock()
	in := d.cur
	d.mu.Unlock()
	switch {
	case in == nil:
		return 0
	case in.egp != nil:
		return in.egp.Unacked()
	}
	in.lines.mu.Lock()
	defer in.lines.mu.Unlock()
	return len(in.lines.pend)
}

// linesClient is a device of the lines listener: HELLO <id> <token>,
// WELCOME <last_seq>, a message per line numbered by the connection, ACK
// <line>. On a loss it reconnects to the next appliance and resends what
// was not acknowledged, numbered from 1 again.
type linesClient struct {
	d     *fdev
	in    *finc
	addrs []string

	mu      sync.Mutex
	changed chan struct{}
	pend    []*fmsg // unacknowledged, in order
	conn    net.Conn
	wq      chan []byte // the current connection's writer
	ackNo   uint64      // the line the next ACK must name
	closed  bool
	done    chan struct{}
}

const linesWindow = 16

func dialLines(d *fdev, in *finc, addrs []string) (*linesClient, error) {
	lc := &linesClient{d: d, in: in, addrs: addrs, changed: make(chan struct{}), done: make(chan struct{})}
	conn, br, err := lc.dial(addrs[0])
	if err != nil {
		return nil, err
	}
	lc.attach(conn)
	go lc.run(conn, br)
	return lc, nil
}

func (lc *linesClient) dial(addr string) (net.Conn, *bufio.Reader, error) {
	conn, err := net.DialTimeout("tcp", addr, 2*time.Second)
	if err != nil {
		return nil, nil, err
	}
	conn.SetDeadline(time.Now().Add(3 * time.Second))
	if _, err := fmt.Fprintf(conn, "HELLO %s %s\n", lc.d.id, faultToken); err != nil {
		conn.Close()
		return nil, nil, err
	}
	br := bufio.NewReader(conn)
	line, err := br.ReadString('\n')
	if err != nil {
		conn.Close()
		return nil, nil, fmt.Errorf("lines %s: waiting for WELCOME: %w", addr, err)
	}
	if !strings.HasPrefix(line, "WELCOME ") {
		conn.Close()
		return nil, nil, fmt.Errorf("lines %s: HELLO answered %q", addr, strings.TrimSpace(line))
	}
	conn.SetDeadline(time.Time{})
	return conn, br, nil
}

// attach makes conn the connection and resends what is pending on it.
func (lc *linesClient) attach(conn net.Conn) {
	wq := make(chan []byte, 4*linesWindow)
	lc.mu.Lock()
	lc.conn, lc.wq, lc.ackNo = conn, wq, 1
	for _, m := range lc.pend {
		wq <- []byte(m.token + "\n")
	}
	lc.mu.Unlock()
	go func() {
		for b := range wq {
			if _, err := conn.Write(b); err != nil {
				conn.Close()
				for range wq {
				}
				return
			}
		}
	}()
}

func (lc *linesClient) notifyLocked() {
	close(lc.changed)
	lc.changed = make(chan struct{})
}

// run reads ACKs, and reconnects until closed.
func (lc *linesClient) run(conn net.Conn, br *bufio.Reader) {
	defer close(lc.done)
	next := 1
	for {
		lc.read(br)
		conn.Close()
		lc.mu.Lock()
		close(lc.wq)
		lc.conn, lc.wq = nil, nil
		closed := lc.closed
		lc.mu.Unlock()
		if closed {
			return
		}
		for backoff := 100 * time.Millisecond; ; backoff = min(2*backoff, time.Second) {
			addr := lc.addrs[next%len(lc.addrs)]
			next++
			var err error
			if conn, br, err = lc.dial(addr); err == nil {
				break
			}
			lc.mu.Lock()
			closed := lc.closed
			ch := lc.changed
			lc.mu.Unlock()
			if closed {
				return
			}
			select {
			case <-ch:
			case <-time.After(backoff):
			}
		}
		lc.mu.Lock()
		if lc.closed {
			lc.mu.Unlock()
			conn.Close()
			return
		}
		lc.mu.Unlock()
		lc.attach(conn)
	}
}

func (lc *linesClient) read(br *bufio.Reader) error {
	for {
		line, err := br.ReadString('\n')
		if err != nil {
			return err
		}
		f := strings.Fields(line)
		if len(f) < 2 || f[0] != "ACK" {
			return fmt.Errorf("lines: %q", strings.TrimSpace(line))
		}
		n, _ := strconv.ParseUint(f[1], 10, 64)
		now := time.Now()
		lc.mu.Lock()
		if len(lc.pend) == 0 || n != lc.ackNo {
			lc.d.mu.Lock()
			lc.d.problems = append(lc.d.problems, fmt.Sprintf("lines ACK %d, expected %d with %d pending", n, lc.ackNo, len(lc.pend)))
			lc.d.mu.Unlock()
			lc.mu.Unlock()
			return errors.New("lines: ACK out of order")
		}
		m := lc.pend[0]
		lc.pend = lc.pend[1:]
		lc.ackNo++
		lc.notifyLocked()
		lc.mu.Unlock()
		lc.d.linesAcked(lc.in, m, now, len(f) > 2 && f[2] == "dead")
	}
}

func (lc *linesClient) send(ctx context.Context, m *fmsg) error {
	lc.mu.Lock()
	defer lc.mu.Unlock()
	for len(lc.pend) >= linesWindow {
		if lc.closed {
			return errors.New("lines: closed")
		}
		ch := lc.changed
		lc.mu.Unlock()
		select {
		case <-ctx.Done():
			lc.mu.Lock()
			return ctx.Err()
		case <-ch:
		}
		lc.mu.Lock()
	}
	lc.pend = append(lc.pend, m)
	if lc.wq != nil {
		lc.wq <- []byte(m.token + "\n")
	}
	return nil
}

func (lc *linesClient) flush(ctx context.Context) error {
	lc.mu.Lock()
	defer lc.mu.Unlock()
	for len(lc.pend) > 0 {
		ch := lc.changed
		lc.mu.Unlock()
		select {
		case <-ctx.Done():
			lc.mu.Lock()
			return ctx.Err()
		case <-ch:
		}
		lc.mu.Lock()
	}
	return nil
}

func (lc *linesClient) close() {
	lc.mu.Lock()
	lc.closed = true
	if lc.conn != nil {
		lc.conn.Close()
	}
	lc.notifyLocked()
	lc.mu.Unlock()
	<-lc.done
}

// ---- the stream ----

// srec is a stored record.
type srec struct {
	sseq       uint64 // stream sequence
	token      string
	fence, gen uint64
	seq        uint64
	received   int64 // Edgegate-Received, unix ms
}

// streamLog reads EDGEGATE_PARSED and EDGEGATE_DEAD from the start with
// ordered consumers, as a user's consumer would, while the suite runs.
type streamLog struct {
	mu       sync.Mutex
	parsed   map[string][]srec // per controller, in stream order
	dead     map[string][]srec
	last     map[string]uint64 // stream → highest stream sequence read
	count    atomic.Int64      // records of EDGEGATE_PARSED read
	newest   atomic.Int64      // highest Edgegate-Received read (unix ms)
	stop     context.CancelFunc
	wg       sync.WaitGroup
	nc       *nats.Conn
	js       jetstream.JetStream
	problems []string
}

func natsURLs(r *faultRig) string {
	var urls []string
	for _, p := range r.procs {
		urls = append(urls, "nats://"+p.nats)
	}
	return strings.Join(urls, ",")
}

func startStreamLog(t *testing.T, r *faultRig) *streamLog {
	t.Helper()
	nc, err := nats.Connect(natsURLs(r), nats.MaxReconnects(-1), nats.ReconnectWait(100*time.Millisecond), nats.Timeout(2*time.Second))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(nc.Close)
	js, _ := jetstream.New(nc)
	for _, name := range []string{"EDGEGATE_PARSED", "EDGEGATE_DEAD"} {
		var err error
		if !pollUntil(60*time.Second, 50*time.Millisecond, func() bool {
			ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
			defer cancel()
			_, err = js.Stream(ctx, name)
			return err == nil
		}) {
			t.Fatalf("stream %s not there within 60s: %v", name, err)
		}
	}
	ctx, cancel := context.WithCancel(context.Background())
	s := &streamLog{parsed: map[string][]srec{}, dead: map[string][]srec{}, last: map[string]uint64{}, stop: cancel, nc: nc, js: js}
	for _, name := range []string{"EDGEGATE_PARSED", "EDGEGATE_DEAD"} {
		s.wg.Go(func() { s.follow(ctx, name) })
	}
	t.Cleanup(s.close)
	return s
}

func (s *streamLog) close() {
	s.stop()
	s.wg.Wait()
}

// follow reads stream from its first record on, in order, with a pull
// consumer of its own (acknowledgements off): a fetch that fails, a gap in
// the consumer's sequences (the stream's may have holes: a grant marker's
// rollup removes the one before it), or a second without records while
// the stream has more, and the consumer is made again from the next
// sequence. (nats.go's ordered consumer backs off 1–10 s between its
// attempts: its recovery would be measured instead of the cluster's.)
func (s *streamLog) follow(ctx context.Context, stream string) {
	next := uint64(1)
	var cons jetstream.Consumer
	var delivered uint64 // the consumer's sequence of the last message taken
	drop := func() {
		if cons != nil {
			name := cons.CachedInfo().Name
			go func() {
				dctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
				s.js.DeleteConsumer(dctx, stream, name)
				cancel()
			}()
		}
		cons = nil
	}
	defer drop()
	progress := time.Now()
	for ctx.Err() == nil {
		if cons == nil {
			cctx, cancel := context.WithTimeout(ctx, 3*time.Second)
			c, err := s.js.CreateConsumer(cctx, stream, jetstream.ConsumerConfig{
				DeliverPolicy: jetstream.DeliverByStartSequencePolicy, OptStartSeq: next,
				AckPolicy: jetstream.AckNonePolicy, InactiveThreshold: 10 * time.Second, MemoryStorage: true,
			})
			cancel()
			if err != nil {
				select {
				case <-ctx.Done():
				case <-time.After(100 * time.Millisecond):
				}
				continue
			}
			cons, progress, delivered = c, time.Now(), 0
		}
		batch, err := cons.Fetch(128, jetstream.FetchMaxWait(300*time.Millisecond))
		if err != nil {
			drop()
			continue
		}
		got, gap := 0, false
		for msg := range batch.Messages() {
			md, err := msg.Metadata()
			if err != nil || md.Sequence.Stream < next || gap {
				continue
			}
			if md.Sequence.Consumer != delivered+1 {
				gap = true // a lost delivery: made again from next
				continue
			}
			delivered, next = md.Sequence.Consumer, md.Sequence.Stream+1
			got++
			s.record(stream, msg, md.Sequence.Stream)
		}
		if gap || batch.Error() != nil {
			drop()
			continue
		}
		if got > 0 {
			progress = time.Now()
		} else if time.Since(progress) > time.Second {
			progress = time.Now()
			ictx, cancel := context.WithTimeout(ctx, 2*time.Second)
			st, err := s.js.Stream(ictx, stream)
			if err == nil && st.CachedInfo().State.LastSeq >= next {
				drop() // records there, none delivered
			}
			cancel()
		}
	}
}

func (s *streamLog) record(stream string, msg jetstream.Msg, sseq uint64) {
	if strings.HasPrefix(msg.Subject(), "edgegate.grant.") {
		// A grant's marker (a stream of one replica), not a record.
		s.mu.Lock()
		s.last[stream] = max(s.last[stream], sseq)
		s.mu.Unlock()
		return
	}
	h := msg.Headers()
	u := func(k string) uint64 { v, _ := strconv.ParseUint(h.Get(k), 10, 64); return v }
	rec := srec{sseq: sseq, token: string(msg.Data()), fence: u("Edgegate-Fence"), gen: u("Edgegate-Gen"), seq: u("Edgegate-Seq")}
	rec.received, _ = strconv.ParseInt(h.Get("Edgegate-Received"), 10, 64)
	ctrl := h.Get("Edgegate-Controller")
	s.mu.Lock()
	if stream == "EDGEGATE_PARSED" {
		s.parsed[ctrl] = append(s.parsed[ctrl], rec)
	} else {
		s.dead[ctrl] = append(s.dead[ctrl], rec)
	}
	s.last[stream] = max(s.last[stream], sseq)
	s.mu.Unlock()
	if stream == "EDGEGATE_PARSED" {
		s.count.Add(1)
		for {
			n := s.newest.Load()
			if rec.received <= n || s.newest.CompareAndSwap(n, rec.received) {
				break
			}
		}
	}
}

// caughtUp waits until both streams were read up to their last message.
func (s *streamLog) caughtUp(d time.Duration) error {
	deadline := time.Now().Add(d)
	for _, name := range []string{"EDGEGATE_PARSED", "EDGEGATE_DEAD"} {
		var err error
		if !pollUntil(time.Until(deadline), 50*time.Millisecond, func() bool {
			ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
			defer cancel()
			var st jetstream.Stream
			var info *jetstream.StreamInfo
			if st, err = s.js.Stream(ctx, name); err == nil {
				info, err = st.Info(ctx)
			}
			if err != nil {
				return false
			}
			s.mu.Lock()
			read := s.last[name]
			s.mu.Unlock()
			err = fmt.Errorf("read up to %d of %d", read, info.State.LastSeq)
			return read >= info.State.LastSeq
		}) {
			return fmt.Errorf("%s: %w", name, err)
		}
	}
	return nil
}

// jetStreamOf connects to appliance i's client port, without reconnects:
// a check through it fails rather than waits. done closes it.
func (r *faultRig) jetStreamOf(i int) (js jetstream.JetStream, done func(), err error) {
	nc, err := nats.Connect("nats://"+r.procs[i].nats, nats.Timeout(time.Second), nats.NoReconnect())
	if err != nil {
		return nil, nil, err
	}
	js, err = jetstream.New(nc)
	if err != nil {
		nc.Close()
		return nil, nil, err
	}
	return js, nc.Close, nil
}

// consumerCheck creates a consumer of EDGEGATE_PARSED through appliance
// i's client port, reads the last record with it and deletes it: the
// cluster's JetStream answers its API and serves data, a record received
// by an appliance at after or later.
func (r *faultRig) consumerCheck(i int, after time.Time) error {
	js, done, err := r.jetStreamOf(i)
	if err != nil {
		return err
	}
	defer done()
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Second)
	defer cancel()
	c, err := js.CreateConsumer(ctx, "EDGEGATE_PARSED", jetstream.ConsumerConfig{
		DeliverPolicy: jetstream.DeliverLastPolicy, AckPolicy: jetstream.AckNonePolicy, InactiveThreshold: 10 * time.Second,
	})
	if err != nil {
		return fmt.Errorf("create consumer: %w", err)
	}
	defer js.DeleteConsumer(context.Background(), "EDGEGATE_PARSED", c.CachedInfo().Name)
	b, err := c.Fetch(1, jetstream.FetchMaxWait(2*time.Second))
	if err != nil {
		return fmt.Errorf("fetch: %w", err)
	}
	n := 0
	for msg := range b.Messages() {
		n++
		if ms, _ := strconv.ParseInt(msg.Headers().Get("Edgegate-Received"), 10, 64); ms < after.UnixMilli() {
			return fmt.Errorf("the last record was received %v before the fault ended", after.Sub(time.UnixMilli(ms)).Round(time.Millisecond))
		}
	}
	if n == 0 {
		return fmt.Errorf("fetch: no record: %v", b.Error())
	}
	return nil
}

// deadStreamCheck reports whether the dead-letter stream has a leader,
// asked through appliance i: until it has, every message that ends as a
// dead letter holds its controller (it elects apart from the parsed
// stream, sometimes seconds later).
func (r *faultRig) deadStreamCheck(i int) error {
	js, done, err := r.jetStreamOf(i)
	if err != nil {
		return err
	}
	defer done()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	st, err := js.Stream(ctx, "EDGEGATE_DEAD")
	if err != nil {
		return err
	}
	if c := st.CachedInfo().Cluster; c != nil && c.Leader == "" {
		return errors.New("no stream leader")
	}
	return nil
}

// ---- throughput ----

// meter samples the ACKs and stored records every 50 ms.
type meter struct {
	mu      sync.Mutex
	samples []sample
	stop    chan struct{}
	done    chan struct{}
}

type sample struct {
	at            time.Time
	acks, records int64
}

func startMeter(f *fleet, s *streamLog) *meter {
	m := &meter{stop: make(chan struct{}), done: make(chan struct{})}
	go func() {
		defer close(m.done)
		tick := time.NewTicker(50 * time.Millisecond)
		defer tick.Stop()
		for {
			m.mu.Lock()
			m.samples = append(m.samples, sample{time.Now(), f.acks.Load(), s.count.Load()})
			m.mu.Unlock()
			select {
			case <-m.stop:
				return
			case <-tick.C:
			}
		}
	}()
	return m
}

func (m *meter) close() {
	close(m.stop)
	<-m.done
}

// rates returns the ACKs and stored records per second between t0 and t1
// (by the samples closest inside).
func (m *meter) rates(t0, t1 time.Time) (acks, records float64) {
	m.mu.Lock()
	defer m.mu.Unlock()
	i := sort.Search(len(m.samples), func(k int) bool { return !m.samples[k].at.Before(t0) })
	j := sort.Search(len(m.samples), func(k int) bool { return m.samples[k].at.After(t1) }) - 1
	if i >= len(m.samples) || j <= i {
		return 0, 0
	}
	a, b := m.samples[i], m.samples[j]
	d := b.at.Sub(a.at).Seconds()
	return float64(b.acks-a.acks) / d, float64(b.records-a.records) / d
}

// ---- faults ----

// faultKind is a kind of fault: how to inject it, how long it lasts, and
// the bound on the recovery after it, from the configuration.
type faultKind struct {
	name     string
	what     string
	weight   int
	min, max time.Duration                  // how long the fault lasts
	bound    time.Duration                  // on the recovery after it
	why      string                         // the bound's derivation
	target   func(x *faultRun) (int, int)   // appliance and peer (route), -1 when none
	inject   func(x *faultRun, f *injected) // injects, waits f.dur, heals
	uses     func(f *injected) []string     // resources it takes (faults of one round take distinct ones)
	// epoch: the fault starts a new epoch of the lease store, and with it
	// a dispatch pause of one lease TTL. ACKs given before the pause ended
	// (batches under leases granted earlier) do not show a recovery.
	epoch bool
}

var (
	leaseBound    = fTTL + fCheck + slack
	boundLeaseWhy = "lease.ttl 1s + lease.check_interval 200ms + slack 2s"
	jsBound       = fTTL + fCheck + jsElection + slack
	boundJSWhy    = "lease.ttl 1s + lease.check_interval 200ms + JetStream election 9s + slack 2s"
	epochBound    = fTTL + fCheck + slack
	boundEpochWhy = "epoch wait lease.ttl 1s + lease.check_interval 200ms + slack 2s"
	deviceBound   = reconnect + fTTL + fCheck + slack
	boundDevWhy   = "reconnect 150ms + lease.ttl 1s + lease.check_interval 200ms + slack 2s"
)

func oneAppliance(x *faultRun) (int, int) { return x.rng.IntN(len(x.r.procs)), -1 }
func nobody(x *faultRun) (int, int)       { return -1, -1 }
func procRes(f *injected) []string        { return []string{fmt.Sprintf("proc:%d", f.target)} }

func faultKinds(sentinel bool) []*faultKind {
	kinds := []*faultKind{
		{name: "sigkill", what: "SIGKILL an appliance (its exec children die with it); started again after the fault",
			weight: 3, min: 500 * time.Millisecond, max: 2 * time.Second, bound: jsBound, why: boundJSWhy,
			target: oneAppliance, uses: procRes, inject: injectKill},
		{name: "sigstop", what: "SIGSTOP an appliance alone (its exec children run on), longer than the lease",
			weight: 2, min: 1200 * time.Millisecond, max: 2500 * time.Millisecond, bound: jsBound, why: boundJSWhy,
			target: oneAppliance, uses: procRes, inject: func(x *faultRun, f *injected) { injectStop(x, f, false) }},
		{name: "pause", what: "SIGSTOP an appliance and its exec children while one handles a message, longer than the lease",
			weight: 2, min: 1200 * time.Millisecond, max: 2500 * time.Millisecond, bound: jsBound, why: boundJSWhy,
			target: oneAppliance, uses: procRes, inject: func(x *faultRun, f *injected) { injectStop(x, f, true) }},
		{name: "route-cut", what: "both directions of the route between two appliances blocked",
			weight: 3, min: 500 * time.Millisecond, max: 2500 * time.Millisecond, bound: jsBound, why: boundJSWhy,
			target: func(x *faultRun) (int, int) {
				i := x.rng.IntN(len(x.r.procs))
				return i, (i + 1 + x.rng.IntN(len(x.r.procs)-1)) % len(x.r.procs)
			},
			uses: func(f *injected) []string {
				a, b := min(f.target, f.peer), max(f.target, f.peer)
				return []string{fmt.Sprintf("route:%d-%d", a, b)}
			},
			inject: injectRouteCut},
		{name: "device-reset", what: "every device connection (EGP/1 and lines) of one appliance reset: its devices move on",
			weight: 2, bound: deviceBound, why: boundDevWhy,
			target: oneAppliance, uses: func(f *injected) []string { return []string{fmt.Sprintf("devices:%d", f.target)} },
			inject: func(x *faultRun, f *injected) { x.r.devPx[f.target].Cut(); x.r.linesPx[f.target].Cut() }},
		{name: "device-restart", what: "2–4 devices restart right after an ACK (within the stream's 2-minute duplicate window): a persistent one numbers on from WELCOME's last_seq, a reset one, a plain one and a lines one from 1",
			weight: 3, bound: deviceBound, why: boundDevWhy,
			target: nobody, uses: func(*injected) []string { return []string{"device-restart"} }, inject: injectDeviceRestart},
	}
	if sentinel {
		return append(kinds, &faultKind{name: "failover", what: "Sentinel fails Redis over to its replica (a new run_id and replication ID; what had not replicated is lost)",
			weight: 3, bound: epochBound, epoch: true, why: boundEpochWhy, target: nobody,
			uses: func(*injected) []string { return []string{"redis"} }, inject: injectFailover})
	}
	return append(kinds,
		&faultKind{name: "redis-restart", what: "Redis SIGKILLed and started again empty (a new run_id, every key lost)",
			weight: 2, bound: epochBound, epoch: true, why: boundEpochWhy, target: nobody,
			uses: func(*injected) []string { return []string{"redis"} }, inject: injectRedisRestart},
		&faultKind{name: "redis-rollback", what: "Redis SAVEd, then after the fault's time SIGKILLed and started again from that older snapshot (fences, sessions and done records go back)",
			weight: 2, min: 500 * time.Millisecond, max: 2 * time.Second, bound: epochBound, epoch: true, why: boundEpochWhy, target: nobody,
			uses: func(*injected) []string { return []string{"redis"} }, inject: injectRedisRollback},
		&faultKind{name: "redis-down", what: "every appliance cut from Redis (connections reset, new ones unanswered)",
			weight: 1, min: 500 * time.Millisecond, max: 2 * time.Second, bound: leaseBound, why: boundLeaseWhy, target: nobody,
			uses:   func(*injected) []string { return []string{"redispx:0", "redispx:1", "redispx:2"} },
			inject: func(x *faultRun, f *injected) { injectRedisCut(x, f, x.r.redisPx) }},
		&faultKind{name: "redis-cut", what: "one appliance cut from Redis while the others reach it",
			weight: 2, min: 500 * time.Millisecond, max: 2 * time.Second, bound: leaseBound, why: boundLeaseWhy, target: oneAppliance,
			uses:   func(f *injected) []string { return []string{fmt.Sprintf("redispx:%d", f.target)} },
			inject: func(x *faultRun, f *injected) { injectRedisCut(x, f, x.r.redisPx[f.target:f.target+1]) }},
	)
}

// injected is one fault of a round.
type injected struct {
	kind       *faultKind
	target     int // appliance, or -1
	peer       int // the other end of a route, or -1
	offset     time.Duration
	dur        time.Duration
	devs       []*fdev // device-restart
	afterUp    int     // 1 + an appliance whose device listener must accept before the fault starts (up to 3 s); 0: none
	start, end time.Time
	detail     string
	done       bool
}

func (f *injected) label() string {
	switch {
	case f.peer >= 0:
		return fmt.Sprintf("%s gw-%d<>gw-%d", f.kind.name, f.target, f.peer)
	case f.target >= 0:
		return fmt.Sprintf("%s gw-%d", f.kind.name, f.target)
	}
	return f.kind.name
}

// during names the faults of the round active now, other than f.
func (x *faultRun) during(f *injected) []string {
	x.mu.Lock()
	defer x.mu.Unlock()
	var out []string
	now := time.Now()
	for _, o := range x.round {
		if o != f && !o.start.IsZero() && o.start.Before(now) && !o.done {
			out = append(out, o.label())
		}
	}
	return out
}

func injectKill(x *faultRun, f *injected) {
	x.r.kill(f.target)
	time.Sleep(f.dur) // the fault: the appliance is down
	if others := x.during(f); len(others) > 0 {
		f.detail = "started during " + strings.Join(others, ", ")
		x.r.mu.Lock()
		x.r.startsIn = append(x.r.startsIn, strings.Join(others, ", "))
		x.r.mu.Unlock()
	}
	if err := x.r.launch(f.target); err != nil {
		x.fail(fmt.Errorf("%s: %w", f.label(), err))
	}
	x.r.mu.Lock()
	x.r.started++
	x.r.mu.Unlock()
}

// injectStop stops an appliance, with its exec children when children is
// set; then a child is caught mid-message: the stop waits (up to 3 s) for
// the journal to show one of the appliance's slow handlings (50 ms) under
// way.
func injectStop(x *faultRun, f *injected, withChildren bool) {
	pid := x.r.pid(f.target)
	if !withChildren {
		syscall.Kill(pid, syscall.SIGSTOP)
		time.Sleep(f.dur)
		syscall.Kill(pid, syscall.SIGCONT)
		return
	}
	slow := func(tok string) bool { return strings.HasSuffix(tok, "/slow") }
	pollUntil(3*time.Second, 2*time.Millisecond, func() bool { return slices.ContainsFunc(x.r.jtail.underway(pid), slow) })
	x.mu.Lock()
	f.start = time.Now() // the fault begins with the stop
	x.mu.Unlock()
	signalTree(pid, syscall.SIGSTOP)
	// The pause begins when every process of the tree is stopped, not
	// when the signals were sent: a child may end a message between the
	// two, and that end counts (the checker discounts what ends after a
	// pause began).
	tree := append(children(pid), pid)
	pollUntil(time.Second, time.Millisecond, func() bool { return !slices.ContainsFunc(tree, running) })
	at := time.Now().UnixNano()
	if w := x.r.jtail.underway(pid); len(w) > 0 {
		f.detail = "mid-message: " + strings.Join(w, " ")
	} else {
		f.detail = "no message under way"
	}
	time.Sleep(f.dur)
	x.r.mu.Lock()
	x.r.pauses[pid] = append(x.r.pauses[pid], [2]int64{at, time.Now().UnixNano()})
	x.r.mu.Unlock()
	signalTree(pid, syscall.SIGCONT)
}

func injectRouteCut(x *faultRun, f *injected) {
	a, b := x.r.routePx[[2]int{f.target, f.peer}], x.r.routePx[[2]int{f.peer, f.target}]
	a.Block()
	b.Block()
	time.Sleep(f.dur)
	a.Unblock()
	b.Unblock()
}

func injectRedisCut(x *faultRun, f *injected, px []*faultproxy.Proxy) {
	for _, p := range px {
		p.Block()
	}
	time.Sleep(f.dur)
	for _, p := range px {
		p.Unblock()
	}
}

func injectRedisRestart(x *faultRun, f *injected) {
	os.Remove(filepath.Join(x.r.redisDir, "dump.rdb")) // empty: no snapshot to load
	x.r.redis.Restart()
}

func injectRedisRollback(x *faultRun, f *injected) {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	err := x.r.rc.Save(ctx).Err()
	cancel()
	if err != nil {
		x.fail(fmt.Errorf("redis SAVE: %w", err))
		return
	}
	saved := time.Now()
	time.Sleep(f.dur) // the data moves on; the snapshot stays behind
	x.r.redis.Restart()
	os.Remove(filepath.Join(x.r.redisDir, "dump.rdb")) // later restarts are empty ones
	f.detail = fmt.Sprintf("snapshot %v old", time.Since(saved).Round(time.Millisecond))
}

func injectFailover(x *faultRun, f *injected) {
	// The Sentinel promotes only a replica it knows to be in sync: after
	// a failover the demoted master becomes one some seconds later. The
	// fault begins once it would (not timed: part of the schedule).
	err := wait.UntilEvery(30*time.Second, 50*time.Millisecond, func() error {
		ctx, cancel := context.WithTimeout(context.Background(), time.Second)
		defer cancel()
		return x.r.sentinel.ReadyToFailover(ctx)
	})
	if err != nil {
		x.fail(fmt.Errorf("failover: the Sentinel is not ready: %w", err))
		return
	}
	x.mu.Lock()
	f.start = time.Now()
	x.mu.Unlock()
	old := x.r.sentinel.Master
	x.r.sentinel.Failover()
	// The fault lasts until no appliance has a command connection to the
	// demoted master (their clients close those on the Sentinel's
	// switch-master message): only then have they all met the new epoch,
	// and the recovery is measured from there.
	var still []string
	left := pollUntil(10*time.Second, 10*time.Millisecond, func() bool {
		ctx, cancel := context.WithTimeout(context.Background(), time.Second)
		defer cancel()
		list, err := old.Client().ClientList(ctx).Result()
		if err != nil {
			return false
		}
		still = still[:0]
		for _, l := range strings.Split(list, "\n") {
			if strings.Contains(l, "name=edgegate-") && !strings.Contains(l, " flags=P ") {
				still = append(still, l)
			}
		}
		return len(still) == 0
	})
	if !left {
		f.detail = "appliances still on the demoted master 10s later: " + strings.Join(still, " | ")
	}
}

// injectDeviceRestart restarts the round's chosen devices, each right
// after its next ACK (or after 3 s without one).
func injectDeviceRestart(x *faultRun, f *injected) {
	before := map[*fdev]int{}
	for _, d := range f.devs {
		d.mu.Lock()
		before[d] = d.restarts
		d.armed = true
		d.mu.Unlock()
	}
	var names []string
	deadline := time.Now().Add(3 * time.Second)
	for _, d := range f.devs {
		names = append(names, d.id)
		if !pollUntil(63*time.Second, 5*time.Millisecond, func() bool {
			d.mu.Lock()
			defer d.mu.Unlock()
			if d.armed && time.Now().After(deadline) {
				d.armed = false
				d.cur.cancel() // no ACK came: restart anyway
			}
			return d.restarts > before[d]
		}) {
			x.fail(fmt.Errorf("device-restart: %s did not restart within 60s", d.id))
		}
	}
	f.detail = strings.Join(names, " ")
}

// combo is a schedule of overlapping faults aimed at one interaction;
// the other rounds are drawn at random.
type combo struct {
	name  string
	kinds []string
	plan  func(x *faultRun) []*injected
}

func (x *faultRun) kind(name string) *faultKind {
	for _, k := range x.kinds {
		if k.name == name {
			return k
		}
	}
	return nil
}

func ms(lo, hi int, rng *rand.Rand) time.Duration {
	return time.Duration(lo+rng.IntN(hi-lo+1)) * time.Millisecond
}

func combos() []combo {
	return []combo{
		{"redis restarts, then an appliance starts and devices move to it", []string{"sigkill", "redis-restart", "device-reset"}, func(x *faultRun) []*injected {
			n := len(x.r.procs)
			// The devices of the appliance before the restarted one
			// reconnect to the next: the one that never saw Redis's
			// previous run, while the others' parsers may still work
			// under leases Redis lost.
			down, i := ms(1000, 2000, x.rng), x.rng.IntN(n)
			return []*injected{
				{kind: x.kind("sigkill"), target: i, peer: -1, dur: down},
				{kind: x.kind("redis-restart"), target: -1, peer: -1, offset: down - ms(100, 600, x.rng)},
				{kind: x.kind("device-reset"), target: (i + n - 1) % n, peer: -1, offset: down + ms(300, 700, x.rng)},
			}
		}},
		{"an appliance starts after Redis restarted, while another cut from Redis still works", []string{"redis-cut", "sigkill", "redis-restart", "device-reset"}, func(x *faultRun) []*injected {
			n := len(x.r.procs)
			// gw-a, cut from Redis just before its restart, does not see
			// it: its parsers work on until their leases run out by their
			// clocks. gw-b starts after the restart (it never saw Redis's
			// previous run) and gw-a's devices move to it: it must not
			// dispatch under leases Redis lost before gw-a's ran out.
			down, a := ms(300, 600, x.rng), x.rng.IntN(n)
			restart := down - ms(50, 150, x.rng)
			return []*injected{
				{kind: x.kind("sigkill"), target: (a + 1) % n, peer: -1, dur: down},
				{kind: x.kind("redis-cut"), target: a, peer: -1, offset: restart - ms(50, 150, x.rng), dur: ms(1200, 1600, x.rng)},
				{kind: x.kind("redis-restart"), target: -1, peer: -1, offset: restart},
				{kind: x.kind("device-reset"), target: a, peer: -1, offset: down, afterUp: 1 + (a+1)%n},
			}
		}},
		{"seqs restart across a route cut", []string{"route-cut", "device-restart"}, func(x *faultRun) []*injected {
			n := len(x.r.procs)
			i := x.rng.IntN(n)
			return []*injected{
				{kind: x.kind("route-cut"), target: i, peer: (i + 1) % n, dur: ms(2000, 2500, x.rng)},
				{kind: x.kind("device-restart"), target: -1, peer: -1, offset: ms(200, 800, x.rng), devs: x.pickDevices(resetDev, plainDev, linesDev)},
			}
		}},
		{"devices move across a route cut", []string{"route-cut", "device-reset"}, func(x *faultRun) []*injected {
			n := len(x.r.procs)
			i := x.rng.IntN(n)
			return []*injected{
				{kind: x.kind("route-cut"), target: i, peer: (i + 1) % n, dur: ms(1500, 2500, x.rng)},
				{kind: x.kind("device-reset"), target: i, peer: -1, offset: ms(200, 800, x.rng)},
			}
		}},
		{"devices bounce while their leases are kept", []string{"device-reset", "device-restart"}, func(x *faultRun) []*injected {
			n := len(x.r.procs)
			i := x.rng.IntN(n)
			return []*injected{
				{kind: x.kind("device-reset"), target: i, peer: -1},
				{kind: x.kind("device-reset"), target: (i + 1) % n, peer: -1, offset: ms(50, 400, x.rng)},
				{kind: x.kind("device-restart"), target: -1, peer: -1, offset: ms(0, 300, x.rng), devs: x.pickDevices(persistentDev, persistentDev, resetDev)},
			}
		}},
		{"redis rolls back while an appliance is paused", []string{"pause", "redis-rollback"}, func(x *faultRun) []*injected {
			n := len(x.r.procs)
			return []*injected{
				{kind: x.kind("pause"), target: x.rng.IntN(n), peer: -1, dur: ms(1500, 2500, x.rng)},
				{kind: x.kind("redis-rollback"), target: -1, peer: -1, offset: ms(0, 300, x.rng), dur: ms(500, 1200, x.rng)},
			}
		}},
		{"an appliance starts while Redis is unreachable", []string{"redis-down", "sigkill"}, func(x *faultRun) []*injected {
			n := len(x.r.procs)
			return []*injected{
				{kind: x.kind("redis-down"), target: -1, peer: -1, dur: ms(1800, 2500, x.rng)},
				{kind: x.kind("sigkill"), target: x.rng.IntN(n), peer: -1, offset: ms(100, 400, x.rng), dur: ms(500, 1000, x.rng)},
			}
		}},
		{"an appliance starts while another is cut from Redis", []string{"redis-cut", "sigkill", "device-reset"}, func(x *faultRun) []*injected {
			n := len(x.r.procs)
			i := x.rng.IntN(n)
			return []*injected{
				{kind: x.kind("redis-cut"), target: i, peer: -1, dur: ms(1500, 2000, x.rng)},
				{kind: x.kind("sigkill"), target: (i + 1) % n, peer: -1, offset: ms(0, 300, x.rng), dur: ms(500, 1000, x.rng)},
				{kind: x.kind("device-reset"), target: i, peer: -1, offset: ms(300, 600, x.rng)},
			}
		}},
		{"a failover while an appliance starts", []string{"failover", "sigkill"}, func(x *faultRun) []*injected {
			n := len(x.r.procs)
			down := ms(800, 1500, x.rng)
			return []*injected{
				{kind: x.kind("sigkill"), target: x.rng.IntN(n), peer: -1, dur: down},
				{kind: x.kind("failover"), target: -1, peer: -1, offset: down - ms(100, 500, x.rng)},
			}
		}},
	}
}

// pickDevices picks a distinct device of each class given, at random.
func (x *faultRun) pickDevices(classes ...devClass) []*fdev {
	var out []*fdev
	for _, c := range classes {
		var cands []*fdev
		for _, d := range x.f.devs {
			if d.class == c && !slices.Contains(out, d) {
				cands = append(cands, d)
			}
		}
		if len(cands) > 0 {
			out = append(out, cands[x.rng.IntN(len(cands))])
		}
	}
	return out
}

// faultRun is one run of the suite.
type faultRun struct {
	t     *testing.T
	r     *faultRig
	f     *fleet
	s     *streamLog
	m     *meter
	rng   *rand.Rand
	kinds []*faultKind

	mu    sync.Mutex
	round []*injected
	errs  []error
}

func (x *faultRun) fail(err error) {
	x.mu.Lock()
	x.errs = append(x.errs, err)
	x.mu.Unlock()
}

// plan draws a round: a combo now and then, else 1–3 faults of random
// kinds on distinct resources, each starting within 1.5 s of the round.
func (x *faultRun) plan() (string, []*injected) {
	if x.rng.IntN(100) < 35 || *faultComboFlag != "" {
		var fit []combo
		for _, c := range combos() {
			if !slices.ContainsFunc(c.kinds, func(k string) bool { return x.kind(k) == nil }) && strings.Contains(c.name, *faultComboFlag) {
				fit = append(fit, c)
			}
		}
		if len(fit) == 0 && *faultComboFlag != "" {
			x.t.Fatalf("-faults.combo %q: no combo of that name with its kinds enabled", *faultComboFlag)
		}
		if len(fit) > 0 {
			c := fit[x.rng.IntN(len(fit))]
			fs := c.plan(x)
			for _, f := range fs {
				if f.dur == 0 && f.kind.max > 0 {
					f.dur = f.kind.min + time.Duration(x.rng.Int64N(int64(f.kind.max-f.kind.min)))
				}
			}
			return c.name, fs
		}
	}
	k := 1 + x.rng.IntN(3)
	total := 0
	for _, kd := range x.kinds {
		total += kd.weight
	}
	var out []*injected
	used := map[string]bool{}
	for tries := 0; len(out) < k && tries < 20; tries++ {
		w := x.rng.IntN(total)
		var kd *faultKind
		for _, c := range x.kinds {
			if w -= c.weight; w < 0 {
				kd = c
				break
			}
		}
		f := &injected{kind: kd, offset: time.Duration(x.rng.Int64N(int64(1500 * time.Millisecond)))}
		f.target, f.peer = kd.target(x)
		if kd.max > 0 {
			f.dur = kd.min + time.Duration(x.rng.Int64N(int64(kd.max-kd.min)))
		}
		if kd.name == "device-restart" {
			f.devs = x.pickDevices([]devClass{persistentDev, resetDev, plainDev, linesDev}[x.rng.IntN(4)], persistentDev, linesDev, plainDev)
			f.devs = f.devs[:min(len(f.devs), 2+x.rng.IntN(3))]
		}
		res := kd.uses(f)
		if slices.ContainsFunc(res, func(s string) bool { return used[s] }) {
			continue
		}
		for _, s := range res {
			used[s] = true
		}
		out = append(out, f)
	}
	out[0].offset = 0 // the round starts with its first fault
	return "", out
}

// faultRecord is one fault as the report gives it.
type faultRecord struct {
	Round    int           `json:"round"`
	Combo    string        `json:"combo,omitempty"`
	Kind     string        `json:"kind"`
	Target   string        `json:"target"`
	Detail   string        `json:"detail,omitempty"`
	Offset   time.Duration `json:"offset_ns"`
	Duration time.Duration `json:"duration_ns"`
	Overlap  bool          `json:"overlapped"` // another fault of its round was active at the same time
	// Stall is the longest time any device went without an ACK during
	// its round, up to the recovery: what a user sees.
	Stall time.Duration `json:"stall_ns"`
	// Recovery runs from the end of the round's last fault until every
	// device was acknowledged again, a record received after it was
	// stored and read, every appliance was ready and a consumer could be
	// created through each; -1: not within the limit.
	Recovery time.Duration `json:"recovery_ns"`
	// Bound is the round's bound: the largest of its faults' bounds.
	Bound time.Duration `json:"bound_ns"`
	// Before and After are ACKs a second in the second before the round
	// and the second after its recovery; StoredBefore and StoredAfter
	// the records read from the stream.
	Before       float64 `json:"acks_before"`
	After        float64 `json:"acks_after"`
	StoredBefore float64 `json:"stored_before"`
	StoredAfter  float64 `json:"stored_after"`
}

type roundResult struct {
	recovery                       time.Duration
	stall                          time.Duration
	bound                          time.Duration
	boundKind                      string
	waited                         string // what the recovery waited for last
	start                          time.Time
	before, after, sBefore, sAfter float64
}

// runRound injects the faults of a round, each on its own goroutine at its
// offset, then waits for the recovery and measures the throughput.
func (x *faultRun) runRound(n int, comboName string, fs []*injected) roundResult {
	var res roundResult
	start := time.Now()
	res.start = start
	res.before, res.sBefore = x.m.rates(start.Add(-time.Second), start)
	for _, d := range x.f.devs {
		d.mu.Lock()
		d.mark, d.stall = start, 0
		d.mu.Unlock()
	}
	x.mu.Lock()
	x.round = fs
	x.mu.Unlock()
	var wg sync.WaitGroup
	for _, f := range fs {
		if f.kind.bound > res.bound {
			res.bound, res.boundKind = f.kind.bound, f.kind.name
		}
		wg.Go(func() {
			time.Sleep(f.offset) // the schedule
			if f.afterUp > 0 {
				// Then as soon as the appliance takes devices (or 3 s).
				pollUntil(3*time.Second, 5*time.Millisecond, func() bool {
					c, err := net.DialTimeout("tcp", x.r.procs[f.afterUp-1].devices, 100*time.Millisecond)
					if err == nil {
						c.Close()
					}
					return err == nil
				})
			}
			x.mu.Lock()
			f.start = time.Now()
			x.mu.Unlock()
			f.kind.inject(x, f)
			x.mu.Lock()
			f.end, f.done = time.Now(), true
			x.mu.Unlock()
		})
	}
	wg.Wait()
	end := start
	for _, f := range fs {
		if f.end.After(end) {
			end = f.end
		}
	}
	acks := end
	for _, f := range fs {
		if f.kind.epoch && f.end.Add(fTTL).After(acks) {
			acks = f.end.Add(fTTL)
		}
	}
	limit := max(60*time.Second, 3*res.bound)
	rec, waited, err := x.recovered(end, acks, limit)
	res.waited = waited
	if err != nil {
		res.recovery = -1
		x.t.Errorf("round %d: no recovery within %v: %v", n, limit, err)
		x.diagnose(end)
		x.dumpGoroutines(n)
	} else {
		res.recovery = rec.Sub(end)
		// The second after the recovery: throughput must be back.
		acked := x.f.ackCounts()
		time.Sleep(time.Second)
		res.after, res.sAfter = x.m.rates(rec, rec.Add(time.Second))
		if res.after < res.before/2 || res.sAfter < res.sBefore/2 {
			x.slowDevices(acked)
			x.diagnose(rec)
		}
	}
	for _, d := range x.f.devs {
		d.mu.Lock()
		if !d.stuckLocked() {
			res.stall = max(res.stall, d.stall)
		}
		if res.recovery < 0 && !d.lastAck.After(end) && !d.stuckLocked() {
			d.stuckAt = time.Now()
		}
		d.mu.Unlock()
	}
	return res
}

// recovered waits until the cluster serves again after end: every device
// acknowledged after acks (end, or the end of an epoch pause after it), a
// record received after end read from the stream, every appliance ready,
// a consumer created through each, and the dead-letter stream led.
func (x *faultRun) recovered(end, acks time.Time, limit time.Duration) (time.Time, string, error) {
	var why, dead error
	waited := ""
	check := func() error {
		for _, d := range x.f.devs {
			d.mu.Lock()
			last, stuck := d.lastAck, d.stuckLocked()
			d.mu.Unlock()
			if !last.After(acks) && !stuck {
				return fmt.Errorf("%s: no ACK since the fault", d.id)
			}
		}
		if x.s.newest.Load() < end.UnixMilli() {
			return errors.New("no record received since the fault read from the stream")
		}
		for i, p := range x.r.procs {
			if !x.r.ready(i) {
				return fmt.Errorf("%s not ready", p.name)
			}
		}
		for i, p := range x.r.procs {
			if err := x.r.consumerCheck(i, end); err != nil {
				return fmt.Errorf("%s: consumer: %w", p.name, err)
			}
		}
		if err := x.r.deadStreamCheck(0); err != nil {
			return fmt.Errorf("dead letters: %w", err)
		}
		return nil
	}
	ok := pollUntil(time.Until(end.Add(limit)), 20*time.Millisecond, func() bool {
		if why != nil {
			waited = why.Error()
		}
		if why = check(); why == nil {
			return true
		}
		dead = x.r.alive()
		return dead != nil
	})
	switch {
	case dead != nil:
		return time.Time{}, waited, dead
	case !ok:
		return time.Time{}, waited, why
	}
	return time.Now(), waited, nil
}

// ackCounts returns every device's ACKs so far.
func (f *fleet) ackCounts() []int {
	n := make([]int, len(f.devs))
	for i, d := range f.devs {
		d.mu.Lock()
		n[i] = d.acked
		d.mu.Unlock()
	}
	return n
}

// slowDevices logs the ACKs of every device since the counts before,
// when a round's throughput did not come back.
func (x *faultRun) slowDevices(before []int) {
	var b strings.Builder
	for i, n := range x.f.ackCounts() {
		fmt.Fprintf(&b, " %s:%d", x.f.devs[i].id, n-before[i])
	}
	x.t.Logf("ACKs per device in the second after the recovery:%s", b.String())
}

// diagnose logs the devices without an ACK since t and what every
// appliance's socket says of their controllers.
func (x *faultRun) diagnose(since time.Time) {
	stuck := map[string]bool{}
	for _, d := range x.f.devs {
		d.mu.Lock()
		last := d.lastAck
		d.mu.Unlock()
		if !last.After(since) {
			stuck[d.id] = true
			x.t.Logf("stuck %s (%s): unacked %d, last ACK %v ago", d.id, d.class, d.unacked(), time.Since(last).Round(time.Millisecond))
		}
	}
	for _, p := range x.r.procs {
		nc, err := nats.Connect("nats://"+p.nats, nats.Timeout(time.Second))
		if err != nil {
			x.t.Logf("%s: %v", p.name, err)
			continue
		}
		answers, err := collectStatus(nc, 500*time.Millisecond)
		nc.Close()
		if err != nil {
			x.t.Logf("%s: status: %v", p.name, err)
			continue
		}
		for _, a := range answers {
			if a.Kind != "socket" || a.Appliance != p.name {
				continue
			}
			for _, c := range a.Controllers {
				if stuck[c.ID] {
					x.t.Logf("%s socket: %+v", p.name, c)
				}
			}
			x.t.Logf("%s socket: paused %v, in flight %d, queued %d, counters %v", p.name, a.Paused, a.InFlight, a.Queued, a.Counters)
		}
	}
}

// dumpGoroutines saves every appliance's goroutines (pprof, debug=2)
// next to its log, for the report of a stall.
func (x *faultRun) dumpGoroutines(round int) {
	for _, p := range x.r.procs {
		c := http.Client{Timeout: 5 * time.Second}
		resp, err := c.Get("http://" + p.http + "/debug/pprof/goroutine?debug=2")
		if err != nil {
			x.t.Logf("%s: goroutines: %v", p.name, err)
			continue
		}
		path := filepath.Join(x.r.dir, fmt.Sprintf("%s.round%d.goroutines", p.name, round))
		if f, err := os.Create(path); err == nil {
			f.ReadFrom(resp.Body)
			f.Close()
			x.t.Logf("%s: goroutines in %s", p.name, path)
		}
		resp.Body.Close()
	}
}

// faultOpts is what a run of the suite injects.
type faultOpts struct {
	faults     int
	appliances int // 3 unless set
	sentinel   bool
	devices    map[devClass]int
	rate       float64
}

// TestFaults injects overlapping faults on a seeded random schedule into
// three edgegate processes sharing a Redis, with JetStream on (streams of
// 3 replicas), while devices of every kind stream, reconnect and restart,
// and a consumer reads the stream: appliances SIGKILLed and started again
// (also while another fault is active), stopped alone or with their exec
// children mid-message, Redis restarted empty or from an older snapshot,
// unreachable from all appliances or from one, routes cut, device
// connections reset, devices restarted right after an ACK. After every
// round of faults it waits for the recovery (within a bound per kind,
// from the configuration), creates a consumer through every appliance and
// measures the throughput. At the end a checker reads the handler's
// journal (kept outside the code under test), the devices' ACKs and the
// stored records: nothing acknowledged is lost, unstored, reordered or
// acknowledged before its handling ended; no controller is handled twice
// at once; no record is stored with a stale fence. See docs/testing.md;
// the long run:
//
//	go test ./cmd/edgegate -run TestFaults -v -timeout 3h -args -faults=500
func TestFaults(t *testing.T) {
	if testing.Short() {
		t.Skip("multi-process fault suite")
	}
	runFaults(t, faultOpts{faults: *faultCount, rate: *faultRate,
		devices: map[devClass]int{persistentDev: 4, resetDev: 2, plainDev: 2, linesDev: 3}})
}

// TestFaultsPair is a smaller run of two appliances: their streams have
// one replica (on either appliance), so a record's write is fenced by its
// grant's marker instead of the subject's last record, and a pause or a
// route cut sends an older grant's records to a stream that newer
// grants' records also reach. Killing the appliance that holds the
// streams stops every controller's output until it is back.
func TestFaultsPair(t *testing.T) {
	if testing.Short() {
		t.Skip("multi-process fault suite")
	}
	runFaults(t, faultOpts{faults: max(*faultCount/4, 6), appliances: 2, rate: *faultRate,
		devices: map[devClass]int{persistentDev: 3, resetDev: 1, plainDev: 1, linesDev: 2}})
}

// TestFaultsSentinel is a smaller run over Redis Sentinel, with failovers
// among the faults (the other Redis faults need the proxies, which a
// Sentinel's clients go around).
func TestFaultsSentinel(t *testing.T) {
	if testing.Short() {
		t.Skip("multi-process fault suite")
	}
	runFaults(t, faultOpts{faults: max(*faultCount/8, 6), sentinel: true, rate: *faultRate,
		devices: map[devClass]int{persistentDev: 3, resetDev: 1, plainDev: 1, linesDev: 2}})
}

func runFaults(t *testing.T, o faultOpts) {
	seed := *faultSeed
	if seed == 0 {
		seed = uint64(time.Now().UnixNano()) % 1_000_000_000
	}
	t.Logf("seed %d: replay with go test ./cmd/edgegate -run '^%s$' -v -args -faults=%d -faults.seed=%d", seed, t.Name(), *faultCount, seed)
	rng := rand.New(rand.NewPCG(seed, seed>>1|1))
	n := o.appliances
	if n == 0 {
		n = 3
	}
	r := newFaultRig(t, n, o.sentinel)
	s := startStreamLog(t, r)
	f := startFleet(t, r, o.devices, o.rate, seed)
	m := startMeter(f, s)
	defer m.close()
	x := &faultRun{t: t, r: r, f: f, s: s, m: m, rng: rng, kinds: faultKinds(o.sentinel)}
	if *faultKindsFlag != "" {
		want := strings.Split(*faultKindsFlag, ",")
		x.kinds = slices.DeleteFunc(x.kinds, func(k *faultKind) bool { return !slices.Contains(want, k.name) })
		if len(x.kinds) == 0 {
			t.Fatalf("-faults.kinds %q: no such kind", *faultKindsFlag)
		}
	}
	t.Cleanup(func() {
		f.halt()
		f.wg.Wait()
		for _, d := range f.devs {
			d.mu.Lock()
			in := d.cur
			d.mu.Unlock()
			if in != nil && in.egp != nil {
				in.egp.Close()
			} else if in != nil {
				in.lines.close()
			}
		}
	})
	// Steady state first.
	if _, _, err := x.recovered(time.Now(), time.Now(), 60*time.Second); err != nil {
		t.Fatalf("no steady state before any fault: %v", err)
	}
	time.Sleep(time.Second) // the first round's throughput before it

	var records []faultRecord
	unrecovered := 0
	for round := 0; len(records) < o.faults; round++ {
		comboName, fs := x.plan()
		res := x.runRound(round, comboName, fs)
		var labels []string
		for _, fa := range fs {
			overlap := false
			for _, o := range fs {
				if o != fa && o.start.Before(fa.end) && fa.start.Before(o.end.Add(time.Millisecond)) {
					overlap = true
				}
			}
			target := "-"
			if fa.target >= 0 {
				target = strings.TrimPrefix(fa.label(), fa.kind.name+" ")
			}
			records = append(records, faultRecord{Round: round, Combo: comboName, Kind: fa.kind.name, Target: target, Detail: fa.detail,
				Offset: fa.start.Sub(res.start), Duration: fa.end.Sub(fa.start), Overlap: overlap,
				Stall: res.stall, Recovery: res.recovery, Bound: res.bound,
				Before: res.before, After: res.after, StoredBefore: res.sBefore, StoredAfter: res.sAfter})
			l := fmt.Sprintf("%s +%v %v", fa.label(), fa.start.Sub(res.start).Round(time.Millisecond), fa.end.Sub(fa.start).Round(time.Millisecond))
			if fa.detail != "" {
				l += " (" + fa.detail + ")"
			}
			labels = append(labels, l)
		}
		c := ""
		if comboName != "" {
			c = " «" + comboName + "»"
		}
		w := ""
		if res.waited != "" {
			w = ", last waited for: " + res.waited
		}
		t.Logf("round %2d at %s%s: %s; stall %v, recovery %v (bound %v, %s%s), ACKs/s %.0f → %.0f, stored/s %.0f → %.0f", round, res.start.Format("15:04:05.000"), c, strings.Join(labels, "; "),
			res.stall.Round(time.Millisecond), res.recovery.Round(time.Millisecond), res.bound, res.boundKind, w, res.before, res.after, res.sBefore, res.sAfter)
		if res.recovery > res.bound {
			t.Errorf("round %d: recovery %v beyond the bound %v of %s", round, res.recovery.Round(time.Millisecond), res.bound, res.boundKind)
		}
		if res.recovery >= 0 && (res.after < res.before/2 || res.sAfter < res.sBefore/2) {
			t.Errorf("round %d: throughput did not come back: ACKs/s %.0f → %.0f, stored/s %.0f → %.0f", round, res.before, res.after, res.sBefore, res.sAfter)
		}
		x.mu.Lock()
		errs := x.errs
		x.errs = nil
		x.mu.Unlock()
		f.mu.Lock()
		errs = append(errs, f.errs...)
		f.errs = nil
		f.mu.Unlock()
		for _, err := range errs {
			t.Errorf("round %d: %v", round, err)
		}
		if err := r.alive(); err != nil {
			t.Fatalf("round %d: %v", round, err)
		}
		if res.recovery < 0 {
			if unrecovered++; !*faultContinue || unrecovered >= 5 {
				t.Errorf("round %d did not recover: no more faults; the checker reads what there is", round)
				break
			}
		}
	}

	// Stop sending; everything sent must be acknowledged, and the stream
	// read to its end.
	f.halt()
	f.wg.Wait()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	var flushes sync.WaitGroup
	for _, d := range f.devs {
		flushes.Go(func() {
			if err := d.flush(ctx); err != nil {
				t.Errorf("%s: flush: %v (unacked %d)", d.id, err, d.unacked())
			}
		})
	}
	flushes.Wait()
	cancel()
	for _, err := range f.errs {
		t.Errorf("device: %v", err)
	}
	if err := s.caughtUp(time.Minute); err != nil {
		t.Errorf("stream not read to its end: %v", err)
	}
	s.close()
	for _, d := range f.devs {
		d.resolve()
	}
	r.mu.Lock()
	killed, pauses := r.killedAt, r.pauses
	starts, startsIn := r.started, len(r.startsIn)
	r.mu.Unlock()
	check, st := checkHistory(t, readJournal(t, r.journal), f, s, killed, pauses)
	report := faultReport(records, check, st, seed, x.kinds)
	report.Starts, report.StartsDuring = starts, startsIn
	t.Logf("\n%s", report.text())
	if *faultReportPath != "" {
		b, _ := json.MarshalIndent(report, "", "  ")
		os.WriteFile(*faultReportPath, b, 0o644)
	}
}

// ---- the checker ----

// historyStats are the run's totals.
type historyStats struct {
	Devices      int `json:"devices"`
	Sent         int `json:"sent"`
	Acked        int `json:"acked"`
	DeadLettered int `json:"dead_lettered"`
	Restarts     int `json:"device_restarts"`
	Records      int `json:"records"`
	Calls        int `json:"handlings"`
}

// overlapEnd returns when a handling of j stops counting for overlaps:
// as callEnd says, or at a pause of its appliance and children that
// caught it; or, when a pause came between the decision to start it and
// its start, before its start: it does not count at all (overlapping
// skips it), whether it started before or while another ran.
func overlapEnd(j map[string][]*jcall, killedAt map[int]int64, pauses map[int][][2]int64) func(*jcall) int64 {
	// decided is when the appliance may have decided to start a handling,
	// at the earliest: as the handling before it on the same exec child
	// ended (a worker writes a child its next request once the child
	// answered the last, checking the lease before with the clock read
	// then); 0 for a child's first.
	decided := map[*jcall]int64{}
	byChild := map[int][]*jcall{}
	for _, calls := range j {
		for _, call := range calls {
			byChild[call.pid] = append(byChild[call.pid], call)
		}
	}
	for _, calls := range byChild {
		slices.SortFunc(calls, func(a, b *jcall) int { return cmp.Compare(a.start, b.start) })
		for i := 1; i < len(calls); i++ {
			decided[calls[i]] = calls[i-1].end
		}
	}
	// decidedBefore reports whether a pause of call's appliance and
	// children came between the earliest decision to start it and its
	// start: a request written to a child before the pause (or after it,
	// under the decision taken before) is read by the child after it, and
	// what it does then is the output fence's to refuse. Its overlaps are
	// excused: at most one handling per child and pause.
	decidedBefore := func(call *jcall) bool {
		d := decided[call]
		for _, p := range pauses[call.ppid] {
			if d > 0 && p[0] >= d && p[0] < call.start {
				return true
			}
		}
		return false
	}
	return func(call *jcall) int64 {
		if decidedBefore(call) {
			return call.start - 1 // all of it came after the pause
		}
		e := callEnd(call, killedAt)
		for _, p := range pauses[call.ppid] {
			if p[0] > call.start && p[0] < e {
				return p[0]
			}
		}
		return e
	}
}

// checkHistory checks, per controller, with messages named by their
// tokens: every acknowledged message was handled to its end (a P end for
// a dead letter), is stored (EDGEGATE_PARSED, or EDGEGATE_DEAD for a
// dead letter), and its ACK arrived after that end; the first handlings,
// and the first appearances in the stream, follow the device's order (its
// incarnations, then its messages); no two handlings overlap (all pairs;
// a handling ends as callEnd says, or at a pause of its appliance and
// children that caught it, or came between the decision to start it and
// its start: what it does after the pause must be fenced);
// no record is stored with a fence below one stored before it for the
// controller.
func checkHistory(t *testing.T, j map[string][]*jcall, f *fleet, s *streamLog, killedAt map[int]int64, pauses map[int][][2]int64) (c journalCheck, st historyStats) {
	t.Helper()
	const show = 5 // errors shown per check and controller
	end := overlapEnd(j, killedAt, pauses)
	// A handling caught by a pause of its appliance and children went on
	// after the pause, when its lease may have been lost: it must be
	// fenced, and never counts as handled. (One decided before a pause
	// and started after it may as well be one started under a lease
	// granted after the pause: it counts as handled when it ended, and
	// only its overlaps are excused, above.)
	paused := func(call *jcall) bool {
		for _, p := range pauses[call.ppid] {
			if p[0] > call.start && (call.end == 0 || p[0] < call.end) {
				return true
			}
		}
		return false
	}
	for _, calls := range j {
		for _, call := range calls {
			if paused(call) {
				c.PausedMidCall++
			}
		}
	}
	st.Devices = len(f.devs)
	for _, d := range f.devs {
		st.Restarts += d.restarts
		for _, p := range d.problems {
			t.Errorf("%s: %s", d.id, p)
		}
		order := map[string]int{} // token → position in the device's order
		msgs := map[string]*fmsg{}
		for i, m := range d.msgs {
			order[m.token], msgs[m.token] = i, m
		}
		st.Sent += len(d.msgs)
		calls := j[d.id]
		st.Calls += len(calls)
		handledEnd := map[string]int64{} // token → earliest end of a handling that ended
		started := map[string]bool{}
		var firsts []string
		for _, call := range calls {
			if _, ok := msgs[call.token]; !ok {
				t.Errorf("%s: handled %q, never sent", d.id, call.token)
				continue
			}
			if call.end == 0 {
				c.Unfinished++
			} else if e, ok := handledEnd[call.token]; (!ok || call.end < e) && !paused(call) {
				handledEnd[call.token] = call.end
			}
			if started[call.token] {
				c.Duplicates++
				continue
			}
			started[call.token] = true
			firsts = append(firsts, call.token)
		}
		n := 0
		for i := 1; i < len(firsts); i++ {
			if order[firsts[i]] < order[firsts[i-1]] {
				c.Reordered++
				if n++; n <= show {
					t.Errorf("%s: %s first handled after %s (reordered)", d.id, firsts[i], firsts[i-1])
				}
			}
		}
		n = 0
		for _, o := range overlapping(calls, end) {
			c.Overlaps++
			if n++; n <= show {
				t.Errorf("%s: %s (fence %d, appliance pid %d) started %v before %s (fence %d, appliance pid %d) ended: overlap", d.id,
					o[0].token, o[0].fence, o[0].ppid, time.Duration(end(o[1])-o[0].start), o[1].token, o[1].fence, o[1].ppid)
			}
		}
		// The stream.
		s.mu.Lock()
		recs, dead := s.parsed[d.id], s.dead[d.id]
		s.mu.Unlock()
		st.Records += len(recs)
		stored, deadStored := map[string]bool{}, map[string]bool{}
		var top uint64
		var storedFirsts []string
		n = 0
		for _, rec := range recs {
			if _, ok := msgs[rec.token]; !ok {
				t.Errorf("%s: stored %q (stream seq %d), never sent", d.id, rec.token, rec.sseq)
				continue
			}
			if rec.fence < top {
				c.StaleFences++
				if n++; n <= show {
					t.Errorf("%s: %s stored (stream seq %d) with fence %d after a record with fence %d: stale fence", d.id, rec.token, rec.sseq, rec.fence, top)
				}
			}
			top = max(top, rec.fence)
			if stored[rec.token] {
				c.StoredTwice++
				continue
			}
			stored[rec.token] = true
			storedFirsts = append(storedFirsts, rec.token)
		}
		for _, rec := range dead {
			deadStored[rec.token] = true
		}
		n = 0
		for i := 1; i < len(storedFirsts); i++ {
			if order[storedFirsts[i]] < order[storedFirsts[i-1]] {
				c.StoredReordered++
				if n++; n <= show {
					t.Errorf("%s: %s first stored after %s (reordered in the stream)", d.id, storedFirsts[i], storedFirsts[i-1])
				}
			}
		}
		// Every acknowledged message.
		nl, nu, ne := 0, 0, 0
		for _, m := range d.msgs {
			if !m.acked {
				continue
			}
			st.Acked++
			if m.dead {
				st.DeadLettered++
			}
			e, ok := handledEnd[m.token]
			bad := strings.HasSuffix(m.token, "/bad")
			suppresses := d.class == persistentDev || d.class == resetDev
			switch {
			case !ok:
				c.Lost++
				if nl++; nl <= show {
					t.Errorf("%s: %s (seq %d) acknowledged, never handled to its end (lost)%s", d.id, m.token, m.seq, d.context(m, started[m.token]))
				}
				continue
			case !bad && !stored[m.token]:
				// A message the handler did not refuse belongs in
				// EDGEGATE_PARSED, whatever its ACK says.
				c.Unstored++
				if nu++; nu <= show {
					how := "acknowledged"
					if m.dead {
						how = "acknowledged as dead-lettered though its handler never refused it"
						if deadStored[m.token] {
							how += " (in EDGEGATE_DEAD)"
						}
					}
					t.Errorf("%s: %s (seq %d) %s, not in EDGEGATE_PARSED%s", d.id, m.token, m.seq, how, d.context(m, true))
				}
			case bad && (!deadStored[m.token] || !m.dead && !suppresses):
				// A persistent-seq device's resend of a message that
				// was done is acknowledged as processed, however it
				// ended (docs/protocol.md, "Duplicates").
				c.Unstored++
				if nu++; nu <= show {
					t.Errorf("%s: %s (seq %d) refused by its handler: acknowledged as dead-lettered %v, in EDGEGATE_DEAD %v", d.id, m.token, m.seq, m.dead, deadStored[m.token])
				}
			}
			if m.ackAt.UnixNano() < e {
				c.AckedEarly++
				if ne++; ne <= show {
					t.Errorf("%s: %s (seq %d) acknowledged %v before its handling ended", d.id, m.token, m.seq, time.Duration(e-m.ackAt.UnixNano()))
				}
			}
		}
	}
	for _, p := range s.problems {
		t.Errorf("stream: %s", p)
	}
	return c, st
}

// context says where a message stood in its device's history.
func (d *fdev) context(m *fmsg, started bool) string {
	d.mu.Lock()
	defer d.mu.Unlock()
	in := d.incs[m.inc]
	return fmt.Sprintf(" [a %s device, incarnation %d of %d (WELCOME last_seq %d), message %d of %d in it, a handling started: %v]",
		d.class, m.inc, len(d.incs)-1, in.lastSeq, m.n, in.n, started)
}

// ---- the report ----

type faultSummary struct {
	Seed         uint64                 `json:"seed"`
	Faults       int                    `json:"faults"`
	Rounds       int                    `json:"rounds"`
	Overlapped   int                    `json:"overlapped"`
	Starts       int                    `json:"appliance_starts"`
	StartsDuring int                    `json:"appliance_starts_during_another_fault"`
	Stats        historyStats           `json:"stats"`
	Check        journalCheck           `json:"check"`
	ByKind       map[string]kindSummary `json:"by_kind"`
	Bounds       map[string]string      `json:"bounds"`
	Records      []faultRecord          `json:"records"`
}

type kindSummary struct {
	Count          int           `json:"count"`
	Overlapped     int           `json:"overlapped"`
	MedianStall    time.Duration `json:"median_stall_ns"`
	WorstStall     time.Duration `json:"worst_stall_ns"`
	MedianRecovery time.Duration `json:"median_recovery_ns"`
	WorstRecovery  time.Duration `json:"worst_recovery_ns"`
	Bound          time.Duration `json:"bound_ns"`
	OverBound      int           `json:"over_bound"`
	NoRecovery     int           `json:"no_recovery"`
	// MinThroughput is the lowest ratio of ACKs a second after the
	// recovery to before the round.
	MinThroughput float64 `json:"min_throughput_ratio"`
}

func faultReport(records []faultRecord, check journalCheck, st historyStats, seed uint64, kinds []*faultKind) faultSummary {
	s := faultSummary{Seed: seed, Faults: len(records), Stats: st, Check: check, ByKind: map[string]kindSummary{}, Bounds: map[string]string{}, Records: records}
	stalls, recs := map[string][]time.Duration{}, map[string][]time.Duration{}
	rounds := map[int]bool{}
	for _, k := range kinds {
		s.Bounds[k.name] = fmt.Sprintf("%v = %s", k.bound, k.why)
	}
	for _, r := range records {
		rounds[r.Round] = true
		k := s.ByKind[r.Kind]
		if k.Count == 0 {
			k.MinThroughput = 1e9
		}
		k.Count++
		for _, kd := range kinds {
			if kd.name == r.Kind {
				k.Bound = kd.bound
			}
		}
		if r.Overlap {
			k.Overlapped++
			s.Overlapped++
		}
		if r.Recovery < 0 {
			k.NoRecovery++
		} else {
			stalls[r.Kind] = append(stalls[r.Kind], r.Stall)
			recs[r.Kind] = append(recs[r.Kind], r.Recovery)
			if r.Recovery > r.Bound {
				k.OverBound++
			}
			if r.Before > 0 {
				k.MinThroughput = min(k.MinThroughput, r.After/r.Before)
			}
		}
		s.ByKind[r.Kind] = k
	}
	s.Rounds = len(rounds)
	medianWorst := func(ds []time.Duration) (time.Duration, time.Duration) {
		slices.Sort(ds)
		return ds[len(ds)/2], ds[len(ds)-1]
	}
	for kind := range stalls {
		k := s.ByKind[kind]
		k.MedianStall, k.WorstStall = medianWorst(stalls[kind])
		k.MedianRecovery, k.WorstRecovery = medianWorst(recs[kind])
		s.ByKind[kind] = k
	}
	return s
}

func (s faultSummary) text() string {
	var b strings.Builder
	c, st := s.Check, s.Stats
	fmt.Fprintf(&b, "faults %d in %d rounds (seed %d): %d overlapped another; %d appliance starts, %d of them during another fault; %d handlings caught mid-message by a pause\n",
		s.Faults, s.Rounds, s.Seed, s.Overlapped, s.Starts, s.StartsDuring, c.PausedMidCall)
	fmt.Fprintf(&b, "devices %d: sent %d, acked %d (%d dead-lettered), restarts %d; handlings %d, records stored %d\n",
		st.Devices, st.Sent, st.Acked, st.DeadLettered, st.Restarts, st.Calls, st.Records)
	fmt.Fprintf(&b, "checker: lost %d, unstored %d, reordered %d (stream %d), overlapping %d, stale fences %d, acked before handled %d; duplicates handled %d, stored twice %d, unfinished handlings %d\n",
		c.Lost, c.Unstored, c.Reordered, c.StoredReordered, c.Overlaps, c.StaleFences, c.AckedEarly, c.Duplicates, c.StoredTwice, c.Unfinished)
	kinds := make([]string, 0, len(s.ByKind))
	for k := range s.ByKind {
		kinds = append(kinds, k)
	}
	sort.Strings(kinds)
	r := func(d time.Duration) string { return d.Round(10 * time.Millisecond).String() }
	fmt.Fprintf(&b, "%-15s %5s %7s %9s %9s %9s %9s %7s %5s %7s\n", "fault", "count", "overlap", "stall p50", "stall max", "recov p50", "recov max", "bound", "over", "thr min")
	for _, k := range kinds {
		v := s.ByKind[k]
		over := strconv.Itoa(v.OverBound)
		if v.NoRecovery > 0 {
			over += fmt.Sprintf("+%d", v.NoRecovery)
		}
		thr := "-"
		if v.MinThroughput < 1e8 {
			thr = fmt.Sprintf("%.2f", v.MinThroughput)
		}
		fmt.Fprintf(&b, "%-15s %5d %7d %9s %9s %9s %9s %7s %5s %7s\n", k, v.Count, v.Overlapped, r(v.MedianStall), r(v.WorstStall),
			r(v.MedianRecovery), r(v.WorstRecovery), r(v.Bound), over, thr)
	}
	b.WriteString("bounds (recovery from the end of a round's last fault; a round's bound is its faults' largest):\n")
	names := make([]string, 0, len(s.Bounds))
	for k := range s.Bounds {
		names = append(names, k)
	}
	sort.Strings(names)
	for _, k := range names {
		fmt.Fprintf(&b, "  %-15s %s\n", k, s.Bounds[k])
	}
	return b.String()
}

// TestOverlapEndPauseBeforeStart: the checker's rule for a handling an
// exec child starts after a pause of its appliance and children, as the
// 500-fault run at fe081b9 saw it: the older lease's request was written
// before the stop and read after it, while a newer lease ran elsewhere.
// Its overlap is excused when the pause came after the child's previous
// handling ended, and only then.
func TestOverlapEndPauseBeforeStart(t *testing.T) {
	const ms = int64(time.Millisecond)
	const appA, appB, childA, childB = 100, 200, 101, 201
	prev := &jcall{token: "c/0/1432", fence: 2, ppid: appA, pid: childA, start: 0, end: 1 * ms}
	stale := &jcall{token: "c/0/1433/slow", fence: 2, ppid: appA, pid: childA, start: 2000 * ms, alive: 2030 * ms} // killed: no end line
	newer := &jcall{token: "c/0/1465", fence: 6, ppid: appB, pid: childB, start: 2003 * ms, end: 2004 * ms}
	j := map[string][]*jcall{"c": {prev, stale, newer}}
	for _, tc := range []struct {
		name    string
		pause   [2]int64 // of appA
		overlap bool
	}{
		{"paused between the previous handling and the start", [2]int64{5 * ms, 1990 * ms}, false},
		{"paused before the previous handling ended", [2]int64{0, 1990 * ms}, true},
		{"no pause before the start", [2]int64{2100 * ms, 2200 * ms}, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			end := overlapEnd(j, nil, map[int][][2]int64{appA: {tc.pause}})
			if got := len(overlapping(j["c"], end)) > 0; got != tc.overlap {
				t.Errorf("overlap found: %v, want %v (the stale handling counts until %d ms)", got, tc.overlap, end(stale)/ms)
			}
		})
	}
	// The same, the stale handling starting while the newer one runs (a
	// CI run at c0a74ef: 3 ms later than the newer one's start).
	running := &jcall{token: "c/0/1465", fence: 6, ppid: appB, pid: childB, start: 1997 * ms, end: 2017 * ms}
	j = map[string][]*jcall{"c": {prev, running, stale}}
	for _, tc := range []struct {
		name    string
		pause   [2]int64
		overlap bool
	}{
		{"started while the newer ran, paused after the previous handling", [2]int64{5 * ms, 1990 * ms}, false},
		{"started while the newer ran, no pause before", [2]int64{2100 * ms, 2200 * ms}, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			end := overlapEnd(j, nil, map[int][][2]int64{appA: {tc.pause}})
			if got := len(overlapping(j["c"], end)) > 0; got != tc.overlap {
				t.Errorf("overlap found: %v, want %v", got, tc.overlap)
			}
		})
	}
}
