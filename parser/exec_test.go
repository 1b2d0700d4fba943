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
	"strings"
	"sync"
	"testing"
	"time"
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

type logBuf struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (l *logBuf) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

func (l *logBuf) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}

func newTestExec(t *testing.T, children int, logs *logBuf) (*Exec, *emitted) {
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
	var logs logBuf
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
	var logs logBuf
	ex, _ := newTestExec(t, 1, &logs)
	if err := ex.Handle(context.Background(), msg("c", 1, "log: hello from the child")); err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(5 * time.Second)
	for !strings.Contains(logs.String(), "hello from the child") {
		if time.Now().After(deadline) {
			t.Fatalf("stderr line not logged:\n%s", logs.String())
		}
		time.Sleep(10 * time.Millisecond)
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
