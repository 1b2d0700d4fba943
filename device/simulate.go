package device

import (
	"context"
	"fmt"
	"math"
	"math/bits"
	"math/rand/v2"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/edgegate/edgegate/egp"
)

// SimConfig configures Simulate.
type SimConfig struct {
	// Addrs are the gateway addresses; devices are spread over them round
	// robin and reconnect to the next one on errors.
	Addrs []string
	// Controllers is the number of simulated devices, one connection each.
	Controllers int
	// Messages is the number of messages per controller.
	Messages int
	// Size is the payload size in bytes (a small JSON object, padded).
	Size int
	// Rate is messages per second per controller. Zero means as fast as the
	// window allows.
	Rate float64
	// Window is the most unacknowledged messages per controller. Zero means 256.
	Window int
	// Prefix starts the controller IDs (Prefix + a 6-digit number). Empty
	// means "sim-".
	Prefix string
	// PersistentSeq sets HELLO flag bit1 on every device.
	PersistentSeq bool
	// Token is sent in HELLO.
	Token []byte
	// Reconnect makes devices reconnect and resend on connection loss.
	Reconnect bool
	// ConnectConcurrency bounds dials at once. Zero means 256.
	ConnectConcurrency int
	// Protocol is "egp" (EGP/1) or "teltonika" (Teltonika trackers: a
	// message is an AVL packet, see simulateTeltonika). Empty means egp.
	Protocol string
	// Records is the AVL records per Teltonika packet. Zero means 4.
	Records int
}

// SimReport is the result of a simulation.
type SimReport struct {
	Controllers  int
	Sent         int64
	Acked        int64
	DeadLettered int64
	Resent       int64
	Reconnects   int64
	// OrderErrors counts ACKs that did not match the oldest unacknowledged
	// message of their device (Teltonika: whose record count was not the
	// packet's).
	OrderErrors int64
	// Records counts the AVL records acknowledged (Teltonika only).
	Records int64
	// Elapsed runs from the first send to the last ACK.
	Elapsed time.Duration
	// Throughput is acknowledged messages per second over Elapsed.
	Throughput float64
	// ACK latency: from Send to its ACK, as the device's reader handled it.
	P50, P90, P99, P999, Max time.Duration
	// ACK latency at the devices' sockets: from the write of the message
	// to the kernel's receipt of its ACK (Config.SocketTimes), without the
	// device's own waits for a CPU to write it and to read the ACK, which
	// on a box shared with the gateway are the simulator's, not the
	// gateway's. Zero where the kernel's times are not available (only
	// 64-bit Linux).
	SockP50, SockP99, SockP999 time.Duration
}

// String is a human summary.
func (r SimReport) String() string {
	var b strings.Builder
	fmt.Fprintf(&b, "controllers  %d\n", r.Controllers)
	fmt.Fprintf(&b, "sent         %d\n", r.Sent)
	fmt.Fprintf(&b, "acked        %d (dead-lettered %d)\n", r.Acked, r.DeadLettered)
	if r.Records > 0 {
		fmt.Fprintf(&b, "records      %d (Teltonika AVL records in the acked packets)\n", r.Records)
	}
	fmt.Fprintf(&b, "resent       %d after %d reconnects\n", r.Resent, r.Reconnects)
	fmt.Fprintf(&b, "ack order    %s\n", map[bool]string{true: "ok", false: fmt.Sprintf("%d ACKs out of order", r.OrderErrors)}[r.OrderErrors == 0])
	fmt.Fprintf(&b, "elapsed      %v\n", r.Elapsed.Round(time.Millisecond))
	fmt.Fprintf(&b, "throughput   %.0f msg/s\n", r.Throughput)
	fmt.Fprintf(&b, "ack latency  p50 %v  p90 %v  p99 %v  p99.9 %v  max %v\n",
		rd(r.P50), rd(r.P90), rd(r.P99), rd(r.P999), rd(r.Max))
	if r.SockP99 > 0 {
		fmt.Fprintf(&b, "  at socket  p50 %v  p99 %v  p99.9 %v (from the write to the kernel's receipt of the ACK)\n",
			rd(r.SockP50), rd(r.SockP99), rd(r.SockP999))
	}
	return b.String()
}

func rd(d time.Duration) time.Duration {
	switch {
	case d > 10*time.Millisecond:
		return d.Round(time.Millisecond)
	case d > 10*time.Microsecond:
		return d.Round(time.Microsecond)
	}
	return d
}

