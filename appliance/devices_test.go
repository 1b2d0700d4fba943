package appliance_test

import (
	"bufio"
	"context"
	"encoding/binary"
	"fmt"
	"net"
	"os"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/edgegate/edgegate/appliance"
	"github.com/edgegate/edgegate/device"
	"github.com/edgegate/edgegate/egp"
	"github.com/edgegate/edgegate/internal/wait"
	"github.com/edgegate/edgegate/parser"
)

// rawConn is a device that writes raw bytes, for protocol violations.
func rawConn(t *testing.T, addr string) net.Conn {
	t.Helper()
	c, err := net.DialTimeout("tcp", addr, 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return c
}

// readError reads frames until an ERROR and returns its code; it fails if
// the connection ends without one.
func readError(t *testing.T, c net.Conn) egp.Code {
	t.Helper()
	c.SetReadDeadline(time.Now().Add(10 * time.Second))
	r := egp.NewReader(c, 1<<20, 0)
	for {
		h, body, err := r.ReadFrame()
		if err != nil {
			t.Fatalf("no ERROR frame before: %v", err)
		}
		if h.Type == egp.TypeError {
			code, _, err := egp.ParseError(body)
			if err != nil {
				t.Fatal(err)
			}
			// The gateway closes after ERROR.
			if _, _, err := r.ReadFrame(); err == nil {
				t.Fatalf("connection still open after ERROR %d", code)
			}
			return code
		}
	}
}

func hello(id string, flags byte) []byte {
	return egp.AppendHello(nil, egp.Hello{Version: egp.Version, Flags: flags, ID: id})
}

// TestBadInput sends each kind of protocol violation on its own connection
// while a good device streams: each gets its ERROR code and is closed, is
// counted, and the good device is not disturbed.
func TestBadInput(t *testing.T) { servings(t, testBadInput) }

func testBadInput(t *testing.T, lean bool) {
	j := newJournal(nil)
	cfg := testConfig(t, "bad")
	serve(&cfg, lean)
	cfg.Handler = j
	cfg.Devices.HelloTimeout = 300 * time.Millisecond
	cfg.Devices.MaxFrame = 4096
	a := start(t, cfg)

	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	good := dialDevice(t, device.Config{Addrs: []string{a.DeviceAddr()}, ID: "good", Window: 8})
	var wg sync.WaitGroup
	wg.Go(func() {
		if err := sendAll(ctx, good, "good", 500); err != nil {
			t.Error(err)
		}
	})

	header := func(typ byte, n uint32) []byte {
		b := []byte{egp.Magic, typ, 0, 0, 0, 0}
		binary.BigEndian.PutUint32(b[2:], n)
		return b
	}
	afterHello := func(b []byte) []byte { return append(hello("bad-dev", 0), b...) }
	tests := []struct {
		name  string
		bytes []byte // nil: send nothing
		want  egp.Code
	}{
		{"bad magic", []byte{0x00, 0x01, 0, 0, 0, 0}, egp.CodeProtocol},
		{"unknown type", header(0x55, 0), egp.CodeProtocol},
		{"DATA before HELLO", egp.AppendData(nil, 1, []byte("x")), egp.CodeProtocol},
		{"oversized length before HELLO", header(byte(egp.TypeHello), 0xFFFFFFFF), egp.CodeTooLarge},
		{"oversized DATA after HELLO", afterHello(header(byte(egp.TypeData), 4097)), egp.CodeTooLarge},
		{"hello timeout", nil, egp.CodeHelloTimeout},
		{"bad controller id", hello("bad.id", 0), egp.CodeBadID},
		{"empty controller id", hello("", 0), egp.CodeBadID},
		{"wrong version", egp.AppendHello(nil, egp.Hello{Version: 9, ID: "v9"}), egp.CodeVersion},
		{"garbage", []byte("GET / HTTP/1.1\r\nHost: x\r\n\r\n"), egp.CodeProtocol},
		{"second HELLO", afterHello(hello("bad-dev", 0)), egp.CodeProtocol},
		{"short DATA", afterHello(header(byte(egp.TypeData), 3)), egp.CodeProtocol},
		{"ACK from a device", afterHello(egp.AppendAck(nil, 1, 0)), egp.CodeProtocol},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c := rawConn(t, a.DeviceAddr())
			if tt.bytes != nil {
				if _, err := c.Write(tt.bytes); err != nil {
					t.Fatal(err)
				}
			}
			if got := readError(t, c); got != tt.want {
				t.Errorf("ERROR code %d (%s), want %d (%s)", got, got, tt.want, tt.want)
			}
		})
	}
	wg.Wait()
	checkIncreasing(t, "good", j.succeeded("good"), 500)
	st := a.SocketStats()
	for code, n := range map[egp.Code]uint64{egp.CodeProtocol: 7, egp.CodeTooLarge: 2, egp.CodeHelloTimeout: 1, egp.CodeBadID: 2, egp.CodeVersion: 1} {
		if st.ProtocolErrors[code] != n {
			t.Errorf("protocol errors with code %s counted %d, want %d", code, st.ProtocolErrors[code], n)
		}
	}
}

