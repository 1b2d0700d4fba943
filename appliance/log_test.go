package appliance_test

import (
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"syscall"
	"testing"

	"github.com/edgegate/edgegate/appliance"
)

// logFile returns a file to log to and its JOURNAL_STREAM value (its
// device and inode numbers).
func logFile(t *testing.T) (*os.File, string) {
	t.Helper()
	f, err := os.Create(filepath.Join(t.TempDir(), "log"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { f.Close() })
	fi, err := f.Stat()
	if err != nil {
		t.Fatal(err)
	}
	st := fi.Sys().(*syscall.Stat_t)
	return f, fmt.Sprintf("%d:%d", st.Dev, st.Ino)
}

func logLines(t *testing.T, f *os.File) []string {
	t.Helper()
	b, err := os.ReadFile(f.Name())
	if err != nil {
		t.Fatal(err)
	}
	return strings.Split(strings.TrimSuffix(string(b), "\n"), "\n")
}

// logEveryLevel logs one line per level, debug included.
func logEveryLevel(f *os.File, format string) {
	lv := new(slog.LevelVar)
	lv.Set(slog.LevelDebug)
	l := appliance.NewLogger(f, lv, format).With("component", "test")
	l.Error("e", "k", 1)
	l.Warn("w")
	l.Info("i")
	l.Debug("d")
}

// TestLoggerInTheJournal: on the journal's stream every line starts with
// its syslog priority and has no time, in both formats.
func TestLoggerInTheJournal(t *testing.T) {
	for _, format := range []string{"text", "json"} {
		t.Run(format, func(t *testing.T) {
			f, stream := logFile(t)
			t.Setenv("JOURNAL_STREAM", stream)
			logEveryLevel(f, format)
			lines := logLines(t, f)
			want := []string{"<3>", "<4>", "<6>", "<7>"}
			if len(lines) != len(want) {
				t.Fatalf("%d lines, want %d:\n%s", len(lines), len(want), strings.Join(lines, "\n"))
			}
			first := map[string]string{"text": "level=", "json": `{"level":`}[format]
			for i, l := range lines {
				if !strings.HasPrefix(l, want[i]+first) {
					t.Errorf("line %d %q: want it to start with %s%s", i, l, want[i], first)
				}
				if strings.Contains(l, "time") {
					t.Errorf("line %d %q has a time", i, l)
				}
			}
		})
	}
}

// TestLoggerElsewhere: on anything but the journal's stream (a file, with
// JOURNAL_STREAM naming another stream or unset) lines start with the time
// in RFC 3339 with milliseconds, and have no priority.
func TestLoggerElsewhere(t *testing.T) {
	stamp := `\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}(Z|[+-]\d\d:\d\d)`
	for _, format := range []string{"text", "json"} {
		for _, env := range []string{"", "1:2"} {
			t.Run(format+"/"+env, func(t *testing.T) {
				f, _ := logFile(t)
				t.Setenv("JOURNAL_STREAM", env)
				logEveryLevel(f, format)
				re := regexp.MustCompile(map[string]string{"text": `^time=` + stamp + ` level=`, "json": `^\{"time":"` + stamp + `","level":`}[format])
				lines := logLines(t, f)
				if len(lines) != 4 {
					t.Fatalf("%d lines, want 4", len(lines))
				}
				for _, l := range lines {
					if !re.MatchString(l) {
						t.Errorf("line %q does not match %s", l, re)
					}
				}
			})
		}
	}
}

// TestLoggerPrioritiesConcurrently: lines logged at once from many
// goroutines each carry their own record's priority.
func TestLoggerPrioritiesConcurrently(t *testing.T) {
	f, stream := logFile(t)
	t.Setenv("JOURNAL_STREAM", stream)
	l := appliance.NewLogger(f, slog.LevelDebug, "text")
	var wg sync.WaitGroup
	for g := range 8 {
		wg.Go(func() {
			lg := l.With("g", g)
			for i := range 200 {
				if i%2 == 0 {
					lg.Error("odd one", "i", i)
				} else {
					lg.Debug("even one", "i", i)
				}
			}
		})
	}
	wg.Wait()
	lines := logLines(t, f)
	if len(lines) != 8*200 {
		t.Fatalf("%d lines, want %d", len(lines), 8*200)
	}
	for _, line := range lines {
		if !strings.HasPrefix(line, "<3>level=ERROR ") && !strings.HasPrefix(line, "<7>level=DEBUG ") {
			t.Fatalf("line %q: priority and level differ", line)
		}
	}
}

// TestSummary: the start line's configuration names the listeners and the
// lease store, without the Redis password.
func TestSummary(t *testing.T) {
	cfg := appliance.DefaultConfig()
	cfg.Name = "sum"
	cfg.Lease.Redis = "redis://edge:s3cret@10.0.0.5:6379/2"
	cfg.Parser.Handler, cfg.Parser.Exec = "exec", []string{"/usr/bin/parse", "--secret-flag"}
	kv := cfg.Summary()
	got := map[string]string{}
	for i := 0; i+1 < len(kv); i += 2 {
		got[kv[i].(string)] = fmt.Sprint(kv[i+1])
	}
	for k, v := range map[string]string{
		"devices": cfg.Devices.Listen, "nats": cfg.NATS.Listen, "http": cfg.HTTP.Listen, "lines": "off",
		"lease_store": "redis standalone", "redis": "redis://edge:xxxxx@10.0.0.5:6379/2",
		"workers": "16", "handler": "exec", "exec": "/usr/bin/parse", "log_format": "text",
	} {
		if got[k] != v {
			t.Errorf("summary %s = %q, want %q", k, got[k], v)
		}
	}
	if s := fmt.Sprint(kv); strings.Contains(s, "s3cret") || strings.Contains(s, "--secret-flag") {
		t.Errorf("summary shows a secret: %s", s)
	}
}
