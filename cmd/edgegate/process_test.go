package main

import (
	"bufio"
	"context"
	"encoding/binary"
	"fmt"
	"io"
	"math/rand/v2"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"go.uber.org/goleak"

	"github.com/edgegate/edgegate/device"
	"github.com/edgegate/edgegate/internal/redistest"
	"github.com/edgegate/edgegate/internal/wait"
)

// The multi-process tests run the real edgegate binary. Their handler is an
// exec child (this test binary in journal mode) that appends a start and an
// end line per message to a journal file: an account of what was handled,
// kept outside the code under test.

func TestMain(m *testing.M) {
	if path := os.Getenv("EDGEGATE_JOURNAL_CHILD"); path != "" {
		os.Exit(journalChild(path))
	}
	goleak.VerifyTestMain(m)
}

// journalChild is an exec handler child (docs/exec.md) that journals one
// line per event, each with one append, so that the lines of concurrent
// children never mix:
//
//	S <controller> <token> <seq> <fence> <ppid> <pid> <unix_ns>   a handling starts
//	W <controller> <token> <seq> <fence> <ppid> <pid> <unix_ns>   it still runs (every 10 ms of work)
//	E <controller> <token> <seq> <fence> <ppid> <pid> <unix_ns>   it ended, done
//	P <controller> <token> <seq> <fence> <ppid> <pid> <unix_ns>   it ended, refused as bad
//
// ppid is the appliance, pid the child. The token is the payload (a space
// becomes '_', an empty payload "-"): the fault suite's devices send a
// unique token per message, so that a message is known by it and not by a
// seq that repeats across sessions. The reply is the token itself, so the
// record in EDGEGATE_PARSED names its message. A token ending in "/bad" is
// refused (status 3: dead-lettered after parser.attempts); one ending in
// "/slow" takes 50 ms and one in "/busy" 20 ms instead of 200 µs, so that
// a pause can catch a child mid-message and a batch outlives what happens
// around it.
func journalChild(path string) int {
	f, err := os.OpenFile(path, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o600)
	if err != nil {
		return 1
	}
	in, out := bufio.NewReader(os.Stdin), bufio.NewWriter(os.Stdout)
	ppid, pid := os.Getppid(), os.Getpid()
	var line []byte
	for {
		var hdr [4]byte
		if _, err := io.ReadFull(in, hdr[:]); err != nil {
			return 0
		}
		req := make([]byte, binary.BigEndian.Uint32(hdr[:]))
		if _, err := io.ReadFull(in, req); err != nil || len(req) < 1+int(req[0])+26 {
			return 1
		}
		id := string(req[1 : 1+int(req[0])])
		rest := req[1+int(req[0]):]
		seq, fence := binary.BigEndian.Uint64(rest[0:8]), binary.BigEndian.Uint64(rest[8:16])
		token := journalToken(rest[26:])
		event := func(ev byte) {
			line = fmt.Appendf(line[:0], "%c %s %s %d %d %d %d %d\n", ev, id, token, seq, fence, ppid, pid, time.Now().UnixNano())
			f.Write(line)
		}
		event('S')
		status, body, work := byte(0), token, 200*time.Microsecond // done: the record is the token
		switch {
		case strings.HasSuffix(token, "/bad"):
			status, body = 3, "bad token "+token
		case strings.HasSuffix(token, "/slow"):
			work = 50 * time.Millisecond
		case strings.HasSuffix(token, "/busy"):
			work = 20 * time.Millisecond
		}
		for left := work; left > 0; { // the work
			step := min(left, 10*time.Millisecond)
			time.Sleep(step)
			if left -= step; left > 0 {
				event('W')
			}
		}
		if status == 3 {
			event('P')
		} else {
			event('E')
		}
		binary.BigEndian.PutUint32(hdr[:], uint32(1+len(body)))
		out.Write(hdr[:])
		out.WriteByte(status)
		out.WriteString(body)
		out.Flush()
	}
}

// journalToken is a payload as the journal names it: one field.
func journalToken(payload []byte) string {
	if len(payload) == 0 {
		return "-"
	}
	return strings.Map(func(r rune) rune {
		if r == ' ' || r == '\n' || r == '\t' || r == '\r' {
			return '_'
		}
		return r
	}, string(payload))
}

// buildBinary builds edgegate once per test run.
var buildOnce struct {
	sync.Once
	path string
	err  error
}

