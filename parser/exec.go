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
	// Env is added to the appliance's environment for the children.
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
// and its message retried (a transient error), never dead-lettered.
type Exec struct {
	cfg  ExecConfig
	emit Emit
	log  *slog.Logger
	free chan *child

	mu       sync.Mutex
	children []*child
	closed   bool
	wg       sync.WaitGroup // stderr readers and waiters
}

type child struct {
	idx     int
	cmd     *exec.Cmd
	stdin   io.WriteCloser
	stdout  *bufio.Reader
	exited  chan struct{}
	buf     []byte
	backoff time.Duration
	broken  bool // needs a restart before use
	failAt  time.Time
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
	e := &Exec{cfg: cfg, emit: emit, log: cfg.Logger, free: make(chan *child, cfg.Children)}
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
	cmd.SysProcAttr = childAttr() // the child dies with the appliance
	cmd.Dir = e.cfg.Dir
	cmd.Env = append(childEnviron(), e.cfg.Env...)
	stdin, err := cmd.StdinPipe()
	if err != nil {
		return fmt.Errorf("parser: exec: %w", err)
	}
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		return fmt.Errorf("parser: exec: %w", err)
	}
	stderr, err := cmd.StderrPipe()
	if err != nil {
		return fmt.Errorf("parser: exec: %w", err)
	}
	if err := cmd.Start(); err != nil {
		return fmt.Errorf("parser: exec: start %q: %w", e.cfg.Command, err)
	}
	c.cmd, c.stdin, c.stdout, c.broken = cmd, stdin, bufio.NewReaderSize(stdout, 64<<10), false
	c.exited = make(chan struct{})
	log := e.log.With("child", c.idx, "pid", cmd.Process.Pid)
	e.wg.Add(1)
	go func(exited chan struct{}) {
		defer e.wg.Done()
		sc := bufio.NewScanner(stderr)
		sc.Buffer(make([]byte, 4096), 64<<10)
		for sc.Scan() {
			log.Warn("exec child: " + sc.Text())
		}
		err := cmd.Wait()
		close(exited)
		e.mu.Lock()
		closed := e.closed
		e.mu.Unlock()
		if !closed {
			log.Warn("parser: exec child exited", "err", err)
		}
	}(c.exited)
	return nil
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
	if c.broken {
		if err := e.restart(ctx, c); err != nil {
			return err
		}
	}
	st, body, err := e.roundTrip(ctx, c, m)
	if err != nil {
		e.kill(c)
		if ctx.Err() != nil {
			return ctx.Err()
		}
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
		return fmt.Errorf("exec child %d: %s", c.idx, body)
	default:
		return Permanent(fmt.Errorf("exec child %d: %s", c.idx, body))
	}
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
		e.kill(c) // its stream state is unknown now
		<-done
		return 0, nil, ctx.Err()
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
	c.cmd.Process.Kill()
	<-c.exited
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
// after 2s is killed. Safe to call more than once.
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
			c.cmd.Process.Kill()
			<-c.exited
		}
	}
	e.wg.Wait()
	return nil
}

// childEnviron is the appliance's environment without systemd's
// notification variables: a child must not speak for the appliance.
func childEnviron() []string {
	var env []string
	for _, kv := range os.Environ() {
		if strings.HasPrefix(kv, "NOTIFY_SOCKET=") || strings.HasPrefix(kv, "WATCHDOG_") {
			continue
		}
		env = append(env, kv)
	}
	return env
}
