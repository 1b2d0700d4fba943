package appliance_test

import (
	"bufio"
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	"go.uber.org/goleak"

	"github.com/edgegate/edgegate/appliance"
	"github.com/edgegate/edgegate/coord"
	"github.com/edgegate/edgegate/device"
	"github.com/edgegate/edgegate/internal/faultproxy"
	"github.com/edgegate/edgegate/internal/testlog"
	"github.com/edgegate/edgegate/internal/wait"
	"github.com/edgegate/edgegate/parser"
)

func TestMain(m *testing.M) {
	if os.Getenv("EDGEGATE_APPLIANCE_TEST_CHILD") != "" {
		os.Exit(upperChild())
	}
	goleak.VerifyTestMain(m)
}

// upperChild is an exec handler child (docs/exec.md) for the tests: the
// record is the payload in upper case; a payload "bad" is refused.
func upperChild() int {
	in, out := bufio.NewReader(os.Stdin), bufio.NewWriter(os.Stdout)
	for {
		var hdr [4]byte
		if _, err := io.ReadFull(in, hdr[:]); err != nil {
			return 0
		}
		req := make([]byte, binary.BigEndian.Uint32(hdr[:]))
		if _, err := io.ReadFull(in, req); err != nil {
			return 1
		}
		payload := req[1+int(req[0])+26:]
		status, body := byte(0), bytes.ToUpper(payload)
		if string(payload) == "bad" {
			status, body = 3, []byte("refused")
		}
		binary.BigEndian.PutUint32(hdr[:], uint32(1+len(body)))
		out.Write(hdr[:])
		out.WriteByte(status)
		out.Write(body)
		out.Flush()
	}
}

// testLogger logs to the test output when -v is given, else discards.
func testLogger(t testing.TB) *slog.Logger {
	t.Helper()
	if !testing.Verbose() {
		return slog.New(slog.DiscardHandler)
	}
	return slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelInfo}))
}

// testConfig is a single appliance on loopback with fast leases.
func testConfig(t testing.TB, name string) appliance.Config {
	t.Helper()
	cfg := appliance.DefaultConfig()
	cfg.Name = name
	cfg.DataDir = t.TempDir()
	cfg.Devices.Listen = "127.0.0.1:0"
	cfg.Devices.MaxPerIP = 0 // every test device comes from loopback
	cfg.NATS.Listen = ""
	cfg.NATS.JetStream = false
	cfg.HTTP.Listen = ""
	cfg.Lease.TTL = time.Second
	cfg.Lease.Heartbeat = 200 * time.Millisecond
	cfg.Lease.CheckInterval = 200 * time.Millisecond
	cfg.Parser.Workers = 8
	cfg.Logger = testLogger(t)
	return cfg
}

// servings runs f with device connections served as they are up to
// devices.lean_after connections, and lean (see DevicesConfig.LeanAfter).
func servings(t *testing.T, f func(t *testing.T, lean bool)) {
	for _, lean := range []bool{false, true} {
		t.Run(map[bool]string{false: "buffered", true: "lean"}[lean], func(t *testing.T) { f(t, lean) })
	}
}

// serve sets cfg to serve every device connection lean, or none.
func serve(cfg *appliance.Config, lean bool) {
	cfg.Devices.LeanAfter = 0
	if !lean {
		cfg.Devices.LeanAfter = 1 << 20
	}
}

// start runs an appliance until the test ends.
func start(t testing.TB, cfg appliance.Config) *appliance.Appliance {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	a, err := appliance.New(ctx, cfg)
	if err != nil {
		cancel()
		t.Fatalf("appliance.New: %v", err)
	}
	done := make(chan error, 1)
	go func() { done <- a.Run(ctx) }()
	t.Cleanup(func() {
		cancel()
		select {
		case err := <-done:
			if err != nil {
				t.Errorf("appliance.Run: %v", err)
			}
		case <-time.After(30 * time.Second):
			t.Errorf("appliance did not stop within 30s")
		}
	})
	select {
	case <-a.Ready():
	case err := <-done:
		t.Fatalf("appliance stopped at start: %v", err)
	case <-time.After(10 * time.Second):
		t.Fatalf("appliance not ready within 10s")
	}
	return a
}

// call is one handler invocation.
type call struct {
	app        string // the appliance whose parser ran it
	seq        uint64
	fence      uint64
	payload    string
	start, end time.Time // end is zero when the call never returned
	err        error
}

// journal is a Handler wrapper that records every call per controller and
// notices overlapping calls of one controller and concurrency across them.
type journal struct {
	inner parser.Handler

	mu         sync.Mutex
	calls      map[string][]*call
	active     map[string]int
	overlaps   []string
	running    int
	maxRunning int
}

func newJournal(inner parser.Handler) *journal {
	if inner == nil {
		inner = parser.Discard()
	}
	return &journal{inner: inner, calls: map[string][]*call{}, active: map[string]int{}}
}

