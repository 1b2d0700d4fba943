package main

import (
	"context"
	"os"
	"runtime/debug"
	"runtime/metrics"
	"time"
)

// gcHeadroom is how much the heap may grow between two collections at
// the least, when GOGC is not set. Go's default (GOGC=100) lets it grow by
// as much as is live, and the appliance's live heap is a few MB below a
// thousand devices: under load that means many collections a second,
// each a mark phase in which allocating goroutines assist it or wait for
// it, as likely as not with a controller's lock held. More headroom
// collects less often but, beyond a point, loses the processor caches;
// 16 MiB did best of the sizes measured (BENCHMARKS.md). The price is
// resident memory: up to 16 MiB of garbage more on a small appliance,
// none once the live heap is that large.
const gcHeadroom = 16 << 20

// maxGCPercent bounds the percentage (the runtime keeps it in an int32;
// a live heap under 160 KiB grows by less than 16 MiB then).
const maxGCPercent = 10000

// gcHeadroomLoop keeps the collector's growth allowance at least headroom
// until ctx is done, unless GOGC is set in the environment (then the
// operator's choice stands). After every collection it sets the GC
// percentage so that the next one comes when the heap has grown by
// headroom or by the live heap, whichever is more; it looks every
// 100 ms, so a live heap that grows fast (thousands of devices
// connecting) sets its own, smaller percentage within that.
func gcHeadroomLoop(ctx context.Context, headroom uint64) {
	if _, set := os.LookupEnv("GOGC"); set {
		return
	}
	samples := []metrics.Sample{{Name: "/gc/cycles/total:gc-cycles"}, {Name: "/gc/heap/live:bytes"}}
	var cycles uint64
	pct := 100
	defer func() {
		if pct != 100 {
			debug.SetGCPercent(100)
		}
	}()
	t := time.NewTicker(100 * time.Millisecond)
	defer t.Stop()
	for {
		metrics.Read(samples)
		if c, live := samples[0].Value.Uint64(), samples[1].Value.Uint64(); c != cycles && live > 0 {
			cycles = c
			if want := gcPercent(live, headroom); want != pct {
				debug.SetGCPercent(want)
				pct = want
			}
		}
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
	}
}

// gcPercent is the GC percentage that lets a heap of live bytes grow by
// headroom before the next collection, or by live (GOGC=100) if that is
// more, rounded down to two significant digits so that small changes of
// the live heap do not set it every time, and at most maxGCPercent.
func gcPercent(live, headroom uint64) int {
	if live == 0 || live >= headroom {
		return 100
	}
	p := min(headroom*100/live, maxGCPercent)
	for step := uint64(1); ; step *= 10 {
		if p < step*100 {
			return int(p / step * step)
		}
	}
}
