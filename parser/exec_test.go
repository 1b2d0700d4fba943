package parser

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/edgegate/edgegate/coord"
	"github.com/edgegate/edgegate/egp"
	"github.com/edgegate/edgegate/internal/testlog"
	"github.com/edgegate/edgegate/internal/wait"
)

type emitted struct {
	mu   sync.Mutex
	recs map[string][]string
}

func (e *emitted) emit(_ context.Context, m *Message, out []byte) error {
	e.mu.Lock()
	defer e.mu.Unlock()
	if e.recs == nil {
		e.recs = map[string][]string{}
	}
	e.recs[m.Controller] = append(e.recs[m.Controller], string(out))
	return nil
}

func newTestExec(t *testing.T, children int, logs *testlog.Buffer) (*Exec, *emitted) {
	t.Helper()
	var em emitted
	logger := slog.New(slog.DiscardHandler)
	if logs != nil {
		logger = slog.New(slog.NewTextHandler(logs, nil))
	}
	ex, err := NewExec(ExecConfig{
		Command:        []string{os.Args[0]},
		Children:       children,
		Env:            []string{"GORACE=atexit_sleep_ms=0", "EDGEGATE_EXEC_TEST_CHILD=1", "EDGEGATE_EXEC_TEST_MARK=" + filepath.Join(t.TempDir(), "crashed")},
		RestartBackoff: 10 * time.Millisecond,
		Logger:         logger,
	}, em.emit)
	if err != nil {
		t.Fatalf("NewExec: %v", err)
	}
	t.Cleanup(func() { ex.Close() })
	return ex, &em
}

func msg(id string, seq uint64, payload string) *Message {
	return &Message{Controller: id, Seq: seq, Fence: 1, Received: time.Now(), Payload: []byte(payload), Attempt: 1}
}

func TestExecOrderAcrossChildren(t *testing.T) {
	ex, em := newTestExec(t, 4, nil)
	ctx := context.Background()
	var wg sync.WaitGroup
	for c := 0; c < 8; c++ {
		id := fmt.Sprintf("c%d", c)
		wg.Go(func() {
			for i := 1; i <= 50; i++ {
				if err := ex.Handle(ctx, msg(id, uint64(i), fmt.Sprint(i))); err != nil {
					t.Errorf("%s %d: %v", id, i, err)
					return
				}
			}
		})
	}
	wg.Wait()
	for c := 0; c < 8; c++ {
		id := fmt.Sprintf("c%d", c)
		got := em.recs[id]
		if len(got) != 50 {
			t.Fatalf("%s: %d records, want 50", id, len(got))
		}
		for i, r := range got {
			if want := fmt.Sprintf("parsed:%d", i+1); r != want {
				t.Fatalf("%s record %d: %q, want %q", id, i, r, want)
			}
		}
	}
}

func TestExecReplies(t *testing.T) {
	ex, em := newTestExec(t, 1, nil)
	ctx := context.Background()
	if err := ex.Handle(ctx, msg("c", 1, "skip-me")); err != nil {
		t.Fatalf("skip: %v", err)
	}
	if len(em.recs["c"]) != 0 {
		t.Fatalf("skip published %v", em.recs["c"])
	}
	err := ex.Handle(ctx, msg("c", 2, "bad-input"))
	if !IsPermanent(err) || !strings.Contains(err.Error(), "cannot parse bad-input") {
		t.Fatalf("bad: %v, want a permanent error with the child's reason", err)
	}
	long := "bad" + strings.Repeat("y", 100<<10)
	err = ex.Handle(ctx, msg("c", 2, long))
	if !IsPermanent(err) || len(err.Error()) > 2048 || !strings.Contains(err.Error(), fmt.Sprintf("(%d bytes)", len("cannot parse ")+len(long))) {
		t.Fatalf("bad, with a long reason: %d bytes of error, want it cut short and its length said: %.200s", len(err.Error()), err)
	}
	m := msg("c", 3, "flaky")
	if err := ex.Handle(ctx, m); err == nil || IsPermanent(err) {
		t.Fatalf("flaky attempt 1: %v, want a transient error", err)
	}
	m.Attempt = 2
	if err := ex.Handle(ctx, m); err != nil {
		t.Fatalf("flaky attempt 2: %v", err)
	}
}