func edgegateBinary(t *testing.T) string {
	t.Helper()
	buildOnce.Do(func() {
		dir, err := os.MkdirTemp("", "edgegate-bin-")
		if err != nil {
			buildOnce.err = err
			return
		}
		buildOnce.path = filepath.Join(dir, "edgegate")
		out, err := exec.Command("go", "build", "-o", buildOnce.path, ".").CombinedOutput()
		if err != nil {
			buildOnce.err = fmt.Errorf("go build: %v\n%s", err, out)
		}
	})
	if buildOnce.err != nil {
		t.Fatal(buildOnce.err)
	}
	return buildOnce.path
}

var (
	portsMu    sync.Mutex
	portsGiven = map[int]bool{}
)

// freePort returns a loopback address with a free port below the kernel's
// ephemeral range (32768+), so that no outgoing connection takes it
// between this check and the process binding it.
// A port is handed out once per test process, so that two processes of
// one test never get the same one.
func freePort(t *testing.T) string {
	t.Helper()
	portsMu.Lock()
	defer portsMu.Unlock()
	for i := 0; i < 1000; i++ {
		port := 20000 + rand.IntN(12000)
		if portsGiven[port] {
			continue
		}
		addr := fmt.Sprintf("127.0.0.1:%d", port)
		ln, err := net.Listen("tcp", addr)
		if err != nil {
			continue
		}
		ln.Close()
		portsGiven[port] = true
		return addr
	}
	t.Fatal("no free port in 20000-32000")
	return ""
}

// proc is one edgegate process.
type proc struct {
	name, devices, cluster, http, nats string
	args                               []string
	cmd                                *exec.Cmd
	exited                             chan struct{}
	log                                *os.File
}

func (p *proc) start(t *testing.T, bin string, env []string) {
	t.Helper()
	p.cmd = exec.Command(bin, p.args...)
	p.cmd.Env = append(os.Environ(), env...)
	p.cmd.Stdout, p.cmd.Stderr = p.log, p.log
	if err := p.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	p.exited = make(chan struct{})
	go func(cmd *exec.Cmd, ch chan struct{}) { cmd.Wait(); close(ch) }(p.cmd, p.exited)
}

func (p *proc) signal(sig syscall.Signal) { p.cmd.Process.Signal(sig) }

func (p *proc) kill() {
	p.cmd.Process.Kill()
	<-p.exited
}

// waitReady polls /readyz until it answers 200.
func (p *proc) waitReady(t *testing.T) {
	t.Helper()
	wait.For(t, 30*time.Second, func() error {
		select {
		case <-p.exited:
			t.Fatalf("%s exited at start; its log: %s", p.name, p.log.Name())
		default:
		}
		resp, err := http.Get("http://" + p.http + "/readyz")
		if err != nil {
			return fmt.Errorf("%s not ready: %w", p.name, err)
		}
		resp.Body.Close()
		if resp.StatusCode != 200 {
			return fmt.Errorf("%s not ready: /readyz answers %d", p.name, resp.StatusCode)
		}
		return nil
	})
}

type clusterOpts struct {
	n       int
	workers func(i int) int  // parser workers of appliance i
	devices func(i int) bool // whether appliance i has a device listener
	// jetstream stores records in EDGEGATE_PARSED (3 replicas over the
	// three appliances); false publishes them on core NATS only.
	jetstream bool
}