// on returns a Handler that records its calls in j as run by appliance app.
func (j *journal) on(app string) parser.Handler {
	return parser.HandlerFunc(func(ctx context.Context, m *parser.Message) error { return j.handle(ctx, m, app) })
}

func (j *journal) Handle(ctx context.Context, m *parser.Message) error { return j.handle(ctx, m, "") }

func (j *journal) handle(ctx context.Context, m *parser.Message, app string) error {
	c := &call{app: app, seq: m.Seq, fence: m.Fence, payload: string(m.Payload), start: time.Now()}
	j.mu.Lock()
	if j.active[m.Controller] > 0 {
		j.overlaps = append(j.overlaps, fmt.Sprintf("%s seq %d fence %d started while another call of it ran", m.Controller, m.Seq, m.Fence))
	}
	j.active[m.Controller]++
	j.running++
	j.maxRunning = max(j.maxRunning, j.running)
	j.calls[m.Controller] = append(j.calls[m.Controller], c)
	j.mu.Unlock()
	var err error
	defer func() { // also when the handler's goroutine exits (runtime.Goexit)
		j.mu.Lock()
		c.end, c.err = time.Now(), err // under the lock: callsOf copies calls while others run
		j.active[m.Controller]--
		j.running--
		j.mu.Unlock()
	}()
	err = j.inner.Handle(ctx, m)
	return err
}

// callsOf returns copies of a controller's calls in call order: every one
// so far, or with succeeded only those that returned nil.
func (j *journal) callsOf(id string, succeeded bool) []call {
	j.mu.Lock()
	defer j.mu.Unlock()
	var out []call
	for _, c := range j.calls[id] {
		if !succeeded || !c.end.IsZero() && c.err == nil {
			out = append(out, *c)
		}
	}
	return out
}

// succeeded returns the seqs of a controller's calls that returned nil, in
// call order.
func (j *journal) succeeded(id string) []uint64 {
	var out []uint64
	for _, c := range j.callsOf(id, true) {
		out = append(out, c.seq)
	}
	return out
}

func (j *journal) snapshot() (overlaps []string, maxRunning int) {
	j.mu.Lock()
	defer j.mu.Unlock()
	return append([]string(nil), j.overlaps...), j.maxRunning
}

// dialDevice connects a device client that reconnects, closed at cleanup.
func dialDevice(t *testing.T, cfg device.Config) *device.Client {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	c, err := device.Dial(ctx, cfg)
	if err != nil {
		t.Fatalf("device %s: dial: %v", cfg.ID, err)
	}
	t.Cleanup(func() { c.Close() })
	return c
}

// newProxy starts a fault-injection relay to target, closed at cleanup.
func newProxy(t *testing.T, target string) *faultproxy.Proxy {
	t.Helper()
	p, err := faultproxy.New(target)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(p.Close)
	return p
}

// readStream waits until stream holds n messages and returns them in order.
// recordCount returns how many records s holds (the parsed stream also
// holds grant markers), and its info.
func recordCount(ctx context.Context, s jetstream.Stream) (uint64, *jetstream.StreamInfo, error) {
	records := coord.DeadSubject(">")
	if s.CachedInfo().Config.Name == parser.StreamParsed {
		records = coord.ParsedSubject(">")
	}
	info, err := s.Info(ctx, jetstream.WithSubjectFilter(records))
	if err != nil {
		return 0, nil, err
	}
	var n uint64
	for _, c := range info.State.Subjects {
		n += c
	}
	return n, info, nil
}

func readStream(t *testing.T, a *appliance.Appliance, stream string, n int) []*jetstream.RawStreamMsg {
	t.Helper()
	nc, err := a.Connect("test-reader")
	if err != nil {
		t.Fatal(err)
	}
	defer nc.Close()
	js, err := jetstream.New(nc)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	s, err := js.Stream(ctx, stream)
	if err != nil {
		t.Fatalf("stream %s: %v", stream, err)
	}
	var last uint64
	wait.True(t, 10*time.Second, fmt.Sprintf("stream %s holds %d records", stream, n), func() bool {
		held, info, err := recordCount(ctx, s)
		if err != nil {
			return false
		}
		last = info.State.LastSeq
		return held >= uint64(n)
	})
	out := make([]*jetstream.RawStreamMsg, 0, n)
	for seq := uint64(1); len(out) < n && seq <= last; seq++ {
		m, err := s.GetMsg(ctx, seq)
		if errors.Is(err, jetstream.ErrMsgNotFound) {
			continue // a grant marker rolled up by a later one
		}
		if err != nil {
			t.Fatalf("stream %s: get %d: %v", stream, seq, err)
		}
		if strings.HasPrefix(m.Subject, coord.GrantSubject("")) {
			continue
		}
		out = append(out, m)
	}
	return out
}

// lockedBuffer collects log output from several goroutines.
type lockedBuffer = testlog.Buffer
