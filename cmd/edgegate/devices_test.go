package main

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/edgegate/edgegate/device"
	"github.com/edgegate/edgegate/egp"
)

// TestDevicesCommand: `devices add` prints a new token once and keeps
// only its hash, in a file an appliance reads: the device gets in with
// the token and not without. The same ID again is refused unless
// --replace; list shows no token; remove takes the device out. The file
// keeps its comments and mode; a new one is 0640.
func TestDevicesCommand(t *testing.T) {
	dir := t.TempDir()
	file := filepath.Join(dir, "devices.tokens")
	other := sha256.Sum256([]byte("site secret"))
	if err := os.WriteFile(file, []byte("# site A\nsensor-* sha256:"+hex.EncodeToString(other[:])+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	run := func(args ...string) (string, error) {
		t.Helper()
		var out, errOut bytes.Buffer
		err := newApp(nil, &out, &errOut).Run(append([]string{"edgegate", "devices"}, args...))
		return strings.TrimSpace(out.String()), err
	}

	token, err := run("add", "pump-1", "--tokens", file)
	if err != nil {
		t.Fatal(err)
	}
	sum := sha256.Sum256([]byte(token))
	want := "# site A\nsensor-* sha256:" + hex.EncodeToString(other[:]) + "\npump-1 sha256:" + hex.EncodeToString(sum[:]) + "\n"
	if b, _ := os.ReadFile(file); string(b) != want {
		t.Errorf("token file after add:\n%s\nwant:\n%s", b, want)
	}
	if fi, _ := os.Stat(file); fi.Mode().Perm() != 0o600 {
		t.Errorf("the token file's mode became %v, want it kept (0600)", fi.Mode().Perm())
	}
	if _, err := run("add", "--tokens", file, "pump-1"); err == nil || !strings.Contains(err.Error(), "enrolled already") {
		t.Errorf("a second add of pump-1: %v, want a refusal", err)
	}
	token2, err := run("add", "--replace", "pump-1", "--tokens", file)
	if err != nil {
		t.Fatal(err)
	}
	if token2 == token || len(token2) < 40 {
		t.Fatalf("--replace printed %q after %q: want a new token", token2, token)
	}
	list, err := run("list", "--tokens", file)
	if err != nil {
		t.Fatal(err)
	}
	if list != "sensor-*\tsha256\npump-1\tsha256" {
		t.Errorf("list:\n%s", list)
	}

	cfg := loopbackConfig(t, "enrol")
	cfg.Devices.Tokens = file
	a := runAppliance(t, cfg)
	code := func(token string) egp.Code {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		c, err := device.Dial(ctx, device.Config{Addrs: []string{a.DeviceAddr()}, ID: "pump-1", Token: []byte(token)})
		if err == nil {
			c.Close()
			return 0
		}
		var pe *egp.Error
		if !errors.As(err, &pe) {
			t.Fatalf("dial: %v", err)
		}
		return pe.Code
	}
	if got := code(token2); got != 0 {
		t.Errorf("the device with its token: ERROR %d", got)
	}
	for _, tok := range []string{token, "", "sha256:" + hex.EncodeToString(sum[:])} {
		if got := code(tok); got != egp.CodeAuth {
			t.Errorf("the device with token %q: code %d, want %d (auth)", tok, got, egp.CodeAuth)
		}
	}

	if _, err := run("remove", "pump-1", "--tokens", file); err != nil {
		t.Fatal(err)
	}
	if b, _ := os.ReadFile(file); strings.Contains(string(b), "pump-1") {
		t.Errorf("pump-1 still in the file after remove:\n%s", b)
	}
	if _, err := run("remove", "pump-1", "--tokens", file); err == nil {
		t.Error("removing a device that is not enrolled: no error")
	}
	fresh := filepath.Join(dir, "fresh.tokens")
	if _, err := run("add", "meter-9", "--tokens", fresh); err != nil {
		t.Fatal(err)
	}
	if fi, err := os.Stat(fresh); err != nil {
		t.Error(err)
	} else if fi.Mode().Perm() != 0o640 {
		t.Errorf("a new token file has mode %v, want 0640", fi.Mode().Perm())
	}
	if _, err := run("add", "bad.id", "--tokens", fresh); err == nil {
		t.Error("an invalid controller ID was enrolled")
	}
}
