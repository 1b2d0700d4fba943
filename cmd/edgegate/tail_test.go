package main

import (
	"bytes"
	"context"
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/edgegate/edgegate/appliance"
	"github.com/edgegate/edgegate/internal/wait"
	"github.com/edgegate/edgegate/parser"
)

// simulate runs `edgegate simulate` of one controller named prefix000000
// sending n messages, all acknowledged (so stored: the publish handler
// acknowledges a record once JetStream has it).
func simulate(t *testing.T, a *appliance.Appliance, prefix string, n int) {
	t.Helper()
	var out bytes.Buffer
	err := newApp(nil, &out, &out).RunContext(context.Background(), []string{"edgegate", "simulate",
		"--addr", a.DeviceAddr(), "--controllers", "1", "--messages", fmt.Sprint(n), "--prefix", prefix})
	if err != nil {
		t.Fatalf("simulate %s: %v\n%s", prefix, err, out.String())
	}
}

// waitStored waits until the parsed records' stream holds n records.
func waitStored(t *testing.T, a *appliance.Appliance, n uint64) {
	t.Helper()
	nc, err := a.Connect("test-stored")
	if err != nil {
		t.Fatal(err)
	}
	defer nc.Close()
	js, _ := jetstream.New(nc)
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	wait.For(t, 20*time.Second, func() error {
		s, err := js.Stream(ctx, parser.StreamParsed)
		if err != nil {
			return err
		}
		if got := s.CachedInfo().State.Msgs; got < n {
			return fmt.Errorf("the stream holds %d records, want %d", got, n)
		}
		return nil
	})
}

// runTail runs `edgegate tail args...` to its end and returns the records'
// controller and seq, "id seq", in the order printed.
func runTail(t *testing.T, a *appliance.Appliance, args ...string) ([]string, error) {
	t.Helper()
	var out, errOut bytes.Buffer
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	err := newApp(nil, &out, &errOut).RunContext(ctx, append([]string{"edgegate", "tail", "--nats", a.NATSURL()}, args...))
	return records(out.String()), err
}

// records reads tail's lines "hh:mm:ss.mmm id seq=N fence=F payload".
func records(out string) []string {
	var got []string
	for _, l := range strings.Split(strings.TrimSpace(out), "\n") {
		if f := strings.Fields(l); len(f) >= 3 {
			got = append(got, f[1]+" "+strings.TrimPrefix(f[2], "seq="))
		}
	}
	return got
}

func seqs(id string, from, to int) []string {
	var out []string
	for i := from; i <= to; i++ {
		out = append(out, fmt.Sprintf("%s %d", id, i))
	}
	return out
}

// TestTailStored: --last and --since replay stored records (of one
// controller or of all), then follow new ones.
func TestTailStored(t *testing.T) {
	a := runAppliance(t, loopbackConfig(t, "replay"))
	simulate(t, a, "rpa-", 10)
	waitStored(t, a, 10)
	between := time.Now()
	simulate(t, a, "rpb-", 10)
	waitStored(t, a, 20)

	for _, tt := range []struct {
		name string
		args []string
		want []string
	}{
		{"last of a controller", []string{"--last", "3", "--controller", "rpa-000000", "--count", "3"}, seqs("rpa-000000", 8, 10)},
		{"last of all", []string{"--last", "4", "--count", "4"}, seqs("rpb-000000", 7, 10)},
		{"last beyond what is stored", []string{"--last", "50", "--controller", "rpb-000000", "--count", "10"}, seqs("rpb-000000", 1, 10)},
		{"since a time", []string{"--since", between.Format(time.RFC3339Nano), "--count", "10"}, seqs("rpb-000000", 1, 10)},
		{"since a duration", []string{"--since", "1h", "--controller", "rpa-000000", "--count", "10"}, seqs("rpa-000000", 1, 10)},
	} {
		t.Run(tt.name, func(t *testing.T) {
			got, err := runTail(t, a, tt.args...)
			if err != nil {
				t.Fatalf("tail %v: %v", tt.args, err)
			}
			if fmt.Sprint(got) != fmt.Sprint(tt.want) {
				t.Errorf("tail %v printed\n%v\nwant\n%v", tt.args, got, tt.want)
			}
		})
	}

	// After the stored records, new ones: the 2 last stored, then one sent
	// once those are printed.
	var out, errOut lockedBuffer
	var wg sync.WaitGroup
	wg.Go(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		if err := newApp(nil, &out, &errOut).RunContext(ctx, []string{"edgegate", "tail", "--nats", a.NATSURL(), "--last", "2", "--count", "3"}); err != nil {
			t.Errorf("tail --last 2 --count 3: %v", err)
		}
	})
	wait.True(t, 20*time.Second, "tail printed the 2 last stored records", func() bool { return len(records(out.String())) >= 2 })
	simulate(t, a, "rpc-", 1)
	wg.Wait()
	want := append(seqs("rpb-000000", 9, 10), "rpc-000000 1")
	if got := records(out.String()); fmt.Sprint(got) != fmt.Sprint(want) {
		t.Errorf("tail --last 2 then new ones printed\n%v\nwant\n%v", got, want)
	}
}

// TestTailStoredErrors: bad --since and --last values, and a replay from
// an appliance without JetStream, say what is wrong.
func TestTailStoredErrors(t *testing.T) {
	cfg := loopbackConfig(t, "nojs")
	cfg.NATS.JetStream = false
	a := runAppliance(t, cfg)
	for _, tt := range []struct {
		args []string
		want string
	}{
		{[]string{"--since", "yesterday"}, "RFC 3339"},
		{[]string{"--since", "-5m"}, "without a sign"},
		{[]string{"--last", "0"}, "at least 1"},
		{[]string{"--last", "3", "--since", "1h"}, "one at a time"},
		{[]string{"--last", "3"}, "nats.jetstream"},
	} {
		if _, err := runTail(t, a, tt.args...); err == nil || !strings.Contains(err.Error(), tt.want) {
			t.Errorf("tail %v: %v, want an error containing %q", tt.args, err, tt.want)
		}
	}
}

func TestParseSince(t *testing.T) {
	now := time.Date(2026, 12, 5, 10, 49, 0, 0, time.UTC)
	for in, want := range map[string]time.Time{
		"10m":                         now.Add(-10 * time.Minute),
		"0s":                          now,
		"2026-12-05T09:00:00Z":        time.Date(2026, 12, 5, 9, 0, 0, 0, time.UTC),
		"2026-12-05T10:00:00.5+01:00": time.Date(2026, 12, 5, 9, 0, 0, 5e8, time.UTC),
	} {
		got, err := parseSince(in, now)
		if err != nil || !got.Equal(want) {
			t.Errorf("parseSince(%q) = %v, %v; want %v", in, got, err, want)
		}
	}
}

// TestTailQuotesWhatATerminalWouldObey: a payload that could rewrite the
// operator's terminal line (C0 or C1 controls, a bidi override) is
// quoted; ordinary text, accented or not, is shown as it is.
func TestTailQuotesWhatATerminalWouldObey(t *testing.T) {
	for s, want := range map[string]bool{
		"temp=21.5 ünïcödé 温度": false,
		"a\x1b[2Jb":            true,
		"a\u0085b":             true, // C1 next line
		"ok \u202egnp.exe":     true, // right-to-left override
		"a\u2066b":             true, // left-to-right isolate
		"tab\there":            true,
	} {
		if got := containsControl(s); got != want {
			t.Errorf("containsControl(%q) = %v, want %v", s, got, want)
		}
	}
}
