package appliance

import (
	"cmp"
	"context"
	stdembed "embed" // the standard library's; this repo's embed is the NATS server
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"math"
	"net/http"
	"sort"
	"strconv"
	"sync"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"

	"github.com/edgegate/edgegate/coord"
	"github.com/edgegate/edgegate/parser"
)

// The status page's files, served under /ui/ (GET / serves index.html):
// plain HTML, CSS and JavaScript, no build step, nothing fetched from
// elsewhere, so that the page works on a gateway without internet.
//
//go:embed web
var webFiles stdembed.FS

const (
	// sampleSlots bounds the per-second samples kept for the chart: five
	// minutes.
	sampleSlots = 300
	// deadSlots bounds the dead letters the page lists.
	deadSlots = 20
	// pageControllers bounds the controllers the page lists (sockets
	// answer up to 500 each).
	pageControllers = 50
	// snapshotTTL is how long one cluster status answer serves the page:
	// every viewer's poll would otherwise ask every socket of the cluster,
	// whose answers read leases from the store.
	snapshotTTL = time.Second
	// stuckAfter is how long a batch may be at a parser before the page
	// calls its controller stuck: as long as the handler's default time
	// for one attempt at a message, so that a stuck batch has at least one
	// message that used a whole attempt (or a handler that never returns).
	stuckAfter = 30 * time.Second
)

// statusPage keeps what the page at / shows beyond the cluster's status
// answers: per-second samples of this appliance's counters and ACK
// latency, and the latest dead letters of the cluster.
type statusPage struct {
	a       *Appliance
	started time.Time
	coordNC *nats.Conn          // asks edgegate.status, as `edgegate status` does
	metrics prometheus.Gatherer // the socket's and pool's collectors only
	cancel  context.CancelFunc
	done    chan struct{}

	mu      sync.Mutex
	samples [sampleSlots]sample
	nSample int // samples taken, of which the last sampleSlots are kept
	dead    []deadLetter
	nDead   uint64

	snapMu     sync.Mutex // one cluster request at a time; guards snap and stuckAfter
	snap       *snapshot
	stuckAfter time.Duration // the constant of that name; tests shorten it
}

// sample is one second of this appliance's socket and pool.
type sample struct {
	T        int64    `json:"t"` // Unix seconds at the end of the second
	Acked    float64  `json:"acked"`
	Received float64  `json:"received"`
	Dead     float64  `json:"dead"`
	Refused  float64  `json:"refused"`
	P50      *float64 `json:"p50_ms"` // nil when nothing was acknowledged
	P99      *float64 `json:"p99_ms"`
	Devices  float64  `json:"devices"`
	Busy     float64  `json:"busy_workers"`
}

type deadLetter struct {
	At         time.Time `json:"at"`
	Controller string    `json:"controller"`
	Seq        string    `json:"seq"`
	Error      string    `json:"error"`
}

// snapshot is the cluster as its sockets and pools answered, and the lease
// store as this appliance sees it.
type snapshot struct {
	at      time.Time
	answers []coord.Status
	missing []string // local parts that did not answer in time
	store   leaseStoreDoc
	stuck   time.Duration // statusPage.stuckAfter, read under snapMu
}

type leaseStoreDoc struct {
	Kind   string  `json:"kind"`
	Up     bool    `json:"up"`
	Error  string  `json:"error,omitempty"`
	PingMs float64 `json:"ping_ms"`
}

// startStatusPage connects the page to NATS and starts sampling, until the
// appliance closes.
func (a *Appliance) startStatusPage() error {
	nc, err := a.connectCoord("status")
	if err != nil {
		return err
	}
	rec, err := a.connect("status-dead")
	if err != nil {
		return err
	}
	reg := prometheus.NewRegistry()
	if a.sock != nil {
		reg.MustRegister(a.sock.Collector())
	}
	if a.pool != nil {
		reg.MustRegister(a.pool.Collector())
	}
	ctx, cancel := context.WithCancel(context.Background())
	p := &statusPage{a: a, started: time.Now(), coordNC: nc, metrics: reg, cancel: cancel, done: make(chan struct{}), stuckAfter: stuckAfter}
	if _, err := rec.Subscribe(coord.DeadSubject(">"), p.onDead); err != nil {
		cancel()
		return fmt.Errorf("appliance: status page: %w", err)
	}
	go p.sampleLoop(ctx)
	a.closers = append(a.closers, func() { cancel(); <-p.done })
	a.page = p
	return nil
}

