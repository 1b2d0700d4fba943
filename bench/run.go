package bench

import (
	"context"
	"fmt"
	"runtime"
	"slices"
	"strings"
	"time"
)

// Options configure Run.
type Options struct {
	// Exe is the edgegate binary the appliance under test runs as (see
	// EdgegateConfig.Exe).
	Exe string
	// ApplianceProcs is the GOMAXPROCS of the appliance under test (see
	// EdgegateConfig.Procs); zero is Go's default.
	ApplianceProcs int `json:",omitempty"`
	// Controllers are the controller counts, e.g. 1, 100, 1000, 10000.
	Controllers []int
	// Messages is the total per edgegate and peer run, spread over the
	// controllers (at least MinPerController each). The seed scheme gets a
	// tenth: it is that much slower, and its runs should not dominate.
	Messages         int
	MinPerController int
	// Size is the payload size, Workers the handler goroutines.
	Size, Workers int
	// Runs is how often each figure is measured; the median is reported.
	Runs int
	// Loads are the fractions of the saturated throughput at which ACK
	// latency is measured with paced devices. Nil means 0.5 and 0.1.
	Loads []float64
	// LoadHandlers are the handlers whose latency is measured at Loads:
	// publish (into JetStream, the default) and discard. Nil means both.
	LoadHandlers []string
	// Redis is the Redis URL of the Redis scenarios; empty skips them.
	Redis string
	// Scenarios selects groups: ceiling, edgegate, seed, peer. Empty means
	// all.
	Scenarios []string
	// Progress receives a line per finished run. Nil means none.
	Progress func(string) `json:"-"`
}

// Window is the per-controller window of a controller count: deep
// pipelines for few controllers, shallower ones for many (10,000 × 16 is
// already 160,000 messages in flight).
func Window(controllers int) int {
	switch {
	case controllers <= 100:
		return 256
	case controllers <= 1000:
		return 64
	default:
		return 16
	}
}

// Summary is the median of a scenario's runs at one controller count.
type Summary struct {
	Scenario    string        `json:"scenario"`
	Controllers int           `json:"controllers"`
	Runs        int           `json:"runs"`
	Rate        float64       `json:"rate"` // median
	RateMin     float64       `json:"rate_min"`
	RateMax     float64       `json:"rate_max"`
	P50         time.Duration `json:"p50_ns"` // medians of the runs' quantiles
	P99         time.Duration `json:"p99_ns"`
	P999        time.Duration `json:"p999_ns"`
	SockP50     time.Duration `json:"sock_p50_ns,omitempty"` // medians; zero: not measured
	SockP99     time.Duration `json:"sock_p99_ns,omitempty"`
	OwnP50      time.Duration `json:"own_p50_ns,omitempty"` // medians; zero: not measured
	OwnP99      time.Duration `json:"own_p99_ns,omitempty"`
	RunWait     time.Duration `json:"run_wait_ns,omitempty"` // medians; zero: not measured
	LockWaiters float64       `json:"lock_waiters,omitempty"`
	CPU         float64       `json:"cpu"` // median; negative: not measured
	RSS         int64         `json:"rss"` // largest; negative: not measured
	Note        string        `json:"note,omitempty"`
}

// Ratio compares two summaries at one controller count.
type Ratio struct {
	Name        string  `json:"name"`
	Controllers int     `json:"controllers"`
	Value       float64 `json:"value"`
}

// Report is the outcome of Run.
type Report struct {
	Started   time.Time `json:"started"`
	Machine   string    `json:"machine"`
	Options   Options   `json:"options"`
	Results   []Result  `json:"results"`
	Summaries []Summary `json:"summaries"`
	Ratios    []Ratio   `json:"ratios"`
	// Failures are runs that ended in an error; the others go on.
	Failures []string `json:"failures,omitempty"`
}

func (o Options) wants(group string) bool {
	return len(o.Scenarios) == 0 || slices.Contains(o.Scenarios, group)
}