// startProcesses runs n edgegate processes clustered over loopback with a
// shared Redis, the journal child as handler, and fast leases (ttl 1s,
// heartbeat 200ms, check 200ms).
func startProcesses(t *testing.T, o clusterOpts) ([]*proc, *redistest.Server, string) {
	t.Helper()
	bin := edgegateBinary(t)
	redis := redistest.Start(t)
	dir := t.TempDir()
	journal := filepath.Join(dir, "journal")
	procs := make([]*proc, o.n)
	var peers []string
	for i := range procs {
		p := &proc{name: fmt.Sprintf("gw-%d", i), cluster: freePort(t), http: freePort(t), nats: freePort(t)}
		if o.devices == nil || o.devices(i) {
			p.devices = freePort(t)
		}
		peers = append(peers, p.cluster)
		procs[i] = p
	}
	self, _ := os.Executable()
	for i, p := range procs {
		workers := 4
		if o.workers != nil {
			workers = o.workers(i)
		}
		p.args = []string{"run", "--name", p.name, "--data_dir", filepath.Join(dir, p.name),
			"--devices.listen", p.devices, "--nats.listen", p.nats, "--nats.jetstream=" + strconv.FormatBool(o.jetstream),
			"--nats.cluster.listen", p.cluster, "--nats.cluster.peers", strings.Join(peers, ","),
			"--nats.cluster.user", "route", "--nats.cluster.password", "route-test-secret",
			"--lease.redis", redis.URL(), "--lease.ttl", "1s", "--lease.heartbeat", "200ms", "--lease.check_interval", "200ms",
			"--parser.handler", "exec", "--parser.exec", self, "--parser.workers", strconv.Itoa(workers),
			"--parser.exec_env", "EDGEGATE_JOURNAL_CHILD,GORACE", // the child's mode: exec children get no other variable
			"--http.listen", p.http, "--log.level", "info"}
		var err error
		if p.log, err = os.Create(filepath.Join(dir, p.name+".log")); err != nil {
			t.Fatal(err)
		}
		p.start(t, bin, []string{"EDGEGATE_JOURNAL_CHILD=" + journal})
		t.Cleanup(func() {
			p.signal(syscall.SIGCONT)
			p.kill()
			p.log.Close()
			if t.Failed() {
				b, _ := os.ReadFile(p.log.Name())
				t.Logf("--- %s log (last 4 KiB):\n%s", p.name, tail(b, 4096))
			}
		})
	}
	for _, p := range procs {
		p.waitReady(t)
	}
	return procs, redis, journal
}

func tail(b []byte, n int) []byte {
	if len(b) > n {
		return b[len(b)-n:]
	}
	return b
}

// jcall is a journalled handling.
type jcall struct {
	token      string
	seq, fence uint64
	ppid, pid  int   // the appliance and the exec child
	start, end int64 // unix ns; end 0 when the handling never ended (its child was killed or stopped for good)
	alive      int64 // unix ns of its last sign of life (a W line), 0 if none
	refused    bool  // ended refused as bad (a P line)
}

// readJournal reads the journal: each controller's handlings in the order
// they started. An end line closes the start line of the same child (a
// child handles one message at a time).
func readJournal(t *testing.T, path string) map[string][]*jcall {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	out := map[string][]*jcall{}
	open := map[int]*jcall{} // child pid → its handling under way
	for _, line := range strings.Split(strings.TrimSpace(string(b)), "\n") {
		f := strings.Fields(line)
		if len(f) != 8 {
			continue
		}
		seq, _ := strconv.ParseUint(f[3], 10, 64)
		fence, _ := strconv.ParseUint(f[4], 10, 64)
		ppid, _ := strconv.Atoi(f[5])
		pid, _ := strconv.Atoi(f[6])
		ts, _ := strconv.ParseInt(f[7], 10, 64)
		switch f[0] {
		case "S":
			c := &jcall{token: f[2], seq: seq, fence: fence, ppid: ppid, pid: pid, start: ts}
			out[f[1]] = append(out[f[1]], c)
			open[pid] = c
		case "W":
			if c := open[pid]; c != nil && c.token == f[2] {
				c.alive = ts
			}
		case "E", "P":
			if c := open[pid]; c != nil && c.token == f[2] {
				c.end, c.refused = ts, f[0] == "P"
			}
			delete(open, pid)
		}
	}
	for _, calls := range out {
		sort.SliceStable(calls, func(a, b int) bool { return calls[a].start < calls[b].start })
	}
	return out
}

// overlapping returns every handling of calls (one controller's, sorted by
// start) that started before an earlier one ended: compared with the
// running maximum of the ends, so that a long handling is caught by every
// one it overlaps, not only by the next. end gives a handling's end (see
// callEnd); one before the handling's start excuses it (overlapEnd). Each
// pair is the overlapping call and the one whose end it started before.
func overlapping(calls []*jcall, end func(*jcall) int64) [][2]*jcall {
	var out [][2]*jcall
	var longest *jcall
	for _, c := range calls {
		if end(c) < c.start {
			continue
		}
		if longest != nil && c.start < end(longest) {
			out = append(out, [2]*jcall{c, longest})
		}
		if longest == nil || end(c) > end(longest) {
			longest = c
		}
	}
	return out
}