func (p *statusPage) onDead(m *nats.Msg) {
	d := deadLetter{
		At:         time.Now().UTC(),
		Controller: m.Header.Get(parser.HeaderController),
		Seq:        m.Header.Get(parser.HeaderSeq),
		Error:      m.Header.Get(parser.HeaderError),
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	p.nDead++
	if len(p.dead) == deadSlots {
		copy(p.dead, p.dead[1:])
		p.dead = p.dead[:deadSlots-1]
	}
	p.dead = append(p.dead, d)
}

// counters is what a sample is the difference of.
type counters struct {
	at                             time.Time
	acked, received, dead, refused float64
	devices, busy                  float64
	latency                        []*dto.Bucket // cumulative
	latencyCount                   uint64
}

func (p *statusPage) read() counters {
	c := counters{at: time.Now()}
	mfs, err := p.metrics.Gather()
	if err != nil {
		return c
	}
	for _, mf := range mfs {
		for _, m := range mf.GetMetric() {
			switch mf.GetName() {
			case "edgegate_messages_acked_total":
				c.acked = m.GetCounter().GetValue()
			case "edgegate_messages_received_total":
				c.received = m.GetCounter().GetValue()
			case "edgegate_messages_dead_lettered_total":
				c.dead = m.GetCounter().GetValue()
			case "edgegate_device_connections_refused_total":
				c.refused += m.GetCounter().GetValue()
			case "edgegate_protocol_errors_total":
				// Devices refused for their credentials count as refused.
				for _, l := range m.GetLabel() {
					if l.GetName() == "code" && l.GetValue() == "3" {
						c.refused += m.GetCounter().GetValue()
					}
				}
			case "edgegate_devices_connected":
				c.devices = m.GetGauge().GetValue()
			case "edgegate_parser_workers_busy":
				c.busy = m.GetGauge().GetValue()
			case "edgegate_ack_latency_seconds":
				c.latency = m.GetHistogram().GetBucket()
				c.latencyCount = m.GetHistogram().GetSampleCount()
			}
		}
	}
	return c
}

// sampleLoop takes a sample every second until ctx is done.
func (p *statusPage) sampleLoop(ctx context.Context) {
	defer close(p.done)
	t := time.NewTicker(time.Second)
	defer t.Stop()
	prev := p.read()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		cur := p.read()
		p.add(between(prev, cur))
		prev = cur
	}
}

// between is the sample of the time from a to b: rates per second, and
// the ACK latency quantiles of the messages acknowledged meanwhile.
func between(a, b counters) sample {
	secs := b.at.Sub(a.at).Seconds()
	if secs <= 0 {
		secs = 1
	}
	rate := func(x, y float64) float64 { return max(0, y-x) / secs }
	s := sample{
		T: b.at.Unix(), Acked: rate(a.acked, b.acked), Received: rate(a.received, b.received),
		Dead: rate(a.dead, b.dead), Refused: rate(a.refused, b.refused), Devices: b.devices, Busy: b.busy,
	}
	if n := b.latencyCount - min(a.latencyCount, b.latencyCount); n > 0 && len(a.latency) == len(b.latency) {
		s.P50 = quantileMs(0.5, a.latency, b.latency, n)
		s.P99 = quantileMs(0.99, a.latency, b.latency, n)
	}
	return s
}

