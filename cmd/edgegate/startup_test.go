package main

import (
	"bytes"
	"context"
	"errors"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/edgegate/edgegate/appliance"
)

// loopbackArgs are run flags for an appliance on free loopback ports with
// its data in dir.
func loopbackArgs(dir string) []string {
	return []string{"--name", "startup", "--data_dir", dir, "--devices.listen", "127.0.0.1:0",
		"--nats.listen", "127.0.0.1:0", "--http.listen", ""}
}

// TestRunFailsWithTheCause: `edgegate run` that cannot start says why (the
// data directory, the port and what is wrong with it), not that NATS was
// not ready in time. Tests run as root, who may write anywhere a mode bit
// forbids, so the unwritable directories are a path under a regular file
// and a directory of /proc, where nobody may create files.
func TestRunFailsWithTheCause(t *testing.T) {
	file := filepath.Join(t.TempDir(), "file")
	if err := os.WriteFile(file, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	held, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer held.Close()
	jsBlocked := t.TempDir()
	if err := os.WriteFile(filepath.Join(jsBlocked, "jetstream"), nil, 0o600); err != nil {
		t.Fatal(err)
	}
	for _, tt := range []struct {
		name string
		args []string
		want []string
	}{
		{"data_dir under a file", loopbackArgs(filepath.Join(file, "data")), []string{"data_dir", file, "not a directory"}},
		{"data_dir not writable", loopbackArgs("/proc/self"), []string{"data_dir /proc/self is not writable"}},
		{"JetStream store blocked", loopbackArgs(jsBlocked), []string{"JetStream", filepath.Join(jsBlocked, "jetstream"), "not a directory"}},
		{"NATS port taken", append(loopbackArgs(t.TempDir()), "--nats.listen", held.Addr().String()), []string{held.Addr().String(), "address already in use"}},
		{"route port taken", append(loopbackArgs(t.TempDir()), "--nats.cluster.listen", held.Addr().String(), "--nats.jetstream=false", "--lease.redis", "redis://127.0.0.1:1/0"),
			[]string{"router port", "address already in use"}},
	} {
		t.Run(tt.name, func(t *testing.T) {
			var out, errOut bytes.Buffer
			err := newApp(appliance.Run, &out, &errOut).RunContext(context.Background(), append([]string{"edgegate", "run"}, tt.args...))
			if err == nil {
				t.Fatal("run started")
			}
			for _, want := range tt.want {
				if !strings.Contains(err.Error(), want) {
					t.Errorf("error %q lacks %q", err, want)
				}
			}
			if strings.Contains(err.Error(), "not ready within") {
				t.Errorf("error %q is a timeout, not the cause", err)
			}
		})
	}
}

// TestRunFailsWithTheCauseProcess: the binary with its NATS port taken
// exits non-zero and says why on stderr.
func TestRunFailsWithTheCauseProcess(t *testing.T) {
	if testing.Short() {
		t.Skip("long: builds the binary")
	}
	held, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer held.Close()
	cmd := exec.Command(edgegateBinary(t), append([]string{"run"}, append(loopbackArgs(t.TempDir()), "--nats.listen", held.Addr().String())...)...)
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	err = cmd.Run()
	var exit *exec.ExitError
	if !errors.As(err, &exit) || exit.ExitCode() == 0 {
		t.Fatalf("edgegate run with its port taken: %v, want a non-zero exit", err)
	}
	last := lastLine(stderr.String())
	for _, want := range []string{"edgegate: ", held.Addr().String(), "address already in use"} {
		if !strings.Contains(last, want) {
			t.Errorf("last line of stderr %q lacks %q", last, want)
		}
	}
}