// Simulate runs Controllers devices that each send Messages messages and
// wait for their ACKs, and reports throughput and ACK latency. progress, if
// not nil, is called about once a second with the figures so far.
func Simulate(ctx context.Context, cfg SimConfig, progress func(SimReport)) (SimReport, error) {
	if cfg.Controllers <= 0 || cfg.Messages < 0 {
		return SimReport{}, fmt.Errorf("device: simulate: want at least one controller")
	}
	switch cfg.Protocol {
	case "", "egp":
	case "teltonika":
		return simulateTeltonika(ctx, cfg, progress)
	default:
		return SimReport{}, fmt.Errorf("device: simulate: protocol %q: want egp or teltonika", cfg.Protocol)
	}
	if cfg.Prefix == "" {
		cfg.Prefix = "sim-"
	}
	if cfg.ConnectConcurrency <= 0 {
		cfg.ConnectConcurrency = 256
	}
	if cfg.Window <= 0 {
		cfg.Window = 256
	}
	var (
		hist    histogram
		sock    histogram // at the socket: see SimReport.SockP99
		acked   atomic.Int64
		dead    atomic.Int64
		lastAck atomic.Int64
	)
	clients := make([]*Client, cfg.Controllers)
	defer func() {
		for _, c := range clients {
			if c != nil {
				c.Close()
			}
		}
	}()
	// Connect everybody first, so that the measurement is of messages.
	sem := make(chan struct{}, cfg.ConnectConcurrency)
	var wg sync.WaitGroup
	var dialErr error
	var errOnce sync.Once
	for i := range clients {
		sem <- struct{}{}
		wg.Go(func() {
			defer func() { <-sem }()
			c, err := Dial(ctx, Config{
				Addrs:         rotate(cfg.Addrs, i),
				ID:            fmt.Sprintf("%s%06d", cfg.Prefix, i),
				Token:         cfg.Token,
				PersistentSeq: cfg.PersistentSeq,
				Window:        cfg.Window,
				Reconnect:     cfg.Reconnect,
				SocketTimes:   socketTimes,
				OnAck: func(a Acked) {
					now := time.Now()
					hist.record(now.Sub(a.Sent))
					if !a.Written.IsZero() { // SocketTimes, where available
						sock.record(a.Arrived.Sub(a.Written))
					}
					acked.Add(1)
					if a.Status == egp.StatusDeadLettered {
						dead.Add(1)
					}
					lastAck.Store(now.UnixNano())
				},
			})
			if err != nil {
				errOnce.Do(func() { dialErr = fmt.Errorf("device: simulate: controller %d: %w", i, err) })
				return
			}
			clients[i] = c
		})
	}
	wg.Wait()
	if dialErr != nil {
		return SimReport{}, dialErr
	}

	start := time.Now()
	report := func() SimReport {
		r := SimReport{Controllers: cfg.Controllers, Acked: acked.Load(), DeadLettered: dead.Load()}
		for _, c := range clients {
			st := c.Stats()
			r.Sent += int64(st.Sent)
			r.Resent += int64(st.Resent)
			r.Reconnects += int64(st.Reconnects)
			r.OrderErrors += int64(st.OrderErrors)
		}
		r.finish(start, lastAck.Load(), &hist)
		if socketTimes {
			r.SockP50, r.SockP99, r.SockP999 = sock.quantile(0.5), sock.quantile(0.99), sock.quantile(0.999)
		}
		return r
	}
	stop := make(chan struct{})
	var pwg sync.WaitGroup
	if progress != nil {
		pwg.Go(func() {
			t := time.NewTicker(time.Second)
			defer t.Stop()
			for {
				select {
				case <-stop:
					return
				case <-t.C:
					progress(report())
				}
			}
		})
	}
	// payload writes message n of a device into b (reused: SendBatch
	// copies it), as {"c":id,"n":n,"pad":"xx…"} padded to Size; head is
	// the device's {"c":id,"n": and written once.
	pad := strings.Repeat("x", max(cfg.Size, 0))
	payload := func(b []byte, head string, n int) []byte {
		b = strconv.AppendInt(append(b[:0], head...), int64(n), 10)
		b = append(b, `,"pad":"`...)
		if k := cfg.Size - 2 - len(b); k > 0 {
			b = append(b, pad[:k]...)
		}
		return append(b, `"}`...)
	}
	errs := make(chan error, cfg.Controllers)
	for i, c := range clients {
		wg.Go(func() {
			id := fmt.Sprintf("%s%06d", cfg.Prefix, i)
			head := `{"c":` + strconv.Quote(id) + `,"n":`
			// Paced devices send what their rate allows every tick, a tick
			// being the rate's period but at least 2ms: a timer per message
			// would cost the simulator more CPU than the gateway spends.
			// What a tick allows goes in one SendBatch, like the messages
			// of an unpaced device (up to a window at a time): a device with
			// several messages ready writes them together.
			var tick *time.Ticker
			var due float64 // messages the rate allows and not yet sent
			period := time.Duration(0)
			if cfg.Rate > 0 {
				period = max(time.Duration(float64(time.Second)/cfg.Rate), 2*time.Millisecond)
				// Devices start at random offsets within one period, so that
				// they do not all send at the same instant.
				select {
				case <-ctx.Done():
					errs <- ctx.Err()
					return
				case <-time.After(rand.N(period)):
				}
				tick = time.NewTicker(period)
				defer tick.Stop()
			}
			last := time.Now()
			var bufs [][]byte // reused: SendBatch copies them
			for n := 0; n < cfg.Messages; {
				for tick != nil && due < 1 {
					select {
					case <-ctx.Done():
						errs <- ctx.Err()
						return
					case now := <-tick.C:
						due += now.Sub(last).Seconds() * cfg.Rate
						last = now
					}
				}
				k := min(cfg.Messages-n, cfg.Window)
				if tick != nil {
					k = min(k, int(due))
					due -= float64(k)
				}
				for len(bufs) < k {
					bufs = append(bufs, nil)
				}
				for j := range k {
					bufs[j] = payload(bufs[j], head, n+j)
				}
				if _, err := c.SendBatch(ctx, bufs[:k]); err != nil {
					errs <- fmt.Errorf("%s: %w", id, err)
					return
				}
				n += k
			}
			if err := c.Flush(ctx); err != nil {
				errs <- fmt.Errorf("%s: %w", id, err)
			}
		})
	}
	wg.Wait()
	close(stop)
	pwg.Wait()
	close(errs)
	r := report()
	for err := range errs {
		return r, err
	}
	return r, nil
}