// quantileMs estimates quantile q, in milliseconds, of the n observations
// between two readings of a histogram's cumulative buckets, interpolating
// within a bucket as Prometheus's histogram_quantile does.
func quantileMs(q float64, a, b []*dto.Bucket, n uint64) *float64 {
	rank := q * float64(n)
	var lowerBound, lowerCount float64
	for i := range b {
		count := float64(b[i].GetCumulativeCount() - min(a[i].GetCumulativeCount(), b[i].GetCumulativeCount()))
		upper := b[i].GetUpperBound()
		if count >= rank && !math.IsInf(upper, 1) {
			v := upper
			if count > lowerCount {
				v = lowerBound + (upper-lowerBound)*(rank-lowerCount)/(count-lowerCount)
			}
			v *= 1000
			return &v
		}
		lowerBound, lowerCount = upper, count
	}
	// Beyond the last bucket: its bound is the best one can say.
	v := lowerBound * 1000
	return &v
}

func (p *statusPage) add(s sample) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.samples[p.nSample%sampleSlots] = s
	p.nSample++
}

// recent returns the samples kept, oldest first, and the dead letters,
// newest first.
func (p *statusPage) recent() ([]sample, []deadLetter, uint64) {
	p.mu.Lock()
	defer p.mu.Unlock()
	n := min(p.nSample, sampleSlots)
	out := make([]sample, 0, n)
	for i := p.nSample - n; i < p.nSample; i++ {
		out = append(out, p.samples[i%sampleSlots])
	}
	dead := make([]deadLetter, 0, len(p.dead))
	for i := len(p.dead) - 1; i >= 0; i-- {
		dead = append(dead, p.dead[i])
	}
	return out, dead, p.nDead
}

// current returns the cluster's status answers and the lease store's
// state, asking again when the last answer is older than snapshotTTL.
func (p *statusPage) current() *snapshot {
	p.snapMu.Lock()
	defer p.snapMu.Unlock()
	if p.snap != nil && time.Since(p.snap.at) < snapshotTTL {
		return p.snap
	}
	s := &snapshot{stuck: p.stuckAfter}
	s.answers, s.missing = p.askCluster()
	s.store = p.leaseStore()
	s.at = time.Now()
	p.snap = s
	return s
}

// askCluster asks every socket and parser pool of the cluster for its
// status, as `edgegate status` does. Alone, the appliance waits for its
// own parts (up to a second); with routes, for the peers' answers too,
// for a quarter of a second.
func (p *statusPage) askCluster() ([]coord.Status, []string) {
	a := p.a
	want := map[string]bool{}
	if a.sock != nil {
		want["socket"] = true
	}
	if a.pool != nil {
		want["pool"] = true
	}
	inbox := nats.NewInbox()
	ch := make(chan *nats.Msg, 256)
	sub, err := p.coordNC.ChanSubscribe(inbox, ch)
	if err != nil {
		return nil, []string{"status request: " + err.Error()}
	}
	defer sub.Unsubscribe()
	if err := p.coordNC.PublishRequest(coord.SubjectStatus, inbox, nil); err != nil {
		return nil, []string{"status request: " + err.Error()}
	}
	clustered := a.nats.NATS().NumRoutes() > 0
	wait := time.Second
	if clustered {
		wait = 250 * time.Millisecond
	}
	deadline := time.NewTimer(wait)
	defer deadline.Stop()
	var out []coord.Status
collect:
	for {
		select {
		case m := <-ch:
			var st coord.Status
			if json.Unmarshal(m.Data, &st) != nil {
				continue
			}
			out = append(out, st)
			if st.Appliance == a.cfg.Name {
				delete(want, st.Kind)
			}
			if len(want) == 0 && !clustered {
				break collect
			}
		case <-deadline.C:
			break collect
		}
	}
	var missing []string
	for kind := range want {
		missing = append(missing, fmt.Sprintf("this appliance's %s did not answer within %v", map[string]string{"pool": "parser pool", "socket": "socket"}[kind], wait))
	}
	sort.Strings(missing)
	return out, missing
}

func (p *statusPage) leaseStore() leaseStoreDoc {
	a := p.a
	d := leaseStoreDoc{Kind: a.storeName()}
	if d.Kind == "redis" {
		d.Kind += " " + cmp.Or(a.cfg.Lease.RedisMode, "standalone")
	}
	t0 := time.Now()
	err := a.storeUp()
	d.PingMs = float64(time.Since(t0).Microseconds()) / 1000
	d.Up = err == nil
	if err != nil {
		d.Error = err.Error()
		if errors.Is(err, context.DeadlineExceeded) {
			d.Error = "no answer within 500ms"
		}
	}
	return d
}

