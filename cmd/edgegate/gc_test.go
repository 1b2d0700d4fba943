package main

import (
	"context"
	"errors"
	"os"
	"runtime"
	"runtime/metrics"
	"testing"
	"time"

	"github.com/edgegate/edgegate/internal/wait"
)

func TestGCPercent(t *testing.T) {
	const mib = 1 << 20
	for _, tc := range []struct {
		live, headroom uint64
		want           int
	}{
		{0, 64 * mib, 100},          // no collection yet: Go's default
		{3 * mib, 64 * mib, 2100},   // 2133 % lets 3 MiB grow by 64; two digits kept
		{40 * mib, 64 * mib, 160},   // grows by 64 MiB, not by 40
		{64 * mib, 64 * mib, 100},   // the live heap is the larger allowance
		{500 * mib, 64 * mib, 100},  // 10,000 devices: as GOGC=100
		{1, 64 * mib, maxGCPercent}, // bounded: the runtime keeps it in an int32
	} {
		if got := gcPercent(tc.live, tc.headroom); got != tc.want {
			t.Errorf("gcPercent(%d, %d) = %d, want %d", tc.live, tc.headroom, got, tc.want)
		}
	}
}

// gogc reads the GC percentage in effect.
func gogc() uint64 {
	s := []metrics.Sample{{Name: "/gc/gogc:percent"}}
	metrics.Read(s)
	return s[0].Value.Uint64()
}

// TestGCHeadroomLoop: run lets the heap grow by the headroom after a
// collection, and gives the default back when it stops; a GOGC in the
// environment is left alone.
func TestGCHeadroomLoop(t *testing.T) {
	if _, set := os.LookupEnv("GOGC"); set {
		t.Skip("GOGC is set in this environment: the loop leaves it alone by design")
	}
	if got := gogc(); got != 100 {
		t.Fatalf("GC percentage %d before the loop, want Go's default 100", got)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() {
		defer close(done)
		gcHeadroomLoop(ctx, 1<<40) // far more than this test's live heap
	}()
	// The loop looks after collections: make some.
	err := wait.Until(10*time.Second, func() error {
		if gogc() > 100 {
			return nil
		}
		runtime.GC()
		return errors.New("the GC percentage never rose above 100 after collections")
	})
	cancel()
	if err != nil {
		<-done
		t.Fatal(err)
	}
	<-done
	if got := gogc(); got != 100 {
		t.Fatalf("GC percentage %d after the loop stopped, want 100 back", got)
	}

	t.Setenv("GOGC", "100")
	ctx, cancel = context.WithCancel(context.Background())
	done = make(chan struct{})
	go func() {
		defer close(done)
		gcHeadroomLoop(ctx, 1<<40)
	}()
	select {
	case <-done: // returned at once: the operator's GOGC stands
	case <-time.After(10 * time.Second):
		t.Fatal("with GOGC set the loop did not return at once")
	}
	cancel()
}