// callEnd is when a handling stopped running, as far as the journal
// proves it ran: its end line, or the SIGKILL of its appliance if that
// came first (its child dies with it); without an end line, its last sign
// of life (the child was killed, by its appliance or with it, some time
// after that: only what it surely overlapped counts).
func callEnd(c *jcall, killedAt map[int]int64) int64 {
	if c.end == 0 {
		return max(c.start, c.alive)
	}
	if k, ok := killedAt[c.ppid]; ok && k > c.start && k < c.end {
		return k
	}
	return c.end
}

// checkJournal checks what a user relies on, for devices with persistent
// seqs and one session each (a seq names one message): every acknowledged
// message was handled to its end (a start without an end never counts);
// per controller the first handlings are in seq order; no two handlings
// of one controller overlap in time (all pairs; see callEnd). The fault
// suite's checker, for devices whose seqs repeat, is checkHistory.
func checkJournal(t *testing.T, j map[string][]*jcall, acked map[string][]uint64, killedAt map[int]int64) (c journalCheck) {
	t.Helper()
	for id, seqs := range acked {
		handled, started := map[uint64]bool{}, map[uint64]bool{}
		var firsts []uint64
		for _, call := range j[id] {
			if call.end != 0 {
				handled[call.seq] = true
			}
			if !started[call.seq] {
				started[call.seq] = true
				firsts = append(firsts, call.seq)
			} else {
				c.Duplicates++
			}
			if call.end == 0 {
				c.Unfinished++
			}
		}
		for _, s := range seqs {
			if !handled[s] {
				c.Lost++
				t.Errorf("%s: seq %d acknowledged but never handled to its end (lost)", id, s)
			}
		}
		for i := 1; i < len(firsts); i++ {
			if firsts[i] <= firsts[i-1] {
				c.Reordered++
				t.Errorf("%s: seq %d first handled after %d (reordered)", id, firsts[i], firsts[i-1])
				break
			}
		}
		for _, o := range overlapping(j[id], func(call *jcall) int64 { return callEnd(call, killedAt) }) {
			c.Overlaps++
			t.Errorf("%s: seq %d (fence %d, pid %d) started while seq %d (fence %d, pid %d) ran: overlap", id,
				o[0].seq, o[0].fence, o[0].ppid, o[1].seq, o[1].fence, o[1].ppid)
		}
	}
	return c
}

// journalCheck counts what checkJournal and checkHistory found. Lost,
// reordered, overlaps, stale fences, ACKs before the handling and
// unstored records fail a run; the rest is counted.
type journalCheck struct {
	Lost            int `json:"lost"`                       // acknowledged, never handled to its end
	Reordered       int `json:"reordered"`                  // first handlings out of the device's order
	Overlaps        int `json:"overlaps"`                   // handlings of one controller at the same time
	Duplicates      int `json:"duplicates"`                 // handlings of a message after its first (allowed after faults)
	Unfinished      int `json:"unfinished"`                 // handlings that started and never ended (a killed child)
	Unstored        int `json:"unstored,omitempty"`         // acknowledged, not in the stream (EDGEGATE_PARSED, or EDGEGATE_DEAD for a dead letter)
	StoredReordered int `json:"stored_reordered,omitempty"` // first appearances in the stream out of the device's order
	StaleFences     int `json:"stale_fences,omitempty"`     // records stored with a fence below one stored before for the controller
	AckedEarly      int `json:"acked_early,omitempty"`      // ACKs that arrived before their message's handling ended
	StoredTwice     int `json:"stored_twice,omitempty"`     // records of a message after its first (allowed after faults)
	PausedMidCall   int `json:"paused_mid_call,omitempty"`  // handlings a pause of their appliance and child caught
}

// runDevices connects n devices spread over addrs (reconnecting to the next
// on errors) and streams m messages each; it returns the ACKs per device
// and the time of every ACK.
type devRun struct {
	mu      sync.Mutex
	acked   map[string][]uint64
	lastAck map[string]time.Time
	gaps    map[string]time.Duration // longest time without an ACK after a mark
	mark    time.Time
}

func (d *devRun) onAck(id string) func(device.Acked) {
	return func(a device.Acked) {
		seq, now := a.Seq, time.Now()
		d.mu.Lock()
		defer d.mu.Unlock()
		d.acked[id] = append(d.acked[id], seq)
		// The first ACK after the mark ends the device's outage: from its
		// last ACK before the mark (or the mark) to now.
		if last := d.lastAck[id]; !d.mark.IsZero() && last.Before(d.mark) {
			from := d.mark
			if last.After(from) {
				from = last
			}
			d.gaps[id] = now.Sub(from)
		}
		d.lastAck[id] = now
	}
}