// statusDoc is GET /status.json, what the page shows.
type statusDoc struct {
	Appliance  string        `json:"appliance"`
	Version    string        `json:"version"`
	Now        time.Time     `json:"now"`
	UptimeS    int64         `json:"uptime_s"`
	Ready      bool          `json:"ready"`
	NotReady   string        `json:"not_ready,omitempty"`
	Routes     int           `json:"routes"`
	Peers      []string      `json:"peers"` // configured route addresses
	LeaseStore leaseStoreDoc `json:"lease_store"`
	Missing    []string      `json:"missing,omitempty"`
	// Appliances of the cluster that answered, this one first.
	Appliances []applianceDoc `json:"appliances"`
	// Controllers with messages queued or a batch in flight, stuck ones
	// first, at most pageControllers of ControllersTotal.
	Controllers      []controllerDoc `json:"controllers"`
	ControllersTotal int             `json:"controllers_total"`
	Stuck            int             `json:"stuck"`
	// Held counts the controllers left out: their lease kept between
	// batches, no message waiting.
	Held int `json:"held"`
	// StuckAfterMs is when a controller counts as stuck: its batch at a
	// parser for longer (see stuckAfter), or its parser silent for longer
	// than the lease's TTL (its lease should have expired).
	StuckAfterMs int64        `json:"stuck_after_ms"`
	DeadLetters  []deadLetter `json:"dead_letters"`
	DeadSeen     uint64       `json:"dead_seen"` // dead letters since this appliance started
	Samples      []sample     `json:"samples"`
	Totals       totalsDoc    `json:"totals"`
}

type applianceDoc struct {
	Name     string `json:"name"`
	Self     bool   `json:"self"`
	Pools    int    `json:"pools"`
	Workers  int    `json:"workers"`
	Busy     int    `json:"busy"`
	Free     int    `json:"free"`
	Sockets  int    `json:"sockets"`
	Devices  int    `json:"devices"`
	Queued   int    `json:"queued"`
	InFlight int    `json:"in_flight"`
	Paused   bool   `json:"paused"`
	Acked    uint64 `json:"acked"`
	Dead     uint64 `json:"dead_lettered"`
	Refused  uint64 `json:"refused"`
}

type controllerDoc struct {
	coord.ControllerStatus
	Socket string `json:"socket"` // the appliance whose socket holds it
	Stuck  bool   `json:"stuck"`
}

// totalsDoc is this appliance's counters since it started.
type totalsDoc struct {
	Received uint64 `json:"received"`
	Acked    uint64 `json:"acked"`
	Dead     uint64 `json:"dead_lettered"`
	Refused  uint64 `json:"refused"`
	Devices  int64  `json:"devices"`
}