func TestExecCrashRestarts(t *testing.T) {
	var logs testlog.Buffer
	ex, em := newTestExec(t, 1, &logs)
	ctx := context.Background()
	pid := ex.children[0].cmd.Process.Pid
	err := ex.Handle(ctx, msg("c", 1, "crash"))
	if err == nil || IsPermanent(err) || !strings.Contains(err.Error(), "exited") {
		t.Fatalf("crash: %v, want a transient error saying the child exited", err)
	}
	if err := ex.Handle(ctx, msg("c", 1, "crash")); err != nil {
		t.Fatalf("retry after the crash: %v", err)
	}
	if newPid := ex.children[0].cmd.Process.Pid; newPid == pid {
		t.Fatalf("child pid %d unchanged after a crash", pid)
	}
	if got := em.recs["c"]; len(got) != 1 || got[0] != "survived" {
		t.Fatalf("records %v", got)
	}
	if !strings.Contains(logs.String(), "exec child restarted") {
		t.Errorf("no restart logged:\n%s", logs.String())
	}
}

func TestExecCancelKillsHangingChild(t *testing.T) {
	ex, _ := newTestExec(t, 1, nil)
	ctx, cancel := context.WithTimeout(context.Background(), 200*time.Millisecond)
	defer cancel()
	start := time.Now()
	if err := ex.Handle(ctx, msg("c", 1, "hang")); !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("hang: %v, want the context's error", err)
	}
	if d := time.Since(start); d > 5*time.Second {
		t.Fatalf("Handle returned %v after the cancel", d)
	}
	if err := ex.Handle(context.Background(), msg("c", 2, "after")); err != nil {
		t.Fatalf("after the hang: %v", err)
	}
}

// TestExecReplyBeforeExit: a child that writes its reply and exits at
// once has handled the message; its reply must count, even when the
// appliance reads it only after the child is gone. Otherwise the message
// is retried and its side effects run twice.
func TestExecReplyBeforeExit(t *testing.T) {
	ex, em := newTestExec(t, 1, nil)
	ex.beforeRead = func(c *child) { <-c.exited }
	for i := 1; i <= 3; i++ {
		if err := ex.Handle(context.Background(), msg("c", uint64(i), fmt.Sprint("last", i))); err != nil {
			t.Fatalf("message %d, answered before the child exited: %v", i, err)
		}
	}
	if got, want := em.recs["c"], []string{"parsed:last1", "parsed:last2", "parsed:last3"}; !slices.Equal(got, want) {
		t.Fatalf("records %q, want %q", got, want)
	}
}

func TestExecGarbageReply(t *testing.T) {
	ex, _ := newTestExec(t, 1, nil)
	err := ex.Handle(context.Background(), msg("c", 1, "garbage"))
	if err == nil || IsPermanent(err) || !strings.Contains(err.Error(), "protocol error") {
		t.Fatalf("garbage: %v, want a transient protocol error", err)
	}
	if err := ex.Handle(context.Background(), msg("c", 2, "ok")); err != nil {
		t.Fatalf("after garbage: %v", err)
	}
}

func TestExecStderrLogged(t *testing.T) {
	var logs testlog.Buffer
	ex, _ := newTestExec(t, 1, &logs)
	if err := ex.Handle(context.Background(), msg("c", 1, "log: hello from the child")); err != nil {
		t.Fatal(err)
	}
	wait.For(t, 5*time.Second, func() error {
		if l := logs.String(); !strings.Contains(l, "hello from the child") {
			return fmt.Errorf("stderr line not logged:\n%s", l)
		}
		return nil
	})
}

