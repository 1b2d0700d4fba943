package appliance_test

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/edgegate/edgegate/appliance"
	"github.com/edgegate/edgegate/device"
	"github.com/edgegate/edgegate/internal/wait"
	"github.com/edgegate/edgegate/parser"
)

// pageStatus is the part of /status.json the tests read.
type pageStatus struct {
	Appliance   string `json:"appliance"`
	Ready       bool   `json:"ready"`
	Stuck       int    `json:"stuck"`
	Controllers []struct {
		ID     string `json:"id"`
		Queued int    `json:"queued"`
		Holder string `json:"holder"`
		Fence  uint64 `json:"fence"`
		Stuck  bool   `json:"stuck"`
	} `json:"controllers"`
	Routes     int `json:"routes"`
	LeaseStore struct {
		Kind string `json:"kind"`
		Up   bool   `json:"up"`
	} `json:"lease_store"`
	Appliances []struct {
		Name    string `json:"name"`
		Self    bool   `json:"self"`
		Workers int    `json:"workers"`
		Free    int    `json:"free"`
		Sockets int    `json:"sockets"`
		Acked   uint64 `json:"acked"`
	} `json:"appliances"`
	DeadLetters []struct {
		Controller, Seq, Error string
	} `json:"dead_letters"`
	Samples []struct {
		Acked float64  `json:"acked"`
		P99   *float64 `json:"p99_ms"`
	} `json:"samples"`
	Totals struct {
		Acked uint64 `json:"acked"`
	} `json:"totals"`
}

func readStatus(t *testing.T, base string) pageStatus {
	t.Helper()
	code, body := get(t, base+"/status.json")
	if code != http.StatusOK {
		t.Fatalf("/status.json: %d %s", code, body)
	}
	var st pageStatus
	if err := json.Unmarshal([]byte(body), &st); err != nil {
		t.Fatalf("/status.json: %v\n%s", err, body)
	}
	return st
}

// pageAppliance starts an appliance with the status page on loopback,
// sends it traffic from simulated devices over a few seconds (so that the
// chart has a shape), one message its handler refuses (a dead letter) and
// one it never finishes (a stuck controller), and waits until
// /status.json shows all of it.
func pageAppliance(t *testing.T) (base string) {
	t.Helper()
	cfg := testConfig(t, "gw-status")
	cfg.HTTP.Listen = "127.0.0.1:0"
	cfg.Handler = parser.HandlerFunc(func(ctx context.Context, m *parser.Message) error {
		switch string(m.Payload) {
		case "not json":
			return parser.Permanent(errors.New("payload is not valid JSON"))
		case "hang":
			<-ctx.Done() // until the appliance stops
			return ctx.Err()
		}
		return nil
	})
	a := start(t, cfg)
	a.SetStuckAfter(500 * time.Millisecond)
	base = "http://" + a.HTTPAddr()

	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	const controllers, messages = 8, 120
	rep, err := device.Simulate(ctx, device.SimConfig{
		Addrs: []string{a.DeviceAddr()}, Controllers: controllers, Messages: messages, Rate: 15, Window: 16,
	}, nil)
	if err != nil || rep.Acked != controllers*messages {
		t.Fatalf("simulate: %v, %d of %d acknowledged", err, rep.Acked, controllers*messages)
	}
	bad := dialDevice(t, device.Config{Addrs: []string{a.DeviceAddr()}, ID: "meter-7"})
	if _, err := bad.Send(ctx, []byte("not json")); err != nil {
		t.Fatal(err)
	}
	if err := bad.Flush(ctx); err != nil {
		t.Fatal(err)
	}
	hung := dialDevice(t, device.Config{Addrs: []string{a.DeviceAddr()}, ID: "valve-3"})
	for _, p := range []string{"hang", "then this", "and this"} {
		if _, err := hung.Send(ctx, []byte(p)); err != nil {
			t.Fatal(err)
		}
	}
	wait.True(t, 10*time.Second, "/status.json shows the traffic, its latency, the dead letter and the stuck controller", func() bool {
		st := readStatus(t, base)
		rated := false
		for _, s := range st.Samples {
			rated = rated || s.Acked > 0 && s.P99 != nil
		}
		return rated && len(st.DeadLetters) == 1 && st.Totals.Acked == controllers*messages+1 && st.Stuck == 1
	})
	return base
}