// TestReconnectAndTakeover: a device whose connection is reset mid-stream
// reconnects and resends what was not acknowledged; then its connection
// goes half-open and a new session takes the controller over. Every message
// is handled, in order; with a persistent seq the duplicates of the batch
// in flight are suppressed by the done record.
func TestReconnectAndTakeover(t *testing.T) {
	if testing.Short() {
		t.Skip("long")
	}
	for _, persistent := range []bool{true, false} {
		t.Run(fmt.Sprintf("persistent=%v", persistent), func(t *testing.T) {
			servings(t, func(t *testing.T, lean bool) { testReconnect(t, persistent, lean) })
		})
	}
}

func testReconnect(t *testing.T, persistent, lean bool) {
	const total = 600
	const id = "roamer"
	slow := make(chan struct{}) // closed: handler runs fast
	j := newJournal(parser.HandlerFunc(func(ctx context.Context, m *parser.Message) error {
		select {
		case <-slow:
		case <-time.After(200 * time.Microsecond):
		}
		return nil
	}))
	cfg := testConfig(t, "reconnect")
	serve(&cfg, lean)
	cfg.Handler = j
	cfg.Parser.Batch = 16
	a := start(t, cfg)
	px := newProxy(t, a.DeviceAddr())

	var acks ackLog
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	// Phase 1: through the proxy, reset mid-stream; the client reconnects
	// (to the proxy again) and resends what was not acknowledged.
	c1 := dialDevice(t, device.Config{Addrs: []string{px.Addr()}, ID: id, PersistentSeq: persistent, Window: 64, Reconnect: true, OnAck: acks.onAck})
	for i := 1; i <= total/2; i++ {
		if _, err := c1.Send(ctx, []byte(fmt.Sprint(i))); err != nil {
			t.Fatal(err)
		}
		if i == total/4 {
			px.Cut()
		}
	}
	if err := c1.Flush(ctx); err != nil {
		t.Fatal(err)
	}
	if c1.Stats().Reconnects == 0 {
		t.Fatalf("the device never reconnected")
	}
	// The reconnect may reach the gateway before the end of the cut
	// connection does: then it takes that session over, rightly.
	cutTakeovers := a.SocketStats().Takeovers
	// Phase 2: the connection goes half-open (nothing passes, nothing
	// closes) with messages in flight; the device reboots and opens a new
	// session directly, resending from its first unacknowledged seq.
	for i := total/2 + 1; i <= total/2+50; i++ {
		if _, err := c1.Send(ctx, []byte(fmt.Sprint(i))); err != nil {
			t.Fatal(err)
		}
	}
	px.Freeze()
	seqs, _ := acks.get()
	next := uint64(1)
	for _, s := range seqs {
		next = max(next, s+1)
	}
	c1.Close()
	var acks2 ackLog
	c2 := dialDevice(t, device.Config{Addrs: []string{a.DeviceAddr()}, ID: id, PersistentSeq: persistent, StartSeq: next - 1, Window: 64, OnAck: acks2.onAck})
	for i := next; i <= total; i++ {
		if _, err := c2.Send(ctx, []byte(fmt.Sprint(i))); err != nil {
			t.Fatal(err)
		}
	}
	if err := c2.Flush(ctx); err != nil {
		t.Fatal(err)
	}
	close(slow)
	if st := a.SocketStats(); st.Takeovers-cutTakeovers != 1 {
		t.Errorf("takeovers %d after the reboot (%d before), want 1 (the half-open session)", st.Takeovers-cutTakeovers, cutTakeovers)
	}

	// Every seq 1..total was handled; the first handling of each is in
	// order; a duplicate is only ever a resend of a batch that was in
	// flight, so it repeats a seq within the last batch size.
	dups := checkFirstHandlings(t, id, j.succeeded(id), total, 2*cfg.Parser.Batch+64)
	if persistent && dups > 0 {
		t.Errorf("persistent seq: %d duplicates handled, want 0 (suppressed by the done record)", dups)
	}
	overlaps, _ := j.snapshot()
	if len(overlaps) > 0 {
		t.Errorf("overlaps: %v", overlaps)
	}
	st := a.SocketStats()
	t.Logf("duplicates handled %d, suppressed %d, dropped at takeover %d", dups, st.Suppressed, st.Dropped)
}