// TestExecLongStderrLine: a stderr line longer than a log line may be is
// logged cut short, and the child's stderr keeps being read: a reader
// that stopped would make the child's next write fail (a Go child dies of
// SIGPIPE), and every message retried on it crash it again.
func TestExecLongStderrLine(t *testing.T) {
	var logs testlog.Buffer
	ex, _ := newTestExec(t, 1, &logs)
	for i := 1; i <= 3; i++ {
		if err := ex.Handle(context.Background(), msg("c", uint64(i), "biglog")); err != nil {
			t.Fatalf("message %d: %v", i, err)
		}
	}
	if err := ex.Handle(context.Background(), msg("c", 4, "log: the last line")); err != nil {
		t.Fatal(err)
	}
	wait.For(t, 5*time.Second, func() error {
		l := logs.String()
		if !strings.Contains(l, "the last line") || strings.Count(l, "after the long line") != 3 || strings.Count(l, "truncated=true") != 3 {
			return fmt.Errorf("want 3 long lines logged cut short, each followed by its next line, then the last:\n%.2000s", l)
		}
		return nil
	})
}

// TestExecOutputOfAnotherAttempt: a message handled again after its
// record was stored (a retry after a timeout, a device's resend after a
// fault) may get another output from its child (a time it took from its
// clock). The stream keeps the first record; the message is done, not
// dead-lettered as if another message held its ID.
func TestExecOutputOfAnotherAttempt(t *testing.T) {
	nc := jetStreamConn(t)
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	pub, err := NewPublisher(ctx, nc, PublisherConfig{JetStream: true, Timeout: 5 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(pub.Close)
	ex, err := NewExec(ExecConfig{
		Command: []string{os.Args[0]},
		Env:     []string{"GORACE=atexit_sleep_ms=0", "EDGEGATE_EXEC_TEST_CHILD=1"},
	}, pub.Output)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ex.Close() })
	m := msg("ctl-stamp", 1, "stamp")
	for attempt := 1; attempt <= 2; attempt++ {
		m.Attempt = attempt
		if err := ex.Handle(ctx, m); err != nil {
			t.Fatalf("attempt %d: %v", attempt, err)
		}
	}
	js, err := jetstream.New(nc)
	if err != nil {
		t.Fatal(err)
	}
	st, err := js.Stream(ctx, StreamParsed)
	if err != nil {
		t.Fatal(err)
	}
	last, err := st.GetLastMsgForSubject(ctx, coord.ParsedSubject("ctl-stamp"))
	if err != nil {
		t.Fatal(err)
	}
	info, err := st.Info(ctx, jetstream.WithSubjectFilter(coord.ParsedSubject("ctl-stamp")))
	if err != nil {
		t.Fatal(err)
	}
	if n := info.State.Subjects[coord.ParsedSubject("ctl-stamp")]; string(last.Data) != "stamp-1" || n != 1 {
		t.Fatalf("%d records, the last %q: want the first attempt's record alone", n, last.Data)
	}
}

func TestExecMissingProgram(t *testing.T) {
	_, err := NewExec(ExecConfig{Command: []string{"/nonexistent/parse-logic"}}, nil)
	if err == nil || !strings.Contains(err.Error(), "/nonexistent/parse-logic") {
		t.Fatalf("NewExec of a missing program: %v, want an error naming it", err)
	}
	ex, _ := newTestExec(t, 2, nil)
	ex.Close()
	ex.Close()
}