func (o Options) perController(c, total int) int {
	return max(o.MinPerController, total/c)
}

// Run measures every selected scenario Runs times at every controller
// count and summarizes.
func Run(ctx context.Context, o Options) (*Report, error) {
	if o.Runs <= 0 {
		o.Runs = 3
	}
	if o.Size <= 0 {
		o.Size = 64
	}
	if o.Workers <= 0 {
		o.Workers = 16
	}
	if o.MinPerController <= 0 {
		o.MinPerController = 10
	}
	if o.Progress == nil {
		o.Progress = func(string) {}
	}
	if o.Loads == nil {
		o.Loads = []float64{0.5, 0.1}
	}
	if o.LoadHandlers == nil {
		o.LoadHandlers = []string{"publish", "discard"}
	}
	rep := &Report{Started: time.Now(), Options: o,
		Machine: fmt.Sprintf("%s/%s, %d CPUs, %s", runtime.GOOS, runtime.GOARCH, runtime.NumCPU(), runtime.Version())}
	type job struct {
		name string
		run  func() (Result, error)
	}
	var jobs []job
	if o.wants("ceiling") {
		jobs = append(jobs, job{"ceiling/nats-pubsub", func() (Result, error) { return NATSCeiling(ctx, o.Size, max(o.Messages, 100000)*5) }})
		if o.Redis != "" {
			for _, conc := range []int{1, o.Workers} {
				jobs = append(jobs, job{fmt.Sprintf("ceiling/redis x%d", conc), func() (Result, error) { return RedisCeiling(ctx, o.Redis, conc, 2*time.Second) }})
			}
		}
	}
	for _, c := range o.Controllers {
		w := Workload{Controllers: c, Messages: o.perController(c, o.Messages), Size: o.Size, Window: Window(c), Workers: o.Workers}
		if o.wants("ceiling") {
			jobs = append(jobs, job{"ceiling/jetstream-async", func() (Result, error) { return JetStreamCeiling(ctx, w) }})
		}
		if o.wants("edgegate") {
			// The default, durable configuration first: the headline.
			var configs []EdgegateConfig
			if o.Redis != "" {
				configs = append(configs, EdgegateConfig{Handler: "publish", JetStream: true, Redis: o.Redis})
			}
			configs = append(configs, EdgegateConfig{Handler: "publish", JetStream: true})
			if o.Redis != "" {
				configs = append(configs, EdgegateConfig{Handler: "discard", Redis: o.Redis})
			}
			configs = append(configs, EdgegateConfig{Handler: "discard"})
			for _, ec := range configs {
				ec.Exe, ec.Procs = o.Exe, o.ApplianceProcs
				jobs = append(jobs, job{ec.scenario(), func() (Result, error) { return Edgegate(ctx, w, ec) }})
			}
		}
		if o.wants("seed") && o.Redis != "" {
			sw := w
			sw.Messages = o.perController(c, o.Messages/10)
			jobs = append(jobs, job{"seed", func() (Result, error) { return Seed(ctx, sw, o.Redis) }})
		}
		if o.wants("peer") {
			jobs = append(jobs, job{"peer", func() (Result, error) { return Peer(ctx, w) }})
		}
	}
	total := len(jobs) * o.Runs
	done := 0
	for run := 0; run < o.Runs; run++ {
		// Runs interleave (all scenarios, then all again) so that a noisy
		// minute of the machine spreads over the contenders.
		for _, j := range jobs {
			if err := ctx.Err(); err != nil {
				return rep, err
			}
			r, err := j.run()
			done++
			if err != nil {
				rep.Failures = append(rep.Failures, fmt.Sprintf("%s: %v", j.name, err))
				o.Progress(fmt.Sprintf("[%d/%d] %s FAILED: %v", done, total, j.name, err))
				continue
			}
			rep.Results = append(rep.Results, r)
			o.Progress(fmt.Sprintf("[%d/%d] %-32s %6d controllers %12.0f msg/s  p99 %v", done, total, r.Scenario, r.Controllers, r.Rate, r.P99.Round(time.Microsecond)))
		}
	}
	rep.summarize()
	if o.wants("edgegate") {
		if err := rep.partLoad(ctx, o); err != nil {
			return rep, err
		}
	}
	return rep, nil
}