func (p *statusPage) doc() statusDoc {
	a := p.a
	snap := p.current()
	samples, dead, nDead := p.recent()
	d := statusDoc{
		Appliance: a.cfg.Name, Version: cmp.Or(a.cfg.Build.Version, "unknown"),
		Now: time.Now().UTC(), UptimeS: int64(time.Since(p.started).Seconds()),
		Routes: a.nats.NATS().NumRoutes(), Peers: append([]string{}, a.cfg.NATS.Cluster.Peers...),
		LeaseStore: snap.store, Missing: snap.missing,
		DeadLetters: dead, DeadSeen: nDead, Samples: samples,
		Appliances: []applianceDoc{}, Controllers: []controllerDoc{},
	}
	if err := a.readiness(); err != nil {
		d.NotReady = err.Error()
	} else {
		d.Ready = true
	}
	st := a.SocketStats()
	d.Totals = totalsDoc{Received: st.Received, Acked: st.Acked, Dead: st.DeadLettered,
		Refused: st.Refused + st.ProtocolErrors[3], Devices: st.Connections}

	ttl, stuckAfter := a.cfg.Lease.TTL, snap.stuck
	d.StuckAfterMs = stuckAfter.Milliseconds()
	byName := map[string]*applianceDoc{}
	var names []string
	for _, s := range snap.answers {
		ad := byName[s.Appliance]
		if ad == nil {
			ad = &applianceDoc{Name: s.Appliance, Self: s.Appliance == a.cfg.Name}
			byName[s.Appliance] = ad
			names = append(names, s.Appliance)
		}
		switch s.Kind {
		case "pool":
			ad.Pools++
			ad.Workers += s.Workers
			ad.Busy += s.Busy
			ad.Free += s.Free
		case "socket":
			ad.Sockets++
			ad.Devices += s.Connections
			ad.Queued += s.Queued
			ad.InFlight += s.InFlight
			ad.Paused = ad.Paused || s.Paused
			ad.Acked += s.Counters["acked"]
			ad.Dead += s.Counters["dead_lettered"]
			ad.Refused += s.Counters["refused"]
			for _, c := range s.Controllers {
				if c.State == "held" && c.Queued == 0 {
					// A lease kept between batches, nothing waiting:
					// the normal state of a busy device, not worth a row.
					d.Held++
					continue
				}
				stuck := c.Locked && (time.Duration(c.HeartbeatAgoMs)*time.Millisecond > ttl ||
					time.Duration(c.LeaseAgeMs)*time.Millisecond > stuckAfter)
				if stuck {
					d.Stuck++
				}
				d.Controllers = append(d.Controllers, controllerDoc{ControllerStatus: c, Socket: s.Appliance, Stuck: stuck})
			}
		}
	}
	sort.Slice(names, func(i, j int) bool {
		if si, sj := names[i] == a.cfg.Name, names[j] == a.cfg.Name; si != sj {
			return si
		}
		return names[i] < names[j]
	})
	for _, n := range names {
		d.Appliances = append(d.Appliances, *byName[n])
	}
	// The ones a person should look at first: stuck, then the longest held,
	// then the longest backlog.
	sort.SliceStable(d.Controllers, func(i, j int) bool {
		ci, cj := d.Controllers[i], d.Controllers[j]
		if ci.Stuck != cj.Stuck {
			return ci.Stuck
		}
		if ci.LeaseAgeMs != cj.LeaseAgeMs {
			return ci.LeaseAgeMs > cj.LeaseAgeMs
		}
		if ci.Queued != cj.Queued {
			return ci.Queued > cj.Queued
		}
		return ci.ID < cj.ID
	})
	d.ControllersTotal = len(d.Controllers)
	d.Controllers = d.Controllers[:min(len(d.Controllers), pageControllers)]
	return d
}

// routes adds the page to m: GET / (the page), /ui/ (its files) and
// /status.json (what it shows, polled).
func (p *statusPage) routes(m *http.ServeMux) {
	web, _ := fs.Sub(webFiles, "web")
	files := http.FileServerFS(web)
	secure := func(h http.Handler) http.Handler {
		return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			// Everything the page uses comes from here: no inline script,
			// nothing from elsewhere, so an ID or error text a device chose
			// cannot run as script even if it slipped into the markup.
			w.Header().Set("Content-Security-Policy", "default-src 'self'; img-src 'self' data:; frame-ancestors 'none'")
			w.Header().Set("X-Content-Type-Options", "nosniff")
			w.Header().Set("Cache-Control", "no-cache")
			h.ServeHTTP(w, r)
		})
	}
	m.Handle("GET /{$}", secure(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		http.ServeFileFS(w, r, web, "index.html")
	})))
	m.Handle("GET /ui/", secure(http.StripPrefix("/ui/", files)))
	m.Handle("GET /status.json", secure(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		b, err := json.Marshal(p.doc())
		if err != nil {
			http.Error(w, err.Error(), http.StatusInternalServerError)
			return
		}
		w.Header().Set("Content-Length", strconv.Itoa(len(b)))
		w.Write(b)
	})))
}