// TestExecDocExamples runs the example children of docs/exec.md.
func TestExecDocExamples(t *testing.T) {
	doc, err := os.ReadFile("../docs/exec.md")
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	examples := map[string]string{"python": "", "go": ""}
	sc := bufio.NewScanner(bytes.NewReader(doc))
	lang, in := "", false
	for sc.Scan() {
		line := sc.Text()
		switch {
		case !in && (line == "```python" || line == "```go"):
			lang, in = strings.TrimPrefix(line, "```"), true
		case in && line == "```":
			in = false
		case in:
			examples[lang] += line + "\n"
		}
	}
	for lang, src := range examples {
		t.Run(lang, func(t *testing.T) {
			if src == "" {
				t.Fatalf("docs/exec.md has no %s example", lang)
			}
			var cmd []string
			switch lang {
			case "python":
				if _, err := exec.LookPath("python3"); err != nil {
					t.Skip("python3 not on PATH: the Python example is not run")
				}
				p := filepath.Join(dir, "child.py")
				os.WriteFile(p, []byte(src), 0o600)
				cmd = []string{"python3", p}
			case "go":
				p := filepath.Join(dir, "child", "main.go")
				os.MkdirAll(filepath.Dir(p), 0o700)
				os.WriteFile(p, []byte(src), 0o600)
				bin := filepath.Join(dir, "child-bin")
				build := exec.Command("go", "build", "-o", bin, p)
				build.Env = append(os.Environ(), "GOFLAGS=-mod=mod", "GO111MODULE=off")
				if out, err := build.CombinedOutput(); err != nil {
					t.Fatalf("build the Go example: %v\n%s", err, out)
				}
				cmd = []string{bin}
			}
			var em emitted
			ex, err := NewExec(ExecConfig{Command: cmd}, em.emit)
			if err != nil {
				t.Fatal(err)
			}
			defer ex.Close()
			ctx := context.Background()
			if err := ex.Handle(ctx, msg("doc-1", 1, `{"t": 21.5}`)); err != nil {
				t.Fatalf("valid JSON: %v", err)
			}
			if got := em.recs["doc-1"]; len(got) != 1 || !strings.Contains(got[0], `"seq": 1`) && !strings.Contains(got[0], `"seq":1`) {
				t.Fatalf("record %q: want the example's JSON with the seq", got)
			}
			if err := ex.Handle(ctx, msg("doc-1", 2, "not json")); !IsPermanent(err) {
				t.Fatalf("invalid JSON: %v, want a permanent error", err)
			}
		})
	}
}

// hangOnceCommand is a child that hangs on its first message, as a hung
// parser behind a wrapper script does: its first instance is a shell that
// starts a sleep (which inherits the pipes) and waits for it; every later
// instance is the test child. The shell records its start in mark.
func hangOnceCommand() []string {
	return []string{"/bin/sh", "-c",
		`if [ -e "$EDGEGATE_EXEC_TEST_HANG_MARK" ]; then exec "$0"; fi; : >"$EDGEGATE_EXEC_TEST_HANG_MARK"; sleep 3600; exit 0`,
		os.Args[0]}
}

// TestExecHungChildRestartedAfterTimeout: an exec child that never answers
// holds neither its controller nor its worker past parser.timeout. The
// attempt fails as a transient error, the child is killed with what it
// started (the sleep holding its pipes) and restarted, the message is
// retried and the rest of the batch handled; the worker is free again for
// the next controller.
func TestExecHungChildRestartedAfterTimeout(t *testing.T) {
	// Long enough for a restarted child to start and answer on a loaded
	// machine, under the race detector.
	const timeout = time.Second
	var logs testlog.Buffer
	var em emitted
	ex, err := NewExec(ExecConfig{
		Command:  hangOnceCommand(),
		Children: 1,
		Env: []string{"GORACE=atexit_sleep_ms=0", "EDGEGATE_EXEC_TEST_CHILD=1",
			"EDGEGATE_EXEC_TEST_HANG_MARK=" + filepath.Join(t.TempDir(), "hung")},
		RestartBackoff: 10 * time.Millisecond,
		Logger:         slog.New(slog.NewTextHandler(&logs, nil)),
	}, em.emit)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ex.Close() })
	hung := ex.children[0].cmd.Process.Pid
	p, store, _ := startPoolWith(t, Config{Workers: 1, Handler: ex, TTL: 10 * time.Second, Heartbeat: time.Second,
		Timeout: timeout, RetryMin: 10 * time.Millisecond})

	outcomes := make(chan coord.Outcome, 4)
	out := func(o coord.Outcome) { outcomes <- o }
	start := time.Now()
	if !p.Offer(assignment(t, store, p, "hung", 0, 1, 2, 3), out) {
		t.Fatal("a pool with a free worker refused an assignment")
	}
	e, _ := waitBatch(t, outcomes)
	if e.Done != 3 || !bytes.Equal(e.Statuses, []byte{byte(egp.StatusProcessed), byte(egp.StatusProcessed), byte(egp.StatusProcessed)}) {
		t.Fatalf("statuses %+v: want 3 processed, done 3", e)
	}
	if d := time.Since(start); d < timeout {
		t.Errorf("the batch took %v, less than the timeout %v: the child did not hang", d, timeout)
	}
	em.mu.Lock()
	got := em.recs["hung"]
	em.mu.Unlock()
	if !slices.Equal(got, []string{"parsed:x", "parsed:x", "parsed:x"}) {
		t.Errorf("records %q: want each message parsed once", got)
	}
	if pid := ex.children[0].cmd.Process.Pid; pid == hung {
		t.Errorf("child pid %d unchanged: the hung child was not restarted", pid)
	}
	if s := p.Stats(); s.TransientErrors < 1 {
		t.Errorf("stats %+v: want the timed-out attempt counted as a transient error", s)
	}
	if !strings.Contains(logs.String(), "exec child gave no reply in time") || !strings.Contains(logs.String(), "exec child restarted") {
		t.Errorf("the kill and the restart are not logged:\n%s", logs.String())
	}
	waitGroupGone(t, hung)

	waitFree(t, p, 1, "the worker stayed busy after the batch")
	if !p.Offer(assignment(t, store, p, "next", 0, 1), out) {
		t.Fatal("the worker did not take the next controller's batch")
	}
	if e, _ := waitBatch(t, outcomes); e.Controller != "next" || e.Done != 1 {
		t.Fatalf("statuses %+v: want next's message handled", e)
	}
}