// TestLinesListener: the line-based listener for simple devices and nc.
// The second write comes after the first line's ACK, when the gateway has
// read all that came: line numbers go on across the wait.
func TestLinesListener(t *testing.T) { servings(t, testLinesListener) }

func testLinesListener(t *testing.T, lean bool) {
	j := newJournal(nil)
	cfg := testConfig(t, "lines")
	serve(&cfg, lean)
	cfg.Handler = j
	cfg.Devices.LinesListen = "127.0.0.1:0"
	a := start(t, cfg)
	c := rawConn(t, a.LinesAddr())
	c.SetDeadline(time.Now().Add(10 * time.Second))
	r := bufio.NewReader(c)
	var got []string
	for _, write := range []struct {
		lines string
		until int // lines answered by then
	}{{"HELLO nc-dev\r\nfirst\n", 2}, {"second line\nthird\n", 4}} {
		fmt.Fprint(c, write.lines)
		for len(got) < write.until {
			line, err := r.ReadString('\n')
			if err != nil {
				t.Fatalf("after %q: %v", got, err)
			}
			got = append(got, strings.TrimSpace(line))
		}
	}
	if want := "WELCOME 0|ACK 1|ACK 2|ACK 3"; strings.Join(got, "|") != want {
		t.Fatalf("got %q, want %q", strings.Join(got, "|"), want)
	}
	j.mu.Lock()
	var payloads []string
	for _, call := range j.calls["nc-dev"] {
		payloads = append(payloads, call.payload)
	}
	j.mu.Unlock()
	if strings.Join(payloads, "|") != "first|second line|third" {
		t.Fatalf("handled %q", payloads)
	}
	bad := rawConn(t, a.LinesAddr())
	fmt.Fprintf(bad, "HELO x\n")
	line, _ := bufio.NewReader(bad).ReadString('\n')
	if !strings.HasPrefix(line, "ERROR 1 ") {
		t.Fatalf("bad lines hello answered %q, want ERROR 1 ...", line)
	}
}

// TestPublishRecords: the publish handler stores each message in the
// EDGEGATE_PARSED stream with the headers of docs/design.md, "Output and
// fencing".
func TestPublishRecords(t *testing.T) {
	cfg := testConfig(t, "publish")
	cfg.NATS.JetStream = true
	a := start(t, cfg)
	var acks ackLog
	c := dialDevice(t, device.Config{Addrs: []string{a.DeviceAddr()}, ID: "pub-1", OnAck: acks.onAck})
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if err := sendAll(ctx, c, "pub-1", 20); err != nil {
		t.Fatal(err)
	}
	recs := readStream(t, a, parser.StreamParsed, 20)
	for i, m := range recs {
		seq := fmt.Sprint(i + 1)
		if m.Subject != "edgegate.parsed.pub-1" || m.Header.Get(parser.HeaderController) != "pub-1" ||
			m.Header.Get(parser.HeaderSeq) != seq || m.Header.Get("Nats-Msg-Id") != "pub-1:"+m.Header.Get(parser.HeaderGen)+":"+seq ||
			m.Header.Get(parser.HeaderGen) == "" ||
			m.Header.Get(parser.HeaderFence) == "" || m.Header.Get(parser.HeaderReceived) == "" {
			t.Fatalf("record %d: subject %s headers %v", i, m.Subject, m.Header)
		}
		if want := fmt.Sprintf(`{"c":"pub-1","i":%d}`, i); string(m.Data) != want {
			t.Fatalf("record %d: body %q, want %q", i, m.Data, want)
		}
	}
}

