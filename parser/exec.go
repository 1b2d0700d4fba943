package parser

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/exec"
	"strings"
	"sync"
	"time"
)

// ExecConfig configures the exec handler.
type ExecConfig struct {
	// Command is the program and its arguments. Required.
	Command []string
	// Children is the number of child processes, one per parser worker.
	// Zero means 1.
	Children int
	// Dir is the children's working directory. Empty means the current one.
	Dir string
	// Env is what the children's environment holds beyond the basics
	// (PATH, HOME, USER, LOGNAME, LANG, LANGUAGE, LC_*, TZ, TMPDIR, as the
	// appliance has them): "NAME=value", or "NAME" for the appliance's own
	// value of NAME (left out when it has none). The rest of the
	// appliance's environment is not passed: it may hold secrets (a Redis
	// URL with its password, the NATS password) that parse logic has no
	// use for.
	Env []string
	// MaxReply is the largest reply body. Zero means 16 MiB.
	MaxReply int
	// RestartBackoff is the wait before restarting a crashed child, doubling
	// up to 5s while it keeps crashing. Zero means 100ms.
	RestartBackoff time.Duration
	// Logger receives the children's stderr lines and restarts. Nil means
	// discard.
	Logger *slog.Logger
}

// Emit publishes a handler's output record for m.
type Emit func(ctx context.Context, m *Message, out []byte) error

// Exec is the exec handler: long-lived child processes speaking the framed
// protocol of docs/exec.md on stdin/stdout. A crashed child is restarted
// and its message retried (a transient error), never dead-lettered; so is
// a child that does not answer before the handler's context is done (the
// pool's per-attempt deadline, parser.timeout): it is killed, with every
// process it started in its process group.
type Exec struct {
	cfg  ExecConfig
	emit Emit
	log  *slog.Logger
	free chan *child
	env  []string // the children's environment

	mu       sync.Mutex
	children []*child
	closed   bool
	stderrs  map[*os.File]bool // read ends of the children's stderr, until their readers are done
	waiters  sync.WaitGroup    // cmd.Wait of every child started
	readers  sync.WaitGroup    // stderr readers

	beforeRead func(*child) // test hook: runs after a request is written
}

type child struct {
	idx    int
	cmd    *exec.Cmd
	stdin  io.WriteCloser
	stdout *bufio.Reader
	// stdoutFile is stdout's read end, closed when the child is done with.
	stdoutFile *os.File
	exited     chan struct{}
	buf        []byte
	backoff    time.Duration
	broken     bool // needs a restart before use
	failAt     time.Time
}