// waitGroupGone waits until no live process is left in process group
// pgid (zombies count as gone: they hold no pipe and do no work).
func waitGroupGone(t *testing.T, pgid int) {
	t.Helper()
	if _, err := os.Stat("/proc/self/stat"); err != nil {
		t.Logf("no /proc: the hung child's process group is not checked")
		return
	}
	wait.For(t, 10*time.Second, func() error {
		if live := groupMembers(pgid); len(live) > 0 {
			return fmt.Errorf("processes %v of the hung child's group %d still run", live, pgid)
		}
		return nil
	})
}

// groupMembers lists the processes of group pgid that have not exited,
// from /proc/<pid>/stat ("pid (comm) state ppid pgrp ...").
func groupMembers(pgid int) []int {
	dirs, _ := os.ReadDir("/proc")
	var live []int
	for _, d := range dirs {
		pid, err := strconv.Atoi(d.Name())
		if err != nil {
			continue
		}
		b, err := os.ReadFile("/proc/" + d.Name() + "/stat")
		if err != nil {
			continue // exited meanwhile
		}
		i := bytes.LastIndexByte(b, ')')
		if i < 0 {
			continue
		}
		f := strings.Fields(string(b[i+1:]))
		if len(f) < 3 || f[0] == "Z" || f[0] == "X" {
			continue
		}
		if g, _ := strconv.Atoi(f[2]); g == pgid {
			live = append(live, pid)
		}
	}
	return live
}