// TestStatusJSON: /status.json describes the appliance, its parts, the
// lease store, the traffic per second and the dead letters; / serves the
// page and /ui/ its files, from the binary, under a strict CSP.
func TestStatusJSON(t *testing.T) {
	if testing.Short() {
		t.Skip("long: seconds of traffic for the per-second samples")
	}
	base := pageAppliance(t)
	st := readStatus(t, base)
	if st.Appliance != "gw-status" || !st.Ready {
		t.Errorf("appliance %q ready %v, want gw-status ready", st.Appliance, st.Ready)
	}
	if st.LeaseStore.Kind != "in-process" || !st.LeaseStore.Up {
		t.Errorf("lease store %+v, want in-process and up", st.LeaseStore)
	}
	if len(st.Appliances) != 1 || !st.Appliances[0].Self || st.Appliances[0].Workers != 8 || st.Appliances[0].Sockets != 1 {
		t.Errorf("appliances %+v, want this one with 8 workers and a socket", st.Appliances)
	}
	if d := st.DeadLetters[0]; d.Controller != "meter-7" || d.Seq != "1" || !strings.Contains(d.Error, "JSON") {
		t.Errorf("dead letter %+v, want meter-7 seq 1 refused as not JSON", d)
	}
	if len(st.Controllers) != 1 {
		t.Fatalf("controllers %+v, want valve-3 alone", st.Controllers)
	}
	if c := st.Controllers[0]; c.ID != "valve-3" || !c.Stuck || c.Holder != "gw-status" || c.Fence == 0 {
		t.Errorf("controller %+v, want valve-3 stuck at gw-status's parser under a fence", c)
	}

	for path, want := range map[string]string{"/": "<title>edgegate</title>", "/ui/app.js": "status.json", "/ui/style.css": ".chart"} {
		resp, err := http.Get(base + path)
		if err != nil {
			t.Fatal(err)
		}
		var b bytes.Buffer
		b.ReadFrom(resp.Body)
		resp.Body.Close()
		if resp.StatusCode != http.StatusOK || !strings.Contains(b.String(), want) {
			t.Errorf("GET %s: %d, body lacks %q", path, resp.StatusCode, want)
		}
		if csp := resp.Header.Get("Content-Security-Policy"); !strings.Contains(csp, "default-src 'self'") {
			t.Errorf("GET %s: Content-Security-Policy %q", path, csp)
		}
	}
	// The stuck controller shows in /metrics too, for the alert rule.
	_, metrics := get(t, base+"/metrics")
	m := regexp.MustCompile(`(?m)^edgegate_batch_oldest_seconds (\S+)$`).FindStringSubmatch(metrics)
	if m == nil {
		t.Errorf("/metrics lacks edgegate_batch_oldest_seconds")
	} else if v, _ := strconv.ParseFloat(m[1], 64); v < 0.5 {
		t.Errorf("edgegate_batch_oldest_seconds %s, want at least 0.5 (valve-3's batch)", m[1])
	}
	if code, _ := get(t, base+"/nothing-here"); code != http.StatusNotFound {
		t.Errorf("GET /nothing-here: %d, want 404 (only / is the page)", code)
	}
}

// TestStatusJSONCluster: the page of one appliance shows its peers'
// parser pools and sockets, as `edgegate status` does.
func TestStatusJSONCluster(t *testing.T) {
	if testing.Short() {
		t.Skip("long: a cluster of appliances")
	}
	j := newJournal(nil)
	apps := startCluster(t, 2, j, func(i int, cfg *appliance.Config) {
		cfg.HTTP.Listen = "127.0.0.1:0"
	})
	base := "http://" + apps[0].HTTPAddr()
	var st pageStatus
	wait.True(t, 10*time.Second, "both appliances on node-0's page", func() bool {
		st = readStatus(t, base)
		return len(st.Appliances) == 2
	})
	if st.Routes == 0 || st.LeaseStore.Kind != "redis standalone" || !st.LeaseStore.Up {
		t.Errorf("routes %d, lease store %+v: want routes and redis up", st.Routes, st.LeaseStore)
	}
	if a, b := st.Appliances[0], st.Appliances[1]; a.Name != "node-0" || !a.Self || b.Name != "node-1" || b.Self || b.Workers != 8 {
		t.Errorf("appliances %+v, want node-0 (this one) then node-1 with 8 workers", st.Appliances)
	}
}

// chromium returns the headless browser's path: Debian's chromium. Absent,
// the browser test skips, unless EDGEGATE_REQUIRE_BROWSER is set (CI sets
// it): then it fails.
func chromium(t *testing.T) string {
	t.Helper()
	for _, name := range []string{"chromium", "chromium-browser", "google-chrome"} {
		if p, err := exec.LookPath(name); err == nil {
			return p
		}
	}
	if os.Getenv("EDGEGATE_REQUIRE_BROWSER") != "" {
		t.Fatal("chromium not found and EDGEGATE_REQUIRE_BROWSER is set")
	}
	t.Skip("chromium not found: skipping the browser test (apt-get install chromium)")
	return ""
}