func streamDevices(t *testing.T, ctx context.Context, addrs []string, n, m int, during func(d *devRun)) *devRun {
	t.Helper()
	d := &devRun{acked: map[string][]uint64{}, lastAck: map[string]time.Time{}, gaps: map[string]time.Duration{}}
	var wg sync.WaitGroup
	var sentTotal sync.WaitGroup
	for i := 0; i < n; i++ {
		id := fmt.Sprintf("dev-%03d", i)
		rot := append(append([]string(nil), addrs[i%len(addrs):]...), addrs[:i%len(addrs)]...)
		c, err := device.Dial(ctx, device.Config{Addrs: rot, ID: id, PersistentSeq: true, Window: 16, Reconnect: true, OnAck: d.onAck(id)})
		if err != nil {
			t.Fatalf("%s: %v", id, err)
		}
		t.Cleanup(func() { c.Close() })
		sentTotal.Add(1)
		wg.Go(func() {
			defer c.Close()
			for k := 0; k < m; k++ {
				if _, err := c.Send(ctx, []byte(fmt.Sprintf(`{"k":%d}`, k))); err != nil {
					t.Errorf("%s: send: %v", id, err)
					sentTotal.Done()
					return
				}
				if k == m/3 {
					sentTotal.Done()
				}
			}
			if err := c.Flush(ctx); err != nil {
				t.Errorf("%s: flush: %v (unacked %d)", id, err, c.Unacked())
			}
		})
	}
	sentTotal.Wait()
	if during != nil {
		during(d)
	}
	wg.Wait()
	return d
}

// TestProcessKill: three edgegate processes share one Redis; devices stream
// to all of them; one is SIGKILLed mid-stream. Its devices reconnect to the
// others, nothing acknowledged is lost, order is kept, and every controller
// makes progress again within lease + check interval + reconnect.
func TestProcessKill(t *testing.T) {
	if testing.Short() {
		t.Skip("multi-process test")
	}
	procs, _, journal := startProcesses(t, clusterOpts{n: 3})
	addrs := []string{procs[0].devices, procs[1].devices, procs[2].devices}
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	killedAt := map[int]int64{}
	const devices, messages = 24, 400
	d := streamDevices(t, ctx, addrs, devices, messages, func(d *devRun) {
		victim := procs[1]
		killedAt[victim.cmd.Process.Pid] = time.Now().UnixNano()
		d.mu.Lock()
		d.mark = time.Now()
		d.mu.Unlock()
		victim.kill()
		t.Logf("SIGKILLed %s (pid %d)", victim.name, victim.cmd.Process.Pid)
	})
	total := 0
	for id, seqs := range d.acked {
		total += len(seqs)
		if len(seqs) != messages {
			t.Errorf("%s: %d ACKs, want %d", id, len(seqs), messages)
		}
	}
	dups := checkJournal(t, readJournal(t, journal), d.acked, killedAt).Duplicates
	var worst time.Duration
	for _, g := range d.gaps {
		worst = max(worst, g)
	}
	bound := time.Second + 200*time.Millisecond // lease.ttl + lease.check_interval
	t.Logf("acked %d; duplicates handled %d; longest pause of a controller after the kill %v (bound %v + reconnect)", total, dups, worst.Round(time.Millisecond), bound)
	if worst > bound+2*time.Second {
		t.Errorf("a controller waited %v after the kill, want within %v + reconnect", worst, bound)
	}
}