// TestHandlerDeadline: a Go handler's context has the message's deadline
// (parser.timeout) and is done when it passes, and so is a context derived
// from it; the attempt then counts as a transient error and the message is
// retried, and the next message gets a fresh deadline.
func TestHandlerDeadline(t *testing.T) {
	const timeout = 200 * time.Millisecond
	type seen struct {
		seq     uint64
		attempt int
		left    time.Duration // until the context's deadline, at the call
		err     error         // the context's error when the call returned
	}
	calls := make(chan seen, 16)
	h := HandlerFunc(func(ctx context.Context, m *Message) error {
		s := seen{seq: m.Seq, attempt: m.Attempt, left: -1}
		if dl, ok := ctx.Deadline(); ok {
			s.left = time.Until(dl)
		}
		if m.Seq == 1 && m.Attempt == 1 {
			// Hung until the deadline, waiting on a context derived from
			// the handler's, as the publisher's own timeout is.
			d, cancel := context.WithTimeout(ctx, time.Hour)
			<-d.Done()
			if err := d.Err(); !errors.Is(err, context.DeadlineExceeded) {
				t.Errorf("the derived context ended with %v, want the deadline", err)
			}
			cancel()
		}
		s.err = ctx.Err()
		calls <- s
		return s.err
	})
	p, store, _ := startPoolWith(t, Config{Workers: 1, Handler: h, TTL: 10 * time.Second, Heartbeat: time.Second,
		Timeout: timeout, RetryMin: 10 * time.Millisecond})
	outcomes := make(chan coord.Outcome, 4)
	if !p.Offer(assignment(t, store, p, "ctl", 0, 1, 2), func(o coord.Outcome) { outcomes <- o }) {
		t.Fatal("a pool with a free worker refused an assignment")
	}
	e, _ := waitBatch(t, outcomes)
	if e.Done != 2 || !bytes.Equal(e.Statuses, []byte{byte(egp.StatusProcessed), byte(egp.StatusProcessed)}) {
		t.Fatalf("statuses %+v: want 2 processed, done 2", e)
	}
	close(calls)
	var got []seen
	for s := range calls {
		got = append(got, s)
	}
	if len(got) != 3 {
		t.Fatalf("calls %+v: want seq 1 twice (timed out, retried), then seq 2", got)
	}
	for i, want := range []struct {
		seq     uint64
		attempt int
		err     error
	}{{1, 1, context.DeadlineExceeded}, {1, 2, nil}, {2, 1, nil}} {
		s := got[i]
		if s.seq != want.seq || s.attempt != want.attempt || !errors.Is(s.err, want.err) || (want.err == nil) != (s.err == nil) {
			t.Errorf("call %d: %+v, want seq %d attempt %d with context error %v", i, s, want.seq, want.attempt, want.err)
		}
		if s.left <= 0 || s.left > timeout {
			t.Errorf("call %d: deadline %v away, want within the timeout %v", i, s.left, timeout)
		}
	}
	if s := p.Stats(); s.TransientErrors != 1 {
		t.Errorf("stats %+v: want 1 transient error", s)
	}
}

// TestExecChildEnvironment: an exec child sees the basics (PATH) and what
// parser.exec_env gives it, never the appliance's own variables, which
// hold secrets (a Redis URL with its password, the NATS password).
func TestExecChildEnvironment(t *testing.T) {
	const secret = "s3cret-in-the-appliance-env"
	t.Setenv("EDGEGATE_LEASE_REDIS", "redis://:"+secret+"@redis.invalid:6379/0")
	t.Setenv("EDGEGATE_NATS_PASSWORD", secret)
	t.Setenv("EDGEGATE_EXEC_TEST_PASSED", "from-the-appliance")
	t.Setenv("PATH", "/usr/local/bin:/usr/bin:/bin")
	ex, err := NewExec(ExecConfig{
		Command: []string{os.Args[0]},
		Env: []string{"GORACE=atexit_sleep_ms=0", "EDGEGATE_EXEC_TEST_CHILD=1",
			"EDGEGATE_EXEC_TEST_PASSED", "EDGEGATE_EXEC_TEST_UNSET", "EDGEGATE_EXEC_TEST_SET=a=b"},
	}, (&emitted{}).emit)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ex.Close() })
	if err := ex.Handle(context.Background(), msg("c", 1, "ok")); err != nil {
		t.Fatal(err)
	}
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/environ", ex.children[0].cmd.Process.Pid))
	if err != nil {
		t.Skipf("the child's environment cannot be read: %v", err)
	}
	env := map[string]string{}
	for _, kv := range strings.Split(strings.TrimRight(string(b), "\x00"), "\x00") {
		k, v, _ := strings.Cut(kv, "=")
		env[k] = v
	}
	if bytes.Contains(b, []byte(secret)) {
		t.Errorf("the child sees the appliance's secret: %q", env)
	}
	for _, k := range []string{"EDGEGATE_LEASE_REDIS", "EDGEGATE_NATS_PASSWORD", "EDGEGATE_EXEC_TEST_UNSET"} {
		if v, ok := env[k]; ok {
			t.Errorf("the child has %s=%q", k, v)
		}
	}
	for k, want := range map[string]string{
		"PATH": "/usr/local/bin:/usr/bin:/bin", "EDGEGATE_EXEC_TEST_PASSED": "from-the-appliance", "EDGEGATE_EXEC_TEST_SET": "a=b",
	} {
		if env[k] != want {
			t.Errorf("the child has %s=%q, want %q", k, env[k], want)
		}
	}
}