func rotate(addrs []string, i int) []string {
	if len(addrs) == 0 {
		return nil
	}
	out := make([]string, len(addrs))
	for k := range addrs {
		out[k] = addrs[(i+k)%len(addrs)]
	}
	return out
}

// histogram is a lock-free log-linear latency histogram: 16 sub-buckets
// per power of two of nanoseconds (about 6 % resolution).
type histogram struct {
	counts [64 * 16]atomic.Uint64
	top    atomic.Int64
}

func bucket(ns uint64) int {
	if ns < 16 {
		return int(ns)
	}
	e := bits.Len64(ns) - 1 // ns in [2^e, 2^(e+1))
	sub := (ns >> (e - 4)) & 15
	return (e-3)*16 + int(sub)
}

func bucketLow(i int) uint64 {
	if i < 16 {
		return uint64(i)
	}
	e := i/16 + 3
	sub := uint64(i % 16)
	return (16 + sub) << (e - 4)
}

func (h *histogram) record(d time.Duration) {
	ns := uint64(max(d, 0))
	h.counts[bucket(ns)].Add(1)
	for {
		t := h.top.Load()
		if int64(ns) <= t || h.top.CompareAndSwap(t, int64(ns)) {
			return
		}
	}
}

// quantile estimates the q-quantile as the middle of the bucket it falls
// in, but never above the largest value recorded: in the top bucket the
// middle may lie above every value in it, and a p99.9 above the max is a
// contradiction a reader sees at once.
// finish sets the report's time, throughput and latencies: the run ends
// at the last ACK (lastAck, unix ns) once everything sent was
// acknowledged, else now.
func (r *SimReport) finish(start time.Time, lastAck int64, hist *histogram) {
	end := time.Now()
	if lastAck != 0 && r.Acked == r.Sent {
		end = time.Unix(0, lastAck)
	}
	r.Elapsed = end.Sub(start)
	if r.Elapsed > 0 {
		r.Throughput = float64(r.Acked) / r.Elapsed.Seconds()
	}
	r.P50, r.P90, r.P99, r.P999, r.Max = hist.quantile(0.5), hist.quantile(0.9), hist.quantile(0.99), hist.quantile(0.999), hist.max()
}

func (h *histogram) quantile(q float64) time.Duration {
	top := h.max() // read first: values recorded later may only raise it
	var counts [len(h.counts)]uint64
	var total uint64
	for i := range h.counts {
		counts[i] = h.counts[i].Load()
		total += counts[i]
	}
	if total == 0 {
		return 0
	}
	want := max(uint64(math.Ceil(q*float64(total))), 1)
	var seen uint64
	for i, n := range counts {
		seen += n
		if seen >= want {
			lo, hi := bucketLow(i), bucketLow(i+1)
			return min(time.Duration(lo+(hi-lo)/2), top)
		}
	}
	return top
}

func (h *histogram) max() time.Duration { return time.Duration(h.top.Load()) }