// partLoad measures ACK latency at fractions (Options.Loads) of the
// throughput measured saturated for each of Options.LoadHandlers (Redis
// leases when there are, else in-process), at the controller count
// nearest 100 and at the smallest one (one busy stream): devices paced,
// not saturating.
func (rep *Report) partLoad(ctx context.Context, o Options) error {
	near, least := o.Controllers[0], o.Controllers[0]
	for _, n := range o.Controllers {
		if absInt(n-100) < absInt(near-100) {
			near = n
		}
		least = min(least, n)
	}
	counts := []int{near}
	if least != near {
		counts = append(counts, least)
	}
	for _, c := range counts {
		if err := rep.partLoadAt(ctx, o, c); err != nil {
			return err
		}
	}
	rep.Summaries, rep.Ratios = nil, nil
	rep.summarize()
	return nil
}

// partLoadAt is partLoad at c controllers, for every handler of
// Options.LoadHandlers.
func (rep *Report) partLoadAt(ctx context.Context, o Options, c int) error {
	for _, h := range o.LoadHandlers {
		base := EdgegateConfig{Exe: o.Exe, Procs: o.ApplianceProcs, Handler: h, JetStream: h == "publish", Redis: o.Redis}
		if err := rep.partLoadOf(ctx, o, c, base); err != nil {
			return err
		}
	}
	return nil
}

// partLoadOf is partLoadAt for the configuration base.
func (rep *Report) partLoadOf(ctx context.Context, o Options, c int, base EdgegateConfig) error {
	var full Summary
	for _, s := range rep.Summaries {
		if s.Scenario == base.scenario() && s.Controllers == c {
			full = s
		}
	}
	if full.Rate == 0 {
		return nil
	}
	for _, load := range o.Loads {
		ec := base
		ec.Load, ec.Rate = load, full.Rate*load/float64(c)
		// About 3 s of messages at that pace.
		w := Workload{Controllers: c, Messages: max(o.MinPerController, int(3*ec.Rate)), Size: o.Size, Window: Window(c), Workers: o.Workers}
		for run := 0; run < o.Runs; run++ {
			r, err := Edgegate(ctx, w, ec)
			if err != nil {
				rep.Failures = append(rep.Failures, fmt.Sprintf("%s: %v", ec.scenario(), err))
				continue
			}
			r.Note = fmt.Sprintf("devices paced at %.0f msg/s each, %.0f msg/s in all: %.0f%% of the throughput saturated", ec.Rate, ec.Rate*float64(c), 100*load)
			rep.Results = append(rep.Results, r)
			o.Progress(fmt.Sprintf("[load %.0f%% %d/%d] %-32s %6d controllers %12.0f msg/s  p99 %v", 100*load, run+1, o.Runs, r.Scenario, r.Controllers, r.Rate, r.P99.Round(time.Microsecond)))
		}
	}
	return nil
}

func absInt(n int) int {
	if n < 0 {
		return -n
	}
	return n
}