// NewExec starts the children: a missing program is an error now, not at
// the first message.
func NewExec(cfg ExecConfig, emit Emit) (*Exec, error) {
	if len(cfg.Command) == 0 {
		return nil, errors.New("parser: exec: no command")
	}
	if cfg.Children <= 0 {
		cfg.Children = 1
	}
	if cfg.MaxReply <= 0 {
		cfg.MaxReply = DefaultMaxReply
	}
	if cfg.RestartBackoff <= 0 {
		cfg.RestartBackoff = 100 * time.Millisecond
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	env, err := ChildEnv(os.Environ(), cfg.Env)
	if err != nil {
		return nil, err
	}
	e := &Exec{cfg: cfg, emit: emit, log: cfg.Logger, free: make(chan *child, cfg.Children), env: env,
		stderrs: make(map[*os.File]bool)}
	for i := 0; i < cfg.Children; i++ {
		c := &child{idx: i, backoff: cfg.RestartBackoff}
		if err := e.start(c); err != nil {
			e.Close()
			return nil, err
		}
		e.children = append(e.children, c)
		e.free <- c
	}
	return e, nil
}

func (e *Exec) start(c *child) error {
	e.mu.Lock()
	defer e.mu.Unlock()
	if e.closed {
		return errors.New("parser: exec: closed")
	}
	cmd := exec.Command(e.cfg.Command[0], e.cfg.Command[1:]...)
	// The child dies with the appliance, and leads a process group of its
	// own, which kill ends as a whole.
	cmd.SysProcAttr = childAttr()
	cmd.Dir = e.cfg.Dir
	cmd.Env = e.env
	stdin, err := cmd.StdinPipe()
	if err != nil {
		return fmt.Errorf("parser: exec: %w", err)
	}
	// Pipes of our own for stdout and stderr, not StdoutPipe and
	// StderrPipe, which cmd.Wait closes as soon as the child exits: a reply
	// written just before the exit must still be read, and the stderr
	// reader goes on to the last line. The child counts as exited as soon
	// as it is, even when something it started (outside its group) still
	// holds a pipe; kill and Close close the read ends.
	stdout, stdoutW, err := os.Pipe()
	if err != nil {
		return fmt.Errorf("parser: exec: %w", err)
	}
	cmd.Stdout = stdoutW
	stderr, stderrW, err := os.Pipe()
	if err != nil {
		stdout.Close()
		stdoutW.Close()
		return fmt.Errorf("parser: exec: %w", err)
	}
	cmd.Stderr = stderrW
	err = cmd.Start()
	stdoutW.Close() // the child has its own copies
	stderrW.Close()
	if err != nil {
		stdout.Close()
		stderr.Close()
		return fmt.Errorf("parser: exec: start %q: %w", e.cfg.Command, err)
	}
	c.cmd, c.stdin, c.stdoutFile, c.broken = cmd, stdin, stdout, false
	c.stdout = bufio.NewReaderSize(stdout, 64<<10)
	c.exited = make(chan struct{})
	log := e.log.With("child", c.idx, "pid", cmd.Process.Pid)
	e.stderrs[stderr] = true
	e.readers.Go(func() {
		logStderr(stderr, log)
		e.mu.Lock()
		delete(e.stderrs, stderr)
		e.mu.Unlock()
		stderr.Close()
	})
	exited := c.exited
	e.waiters.Go(func() {
		err := cmd.Wait()
		close(exited)
		e.mu.Lock()
		closed := e.closed
		e.mu.Unlock()
		if !closed {
			log.Warn("parser: exec child exited", "err", err)
		}
	})
	return nil
}

// maxStderrLine is the longest stderr line logged whole.
const maxStderrLine = 64 << 10

// logStderr logs r's lines at warn until r ends. A line longer than
// maxStderrLine is logged cut short, marked truncated, and the rest of it
// skipped: the reader must go on, or the child's next write to stderr
// fails (a Go child dies of SIGPIPE).
func logStderr(r io.Reader, log *slog.Logger) {
	br := bufio.NewReaderSize(r, maxStderrLine)
	for {
		line, err := br.ReadSlice('\n')
		if errors.Is(err, bufio.ErrBufferFull) {
			log.Warn("exec child: "+string(line), "truncated", true)
			for errors.Is(err, bufio.ErrBufferFull) {
				_, err = br.ReadSlice('\n')
			}
		} else if len(line) > 0 {
			log.Warn("exec child: " + strings.TrimRight(string(line), "\r\n"))
		}
		if err != nil {
			return
		}
	}
}

// Handle implements Handler.
func (e *Exec) Handle(ctx context.Context, m *Message) error {
	var c *child
	select {
	case c = <-e.free:
	case <-ctx.Done():
		return ctx.Err()
	}
	defer func() { e.free <- c }()
	if !c.broken {
		select {
		case <-c.exited:
			// It exited between messages (after its last reply, or
			// killed by someone else): start another rather than fail
			// this message on it.
			e.kill(c)
		default:
		}
	}
	if c.broken {
		if err := e.restart(ctx, c); err != nil {
			return err
		}
	}
	st, body, err := e.roundTrip(ctx, c, m)
	if err != nil {
		e.kill(c)
		return err
	}
	if err := ctx.Err(); err != nil {
		return err // the lease ran out while the child worked
	}
	c.backoff = e.cfg.RestartBackoff
	switch st {
	case ExecOK:
		return e.emit(ctx, m, body)
	case ExecSkip:
		return nil
	case ExecTransient:
		return fmt.Errorf("exec child %d: %s", c.idx, reason(body))
	default:
		return Permanent(fmt.Errorf("exec child %d: %s", c.idx, reason(body)))
	}
}

// maxReason is the longest reason of a child's error kept whole: it goes
// into log lines and a dead letter's header, and a child may quote a
// whole payload in it.
const maxReason = 1024

// reason returns a child's error reason, cut short past maxReason.
func reason(body []byte) string {
	if len(body) <= maxReason {
		return string(body)
	}
	return fmt.Sprintf("%s... (%d bytes)", strings.ToValidUTF8(string(body[:maxReason]), ""), len(body))
}

// roundTrip writes the request and reads the reply; ctx cancels the wait.
func (e *Exec) roundTrip(ctx context.Context, c *child, m *Message) (byte, []byte, error) {
	type reply struct {
		st   byte
		body []byte
		err  error
	}
	c.buf = AppendExecRequest(c.buf[:0], m)
	done := make(chan reply, 1)
	go func() {
		if _, err := c.stdin.Write(c.buf); err != nil {
			done <- reply{err: e.childErr(c, "write", err)}
			return
		}
		if e.beforeRead != nil {
			e.beforeRead(c)
		}
		st, body, err := ReadExecReply(c.stdout, e.cfg.MaxReply)
		if err != nil {
			err = e.childErr(c, "read", err)
		}
		done <- reply{st, body, err}
	}()
	select {
	case r := <-done:
		return r.st, r.body, r.err
	case <-ctx.Done():
		pid := c.cmd.Process.Pid
		e.kill(c) // its stream state is unknown now
		<-done
		err := ctx.Err()
		if errors.Is(err, context.DeadlineExceeded) {
			e.log.Warn("parser: exec child gave no reply in time, killed", "child", c.idx, "pid", pid,
				"controller", m.Controller, "seq", m.Seq, "attempt", m.Attempt)
		}
		return 0, nil, fmt.Errorf("exec child %d (pid %d) killed, no reply: %w", c.idx, pid, err)
	}
}

// childErr describes a failed exchange with c, waiting briefly for its exit
// status when it died.
func (e *Exec) childErr(c *child, op string, err error) error {
	pid := c.cmd.Process.Pid
	if errors.Is(err, errExecProto) {
		return fmt.Errorf("exec child %d (pid %d): %w", c.idx, pid, err)
	}
	select {
	case <-c.exited:
		return fmt.Errorf("exec child %d (pid %d) exited: %v", c.idx, pid, c.cmd.ProcessState)
	case <-time.After(time.Second):
		return fmt.Errorf("exec child %d (pid %d): %s: %w", c.idx, pid, op, err)
	}
}

// kill ends c and marks it for a restart before its next use.
func (e *Exec) kill(c *child) {
	if c.broken {
		return
	}
	c.broken = true
	c.failAt = time.Now()
	c.stdin.Close()
	killGroup(c.cmd.Process)
	<-c.exited
	c.stdoutFile.Close()
}

// restart starts c again after its backoff.
func (e *Exec) restart(ctx context.Context, c *child) error {
	if wait := time.Until(c.failAt.Add(c.backoff)); wait > 0 {
		if !sleep(ctx, wait) {
			return ctx.Err()
		}
	}
	c.backoff = min(2*c.backoff, 5*time.Second)
	if err := e.start(c); err != nil {
		c.failAt = time.Now()
		return err // transient: the message is retried
	}
	e.log.Info("parser: exec child restarted", "child", c.idx, "pid", c.cmd.Process.Pid)
	return nil
}

// Close stops the children: stdin is closed, and a child still running
// after 2s is killed with its process group. Their stderr is read to the
// end, for at most 2s more. Safe to call more than once.
func (e *Exec) Close() error {
	e.mu.Lock()
	if e.closed {
		e.mu.Unlock()
		return nil
	}
	e.closed = true
	children := e.children
	e.mu.Unlock()
	for _, c := range children {
		if c.cmd == nil || c.broken {
			continue
		}
		c.stdin.Close()
		select {
		case <-c.exited:
		case <-time.After(2 * time.Second):
			killGroup(c.cmd.Process)
			<-c.exited
		}
		c.stdoutFile.Close()
	}
	e.waiters.Wait()
	read := make(chan struct{})
	go func() { e.readers.Wait(); close(read) }()
	select {
	case <-read:
	case <-time.After(2 * time.Second):
		// Something a child started outside its group holds a stderr.
		e.mu.Lock()
		for f := range e.stderrs {
			f.Close()
		}
		e.mu.Unlock()
		<-read
	}
	return nil
}

// baseEnv are the variables of the appliance's environment every child
// gets: what programs need to run and to read and write text right, and
// nothing that could hold a secret. An entry ending in '_' is a prefix.
var baseEnv = []string{"PATH", "HOME", "USER", "LOGNAME", "LANG", "LANGUAGE", "LC_", "TZ", "TMPDIR"}

// defaultPath is the children's PATH when the appliance has none.
const defaultPath = "/usr/local/bin:/usr/bin:/bin"

// ChildEnv returns an exec child's environment given the appliance's
// (environ, as os.Environ) and ExecConfig.Env (extra): the basics of
// environ, then every entry of extra, "NAME=value" as it is and "NAME" as
// environ has it (left out when environ has no NAME). A later entry of a
// name wins.
func ChildEnv(environ, extra []string) ([]string, error) {
	own := make(map[string]string, len(environ))
	var env []string
	hasPath := false
	for _, kv := range environ {
		name, _, ok := strings.Cut(kv, "=")
		if !ok {
			continue
		}
		own[name] = kv
		for _, b := range baseEnv {
			if name == b || strings.HasSuffix(b, "_") && strings.HasPrefix(name, b) {
				env = append(env, kv)
				hasPath = hasPath || name == "PATH"
				break
			}
		}
	}
	if !hasPath {
		env = append(env, "PATH="+defaultPath)
	}
	for _, e := range extra {
		name, _, hasValue := strings.Cut(e, "=")
		if name == "" || strings.ContainsRune(e, 0) {
			return nil, fmt.Errorf("parser: exec: environment entry %q: want NAME=value or NAME", e)
		}
		if hasValue {
			env = append(env, e)
		} else if kv, ok := own[name]; ok {
			env = append(env, kv)
		}
	}
	return env, nil
}