// TestParserPausedIsFenced: a parser-only process is stopped (SIGSTOP) for
// longer than the lease while it works. Its controllers move to the other
// parser; when it resumes, its work is fenced: nothing it handled after its
// lease ran out is published, so in the EDGEGATE_PARSED stream every
// controller's records have non-decreasing fences; nothing is lost or
// reordered.
func TestParserPausedIsFenced(t *testing.T) {
	if testing.Short() {
		t.Skip("multi-process test")
	}
	procs, _, journal := startProcesses(t, clusterOpts{
		n:         3,
		workers:   func(i int) int { return map[int]int{0: 0, 1: 4, 2: 4}[i] },
		devices:   func(i int) bool { return i == 0 },
		jetstream: true,
	})
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	const devices, messages = 12, 200
	d := streamDevices(t, ctx, []string{procs[0].devices}, devices, messages, func(*devRun) {
		procs[1].signal(syscall.SIGSTOP)
		time.Sleep(2500 * time.Millisecond) // the fault: stopped for 2.5 leases
		procs[1].signal(syscall.SIGCONT)
	})
	for id, seqs := range d.acked {
		if len(seqs) != messages {
			t.Errorf("%s: %d ACKs, want %d", id, len(seqs), messages)
		}
	}
	dups := checkJournal(t, readJournal(t, journal), d.acked, nil).Duplicates

	// Read the stream in storage order.
	nc, err := nats.Connect("nats://"+procs[0].nats, nats.MaxReconnects(-1))
	if err != nil {
		t.Fatal(err)
	}
	defer nc.Close()
	js, _ := jetstream.New(nc)
	stream, err := js.Stream(ctx, "EDGEGATE_PARSED")
	if err != nil {
		t.Fatal(err)
	}
	info, err := stream.Info(ctx)
	if err != nil {
		t.Fatal(err)
	}
	top := map[string]uint64{}
	stored := map[string]map[uint64]bool{}
	stale := 0
	for seq := info.State.FirstSeq; seq <= info.State.LastSeq; seq++ {
		m, err := stream.GetMsg(ctx, seq)
		if err != nil {
			t.Fatalf("stream message %d: %v", seq, err)
		}
		id := m.Header.Get("Edgegate-Controller")
		fence, _ := strconv.ParseUint(m.Header.Get("Edgegate-Fence"), 10, 64)
		s, _ := strconv.ParseUint(m.Header.Get("Edgegate-Seq"), 10, 64)
		if fence < top[id] {
			stale++
			t.Errorf("%s: record of seq %d with fence %d stored after one with fence %d: stale output", id, s, fence, top[id])
		}
		top[id] = max(top[id], fence)
		if stored[id] == nil {
			stored[id] = map[uint64]bool{}
		}
		stored[id][s] = true
	}
	for id, seqs := range d.acked {
		for _, s := range seqs {
			if !stored[id][s] {
				t.Errorf("%s: seq %d acknowledged but not in the stream", id, s)
			}
		}
	}
	t.Logf("duplicates handled %d; %d records stored, %d stale", dups, info.State.Msgs, stale)
}

// TestSignals: the real binary reloads its file on SIGHUP (a bad file is
// refused and the appliance keeps serving) and stops cleanly on SIGTERM.
func TestSignals(t *testing.T) {
	if testing.Short() {
		t.Skip("multi-process test")
	}
	dir := t.TempDir()
	file := filepath.Join(dir, "edgegate.yaml")
	write := func(level string) {
		os.WriteFile(file, []byte("log:\n  level: "+level+"\nnats:\n  listen: \"\"\n  jetstream: false\n"), 0o600)
	}
	write("info")
	p := &proc{name: "sig", devices: freePort(t), http: freePort(t)}
	p.args = []string{"run", "--config", file, "--name", "sig", "--data_dir", dir, "--devices.listen", p.devices, "--http.listen", p.http}
	var err error
	if p.log, err = os.Create(filepath.Join(dir, "sig.log")); err != nil {
		t.Fatal(err)
	}
	defer p.log.Close()
	p.start(t, edgegateBinary(t), nil)
	defer p.kill()
	p.waitReady(t)

	logHas := func(s string) bool { b, _ := os.ReadFile(p.log.Name()); return strings.Contains(string(b), s) }
	os.WriteFile(file, []byte("log:\n  levle: debug\n"), 0o600)
	p.signal(syscall.SIGHUP)
	wait.True(t, 10*time.Second, "a bad file on SIGHUP refused in the log", func() bool {
		return logHas("unknown setting log.levle") && logHas("running configuration stays")
	})
	p.waitReady(t)
	write("debug")
	p.signal(syscall.SIGHUP)
	wait.True(t, 10*time.Second, "SIGHUP with log.level debug applied", func() bool { return logHas("log.level=debug") })
	start := time.Now()
	p.signal(syscall.SIGTERM)
	select {
	case <-p.exited:
	case <-time.After(30 * time.Second):
		t.Fatal("no exit within 30s of SIGTERM")
	}
	if code := p.cmd.ProcessState.ExitCode(); code != 0 {
		t.Fatalf("exit code %d after SIGTERM, want 0", code)
	}
	t.Logf("stopped %v after SIGTERM", time.Since(start).Round(time.Millisecond))
}