func (rep *Report) summarize() {
	type key struct {
		s string
		c int
	}
	groups := map[key][]Result{}
	var order []key
	for _, r := range rep.Results {
		k := key{r.Scenario, r.Controllers}
		if _, ok := groups[k]; !ok {
			order = append(order, k)
		}
		groups[k] = append(groups[k], r)
	}
	for _, k := range order {
		rs := groups[k]
		med := func(f func(Result) float64) float64 {
			v := make([]float64, len(rs))
			for i, r := range rs {
				v[i] = f(r)
			}
			slices.Sort(v)
			return v[len(v)/2]
		}
		s := Summary{Scenario: k.s, Controllers: k.c, Runs: len(rs), Note: rs[0].Note,
			Rate:        med(func(r Result) float64 { return r.Rate }),
			RateMin:     slices.MinFunc(rs, func(a, b Result) int { return cmpF(a.Rate, b.Rate) }).Rate,
			RateMax:     slices.MaxFunc(rs, func(a, b Result) int { return cmpF(a.Rate, b.Rate) }).Rate,
			P50:         time.Duration(med(func(r Result) float64 { return float64(r.P50) })),
			P99:         time.Duration(med(func(r Result) float64 { return float64(r.P99) })),
			P999:        time.Duration(med(func(r Result) float64 { return float64(r.P999) })),
			SockP50:     time.Duration(med(func(r Result) float64 { return float64(r.SockP50) })),
			SockP99:     time.Duration(med(func(r Result) float64 { return float64(r.SockP99) })),
			OwnP50:      time.Duration(med(func(r Result) float64 { return float64(r.OwnP50) })),
			OwnP99:      time.Duration(med(func(r Result) float64 { return float64(r.OwnP99) })),
			RunWait:     time.Duration(med(func(r Result) float64 { return float64(r.RunWait) })),
			LockWaiters: med(func(r Result) float64 { return r.LockWaiters }),
			CPU:         med(func(r Result) float64 { return r.CPU }),
			RSS:         slices.MaxFunc(rs, func(a, b Result) int { return cmpF(float64(a.RSS), float64(b.RSS)) }).RSS,
		}
		rep.Summaries = append(rep.Summaries, s)
	}
	find := func(prefix string, c int) (Summary, bool) {
		for _, s := range rep.Summaries {
			if s.Controllers == c && strings.HasPrefix(s.Scenario, prefix) {
				return s, true
			}
		}
		return Summary{}, false
	}
	ceiling, hasCeiling := find("ceiling/nats-pubsub", 1)
	for _, c := range rep.Options.Controllers {
		add := func(name string, a, b Summary, okA, okB bool) {
			if okA && okB && b.Rate > 0 {
				rep.Ratios = append(rep.Ratios, Ratio{Name: name, Controllers: c, Value: a.Rate / b.Rate})
			}
		}
		// Saturated runs only ("@" marks the paced ones).
		exact := func(name string) (Summary, bool) {
			for _, s := range rep.Summaries {
				if s.Controllers == c && s.Scenario == name {
					return s, true
				}
			}
			return Summary{}, false
		}
		jsc, okJS := exact("ceiling/jetstream-async")
		redPub, okRedPub := exact("edgegate/redis/publish-js")
		memPub, okMemPub := exact("edgegate/memory/publish-js")
		mem, okMem := exact("edgegate/memory/discard")
		red, okRed := exact("edgegate/redis/discard")
		peer, okPeer := find("peer/", c)
		seed, okSeed := find("seed/", c)
		add("edgegate (Redis leases, publish) / JetStream async ceiling", redPub, jsc, okRedPub, okJS)
		add("edgegate (in-process leases, publish) / JetStream async ceiling", memPub, jsc, okMemPub, okJS)
		add("edgegate (Redis leases, publish) / JetStream partitioned consumer groups", redPub, peer, okRedPub, okPeer)
		add("JetStream partitioned consumer groups / JetStream async ceiling", peer, jsc, okPeer, okJS)
		add("edgegate (in-process leases, no-op) / NATS publish→subscribe ceiling", mem, ceiling, okMem, hasCeiling)
		add("edgegate (Redis leases, no-op) / JetStream partitioned consumer groups", red, peer, okRed, okPeer)
		add("edgegate (in-process leases, no-op) / JetStream partitioned consumer groups", mem, peer, okMem, okPeer)
		add("edgegate (Redis leases, no-op) / seed scheme (one message per Redis lock)", red, seed, okRed, okSeed)
	}
}

func cmpF(a, b float64) int {
	switch {
	case a < b:
		return -1
	case a > b:
		return 1
	}
	return 0
}
