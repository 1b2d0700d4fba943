package wait

import (
	"errors"
	"fmt"
	"strings"
	"testing"
	"time"
)

type fatal struct{ msg string }

func (f *fatal) Helper() {}
func (f *fatal) Fatalf(format string, args ...any) {
	f.msg = fmt.Sprintf(format, args...)
}

func TestForReturnsOnceTrue(t *testing.T) {
	n := 0
	var f fatal
	For(&f, time.Minute, func() error {
		if n++; n < 3 {
			return errors.New("not yet")
		}
		return nil
	})
	if f.msg != "" || n != 3 {
		t.Fatalf("tries %d, failure %q; want 3 tries and none", n, f.msg)
	}
}

func TestTrueFailsWithWhatWasAwaited(t *testing.T) {
	var f fatal
	True(&f, 20*time.Millisecond, "the device connected", func() bool { return false })
	if !strings.Contains(f.msg, "the device connected") || !strings.Contains(f.msg, "20ms") {
		t.Fatalf("failure %q, want what was awaited and the timeout", f.msg)
	}
}