// TestExecHandler runs the exec handler end to end: a child process per
// worker turns payloads into records; a refused payload is dead-lettered.
func TestExecHandler(t *testing.T) {
	cfg := testConfig(t, "exec")
	cfg.NATS.JetStream = true
	cfg.Parser.Handler = "exec"
	cfg.Parser.Workers = 2
	cfg.Parser.Exec = []string{os.Args[0]}
	cfg.Parser.ExecEnv = []string{"EDGEGATE_APPLIANCE_TEST_CHILD", "GORACE"} // exec children get no other variable
	t.Setenv("EDGEGATE_APPLIANCE_TEST_CHILD", "1")
	t.Setenv("GORACE", "atexit_sleep_ms=0")
	a := start(t, cfg)
	var acks ackLog
	c := dialDevice(t, device.Config{Addrs: []string{a.DeviceAddr()}, ID: "exec-1", OnAck: acks.onAck})
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	for _, p := range []string{"one", "bad", "three"} {
		if _, err := c.Send(ctx, []byte(p)); err != nil {
			t.Fatal(err)
		}
	}
	if err := c.Flush(ctx); err != nil {
		t.Fatal(err)
	}
	if _, st := acks.get(); st[1] != egp.StatusProcessed || st[2] != egp.StatusDeadLettered || st[3] != egp.StatusProcessed {
		t.Fatalf("ACK statuses %v, want processed, dead-lettered, processed", st)
	}
	recs := readStream(t, a, parser.StreamParsed, 2)
	if string(recs[0].Data) != "ONE" || string(recs[1].Data) != "THREE" || recs[1].Header.Get(parser.HeaderSeq) != "3" {
		t.Fatalf("records %q %q", recs[0].Data, recs[1].Data)
	}
	dead := readStream(t, a, parser.StreamDead, 1)
	if string(dead[0].Data) != "bad" || !strings.Contains(dead[0].Header.Get(parser.HeaderError), "refused") {
		t.Fatalf("dead letter %q %v", dead[0].Data, dead[0].Header)
	}
}

// TestBackpressure: when a controller's queue is full the gateway stops
// reading its connection instead of dropping; once the handler goes on,
// everything is handled.
func TestBackpressure(t *testing.T) { servings(t, testBackpressure) }

func testBackpressure(t *testing.T, lean bool) {
	gate := make(chan struct{})
	j := newJournal(parser.HandlerFunc(func(ctx context.Context, m *parser.Message) error {
		select {
		case <-gate:
			return nil
		case <-ctx.Done():
			return ctx.Err()
		}
	}))
	cfg := testConfig(t, "backpressure")
	serve(&cfg, lean)
	cfg.Handler = j
	cfg.Devices.Queue = 8
	cfg.Parser.Batch = 4
	a := start(t, cfg)
	c := dialDevice(t, device.Config{Addrs: []string{a.DeviceAddr()}, ID: "flood", Window: 1000})
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	for i := 0; i < 500; i++ {
		if _, err := c.Send(ctx, []byte("x")); err != nil {
			t.Fatal(err)
		}
	}
	// The queue fills up to its limit, then reading stops.
	wait.True(t, 10*time.Second, "queue full", func() bool { return a.SocketStats().Queued == cfg.Devices.Queue })
	received := a.SocketStats().Received
	if received > uint64(cfg.Devices.Queue)+1 {
		t.Fatalf("received %d messages with a queue of %d and nothing handled: not backpressured", received, cfg.Devices.Queue)
	}
	close(gate)
	if err := c.Flush(ctx); err != nil {
		t.Fatal(err)
	}
	checkIncreasing(t, "flood", j.succeeded("flood"), 500)
}

// TestBurstBeyondLimits: a burst written at once that is larger than the
// controller's queue, or than the memory for queued messages, and smaller
// than a batch: the reader queues a read's messages before offering the
// controller for dispatch, and must offer them before it waits for room.
func TestBurstBeyondLimits(t *testing.T) { servings(t, testBurstBeyondLimits) }

