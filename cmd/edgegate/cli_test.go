package main

import (
	"bytes"
	"context"
	"encoding/json"
	"log/slog"
	"strings"
	"testing"

	"github.com/edgegate/edgegate/appliance"
)

// noRun is a run function that fails the test: nothing may start.
func noRun(t *testing.T) func(context.Context, appliance.Config) error {
	return func(context.Context, appliance.Config) error {
		t.Error("the appliance was started")
		return nil
	}
}

// TestCheckConfig: check-config accepts what run accepts, printing
// "configuration OK", and refuses what run refuses with the same error,
// without starting anything.
func TestCheckConfig(t *testing.T) {
	good := writeFile(t, "name: ok\nparser:\n  workers: 2\nlog:\n  format: json\n")
	var out, errOut bytes.Buffer
	if err := newApp(noRun(t), &out, &errOut).Run([]string{"edgegate", "check-config", "--config", good, "--lease.ttl", "9s"}); err != nil {
		t.Fatalf("check-config of a good file: %v", err)
	}
	if out.String() != "configuration OK\n" {
		t.Errorf("check-config printed %q, want \"configuration OK\\n\"", out.String())
	}
	for _, args := range [][]string{
		{"--config", writeFile(t, "devices:\n  lisen: 1.2.3.4:5\n")},
		{"--config", writeFile(t, "lease:\n  ttl: five\n")},
		{"--config", "/nonexistent/edgegate.yaml"},
		{"--parser.workers", "many"},
		{"--lease.heartbeat", "4s"},
		{"--nats.cluster.listen", "127.0.0.1:6222"},
		{"--log.format", "xml"},
	} {
		runErr := newApp(func(context.Context, appliance.Config) error { return nil }, &out, &errOut).Run(append([]string{"edgegate", "run"}, args...))
		checkErr := newApp(noRun(t), &out, &errOut).Run(append([]string{"edgegate", "check-config"}, args...))
		if runErr == nil || checkErr == nil || runErr.Error() != checkErr.Error() {
			t.Errorf("%v: run says %v, check-config says %v: want the same error", args, runErr, checkErr)
		}
	}
}

// TestVersionFlag: `edgegate --version` prints what `edgegate version`
// prints.
func TestVersionFlag(t *testing.T) {
	var flag, cmd bytes.Buffer
	if err := newApp(noRun(t), &flag, &flag).Run([]string{"edgegate", "--version"}); err != nil {
		t.Fatal(err)
	}
	if err := newApp(noRun(t), &cmd, &cmd).Run([]string{"edgegate", "version"}); err != nil {
		t.Fatal(err)
	}
	if flag.String() != cmd.String() || !strings.HasPrefix(flag.String(), "edgegate ") {
		t.Errorf("--version printed %q, version %q", flag.String(), cmd.String())
	}
	var out bytes.Buffer
	if err := newApp(noRun(t), &out, &out).Run([]string{"edgegate", "chek-config"}); err == nil || !strings.Contains(err.Error(), `"chek-config"`) {
		t.Errorf("an unknown command: %v, want an error naming it", err)
	}
}

// TestStartLine: run logs the version and the effective configuration in
// one line, in the configured format, without the Redis password.
func TestStartLine(t *testing.T) {
	var out, errOut bytes.Buffer
	app := newApp(func(context.Context, appliance.Config) error { return errRecorded }, &out, &errOut)
	err := app.Run([]string{"edgegate", "run", "--log.format", "json", "--name", "start",
		"--lease.redis", "redis://edge:s3cret@127.0.0.1:6379/0", "--parser.workers", "3"})
	if err != errRecorded {
		t.Fatalf("run: %v", err)
	}
	if strings.Contains(errOut.String(), "s3cret") {
		t.Errorf("the start line shows the Redis password: %s", errOut.String())
	}
	var line map[string]any
	if err := json.Unmarshal([]byte(lastLine(errOut.String())), &line); err != nil {
		t.Fatalf("start line %q: %v", errOut.String(), err)
	}
	def := appliance.DefaultConfig()
	for k, v := range map[string]any{
		"msg": "edgegate starting", "version": version, "name": "start", "devices": def.Devices.Listen,
		"nats": def.NATS.Listen, "http": def.HTTP.Listen, "lease_store": "redis standalone",
		"redis": "redis://edge:xxxxx@127.0.0.1:6379/0", "workers": float64(3), "handler": "publish",
	} {
		if line[k] != v {
			t.Errorf("start line %s = %v, want %v", k, line[k], v)
		}
	}
	for _, k := range []string{"time", "commit", "go", "nats_server"} {
		if line[k] == nil {
			t.Errorf("start line lacks %s: %v", k, line)
		}
	}
}

func TestRedisLevel(t *testing.T) {
	for msg, want := range map[string]slog.Level{
		"redis: connection pool: failed to dial after 5 attempts: dial tcp 127.0.0.1:6379: connect: connection refused": slog.LevelWarn,
		`sentinel: GetMasterAddrByName name="m" failed: EOF`:                                                            slog.LevelWarn,
		`sentinel: new master="m" addr="127.0.0.1:6380"`:                                                                slog.LevelInfo,
		"addIdleConn panic: boom": slog.LevelError,
	} {
		if got := redisLevel(msg); got != want {
			t.Errorf("redisLevel(%q) = %v, want %v", msg, got, want)
		}
	}
	var buf bytes.Buffer
	redisLogger{slog.New(slog.NewTextHandler(&buf, nil))}.Printf(context.Background(), "redis: discarding bad PubSub connection: %v\n", "EOF")
	if got := buf.String(); !strings.Contains(got, `level=WARN msg="redis: discarding bad PubSub connection: EOF"`) {
		t.Errorf("go-redis line logged as %q", got)
	}
}

// lastLine returns the last line of s.
func lastLine(s string) string {
	lines := strings.Split(strings.TrimSpace(s), "\n")
	return lines[len(lines)-1]
}