// browse loads url in headless Chromium, lets its scripts run for 6s of
// virtual time, and returns what the browser wrote: standard output (the
// DOM with -dump-dom) and the console messages it logged.
func browse(t *testing.T, bin, url string, args ...string) (stdout string, console []string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 90*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, bin, append([]string{
		"--headless", "--disable-gpu", "--no-first-run", "--no-default-browser-check",
		"--user-data-dir=" + t.TempDir(),
		// As root (CI) the sandbox cannot start; the page is our own.
		"--no-sandbox",
		// Nothing but the appliance on loopback: no update checks, no
		// other host resolves.
		"--disable-background-networking", "--disable-component-update", "--disable-sync", "--disable-extensions",
		"--disable-default-apps", "--no-pings", "--host-resolver-rules=MAP * ~NOTFOUND, EXCLUDE 127.0.0.1",
		"--enable-logging=stderr", "--v=0",
		"--window-size=1280,1100", "--hide-scrollbars",
		"--virtual-time-budget=6000",
	}, append(args, url)...)...)
	cmd.WaitDelay = 5 * time.Second
	var out, errb bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errb
	if err := cmd.Run(); err != nil {
		t.Fatalf("%s: %v\n%s", bin, err, errb.String())
	}
	for _, line := range strings.Split(errb.String(), "\n") {
		if strings.Contains(line, ":CONSOLE") {
			console = append(console, line)
		}
	}
	return out.String(), console
}

// artifactDir is where the browser test keeps its screenshot:
// $EDGEGATE_ARTIFACTS (CI sets it), else the test's artifact directory
// (kept with go test -artifacts).
func artifactDir(t *testing.T) string {
	t.Helper()
	dir := os.Getenv("EDGEGATE_ARTIFACTS")
	if dir == "" {
		return t.ArtifactDir()
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	return dir
}

// TestStatusPageInChromium loads the status page in a real headless
// browser while the appliance has served devices: the page's scripts run
// without an error or a console message, and the DOM they built shows the
// appliance, its figures and the chart. The screenshot is kept.
func TestStatusPageInChromium(t *testing.T) {
	if testing.Short() {
		t.Skip("long: seconds of traffic and a browser")
	}
	bin := chromium(t)
	base := pageAppliance(t)

	dom, console := browse(t, bin, base+"/", "--dump-dom")
	if len(console) > 0 {
		t.Errorf("the page logged to the console:\n%s", strings.Join(console, "\n"))
	}
	if strings.Contains(dom, "data-errors") {
		t.Errorf("the page caught a script error: %s", regexp.MustCompile(`(?s)<div id="banner".*?</div>`).FindString(dom))
	}
	if !strings.Contains(dom, `data-loaded="`) {
		t.Fatalf("the page never rendered status.json; DOM:\n%s", dom)
	}
	text := func(id string) string {
		m := regexp.MustCompile(`id="` + id + `"[^>]*>([^<]*)<`).FindStringSubmatch(dom)
		if m == nil {
			t.Fatalf("no #%s in the DOM:\n%s", id, dom)
		}
		return m[1]
	}
	if got := text("appliance-name"); got != "gw-status" {
		t.Errorf("appliance name %q, want gw-status", got)
	}
	if got := text("ready"); got != "ready" {
		t.Errorf("readiness %q, want ready", got)
	}
	if n, err := strconv.Atoi(strings.ReplaceAll(text("acked-total"), ",", "")); err != nil || n != 961 {
		t.Errorf("acknowledged %q, want 961", text("acked-total"))
	}
	if got := text("dead-total"); got != "1" {
		t.Errorf("dead letters %q, want 1", got)
	}
	if got := text("store"); got != "up" {
		t.Errorf("lease store %q, want up", got)
	}
	for _, want := range []string{`class="line acked"`, `class="line p99"`, "meter-7", "payload is not valid JSON",
		"gw-status <span class=\"tag self\">this</span>", `<tr class="stuck"><td>valve-3</td>`, "1 controller looks stuck"} {
		if !strings.Contains(dom, want) {
			t.Errorf("the DOM lacks %q", want)
		}
	}

	shot := filepath.Join(artifactDir(t), "status-page.png")
	os.Remove(shot)
	browse(t, bin, base+"/", "--screenshot="+shot)
	b, err := os.ReadFile(shot)
	if err != nil || !bytes.HasPrefix(b, []byte("\x89PNG")) {
		t.Fatalf("no screenshot at %s: %v", shot, err)
	}
	t.Logf("screenshot of the status page: %s (%d bytes)", shot, len(b))
}