func testBurstBeyondLimits(t *testing.T, lean bool) {
	for _, tc := range []struct {
		name   string
		limits func(*appliance.Config)
	}{
		{"queue", func(c *appliance.Config) { c.Devices.Queue = 4 }},
		{"memory", func(c *appliance.Config) { c.Devices.MaxFrame, c.Devices.Memory = 200, 4*(64+108) }},
	} {
		t.Run(tc.name, func(t *testing.T) {
			j := newJournal(nil)
			cfg := testConfig(t, "burst-"+tc.name)
			serve(&cfg, lean)
			cfg.Handler = j
			tc.limits(&cfg)
			if cfg.Parser.Batch != 0 && cfg.Parser.Batch <= 4 {
				t.Fatalf("batch %d: the burst must fit one", cfg.Parser.Batch)
			}
			a := start(t, cfg)
			c := dialDevice(t, device.Config{Addrs: []string{a.DeviceAddr()}, ID: "burst", Window: 64})
			ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
			defer cancel()
			payloads := make([][]byte, 40)
			for i := range payloads {
				payloads[i] = []byte(fmt.Sprintf("%-100d", i))
			}
			if _, err := c.SendBatch(ctx, payloads); err != nil {
				t.Fatal(err)
			}
			if err := c.Flush(ctx); err != nil {
				t.Fatalf("burst of 40 with room for 4: %v", err)
			}
			checkIncreasing(t, "burst", j.succeeded("burst"), len(payloads))
		})
	}
}

// TestConnectionLimit: beyond devices.max_connections a device gets ERROR
// busy and the others are not disturbed.
func TestConnectionLimit(t *testing.T) {
	cfg := testConfig(t, "limit")
	cfg.Devices.MaxConnections = 2
	a := start(t, cfg)
	c1 := dialDevice(t, device.Config{Addrs: []string{a.DeviceAddr()}, ID: "one"})
	dialDevice(t, device.Config{Addrs: []string{a.DeviceAddr()}, ID: "two"})
	extra := rawConn(t, a.DeviceAddr())
	extra.Write(hello("three", 0))
	if code := readError(t, extra); code != egp.CodeBusy {
		t.Fatalf("third connection: ERROR %d, want %d (busy)", code, egp.CodeBusy)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := sendAll(ctx, c1, "one", 10); err != nil {
		t.Fatal(err)
	}
}

// TestShutdownClosesDevices: at shutdown the batches in flight finish and
// are acknowledged, every device gets ERROR shutting down, and a
// connection still waiting for its HELLO does not hold the stop up.
func TestShutdownClosesDevices(t *testing.T) { servings(t, testShutdownClosesDevices) }

func testShutdownClosesDevices(t *testing.T, lean bool) {
	release := make(chan struct{})
	cfg := testConfig(t, "shutdown")
	serve(&cfg, lean)
	cfg.Devices.HelloTimeout = time.Minute
	cfg.Handler = parser.HandlerFunc(func(ctx context.Context, m *parser.Message) error {
		<-release
		return nil
	})
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	a, err := appliance.New(ctx, cfg)
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- a.Run(ctx) }()
	<-a.Ready()

	dev := rawConn(t, a.DeviceAddr())
	dev.Write(append(hello("stopping-1", 0), egp.AppendData(nil, 1, []byte("in flight"))...))
	silent := rawConn(t, a.DeviceAddr()) // never says HELLO
	wait.True(t, 10*time.Second, "the batch in flight", func() bool { return a.SocketStats().InFlight == 1 })

	start := time.Now()
	cancel()
	close(release) // the handler finishes during the drain
	r := egp.NewReader(dev, 1<<20, 0)
	dev.SetReadDeadline(time.Now().Add(10 * time.Second))
	var got []string
	for {
		h, body, err := r.ReadFrame()
		if err != nil {
			break
		}
		switch h.Type {
		case egp.TypeAck:
			ack, _ := egp.ParseAck(body)
			got = append(got, fmt.Sprintf("ACK %d", ack.Seq))
		case egp.TypeError:
			code, _, _ := egp.ParseError(body)
			got = append(got, fmt.Sprintf("ERROR %d", code))
		}
	}
	if strings.Join(got, ", ") != "ACK 1, ERROR 7" {
		t.Errorf("the device got %v, want the ACK of its batch in flight, then ERROR 7", got)
	}
	if code := readError(t, silent); code != egp.CodeShuttingDown {
		t.Errorf("connection without HELLO got ERROR %d, want 7", code)
	}
	select {
	case err := <-done:
		if err != nil {
			t.Fatal(err)
		}
	case <-time.After(20 * time.Second):
		t.Fatal("Run did not return")
	}
	t.Logf("stopped in %v", time.Since(start).Round(time.Millisecond))
}
