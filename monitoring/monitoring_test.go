package monitoring_test

import (
	"context"
	"encoding/json"
	"errors"
	"log/slog"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"testing"
	"time"

	dto "github.com/prometheus/client_model/go"
	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"
	"gopkg.in/yaml.v3"

	"github.com/edgegate/edgegate/appliance"
	"github.com/edgegate/edgegate/device"
	"github.com/edgegate/edgegate/egp"
)

// rules is the part of a Prometheus rule file the tests read.
type rules struct {
	Groups []struct {
		Name  string `yaml:"name"`
		Rules []struct {
			Alert       string            `yaml:"alert"`
			Expr        string            `yaml:"expr"`
			For         string            `yaml:"for"`
			Labels      map[string]string `yaml:"labels"`
			Annotations map[string]string `yaml:"annotations"`
		} `yaml:"rules"`
	} `yaml:"groups"`
}

func readRules(t *testing.T) rules {
	t.Helper()
	b, err := os.ReadFile("edgegate.rules.yml")
	if err != nil {
		t.Fatal(err)
	}
	var r rules
	dec := yaml.NewDecoder(strings.NewReader(string(b)))
	dec.KnownFields(true) // a misspelt key is an error, not a rule without it
	if err := dec.Decode(&r); err != nil {
		t.Fatalf("edgegate.rules.yml: %v", err)
	}
	return r
}

// dashboard is the part of the Grafana dashboard the tests read.
type dashboard struct {
	UID    string `json:"uid"`
	Title  string `json:"title"`
	Inputs []struct {
		Name     string `json:"name"`
		PluginID string `json:"pluginId"`
	} `json:"__inputs"`
	Templating struct {
		List []struct {
			Name       string `json:"name"`
			Definition string `json:"definition"`
		} `json:"list"`
	} `json:"templating"`
	Panels []struct {
		ID         int    `json:"id"`
		Type       string `json:"type"`
		Title      string `json:"title"`
		Datasource *struct {
			UID string `json:"uid"`
		} `json:"datasource"`
		GridPos struct{ X, Y, W, H int } `json:"gridPos"`
		Targets []struct {
			RefID string `json:"refId"`
			Expr  string `json:"expr"`
		} `json:"targets"`
	} `json:"panels"`
}

func readDashboard(t *testing.T) dashboard {
	t.Helper()
	b, err := os.ReadFile("grafana-dashboard.json")
	if err != nil {
		t.Fatal(err)
	}
	var d dashboard
	if err := json.Unmarshal(b, &d); err != nil {
		t.Fatalf("grafana-dashboard.json: %v", err)
	}
	return d
}

// TestRulesWellFormed: every rule is an alert with an expression, a
// duration Prometheus reads, a severity and what a person needs (summary,
// description); the four alerts operators asked for are there.
func TestRulesWellFormed(t *testing.T) {
	r := readRules(t)
	seen := map[string]bool{}
	for _, g := range r.Groups {
		for _, rule := range g.Rules {
			if rule.Alert == "" || strings.TrimSpace(rule.Expr) == "" {
				t.Errorf("group %s: a rule without alert or expr: %+v", g.Name, rule)
				continue
			}
			if seen[rule.Alert] {
				t.Errorf("alert %s twice", rule.Alert)
			}
			seen[rule.Alert] = true
			if rule.For != "" {
				if _, err := model.ParseDuration(rule.For); err != nil {
					t.Errorf("alert %s: for %q: %v", rule.Alert, rule.For, err)
				}
			}
			if s := rule.Labels["severity"]; s != "critical" && s != "warning" {
				t.Errorf("alert %s: severity %q, want critical or warning", rule.Alert, s)
			}
			for _, a := range []string{"summary", "description"} {
				if rule.Annotations[a] == "" {
					t.Errorf("alert %s: no %s", rule.Alert, a)
				}
			}
		}
	}
	for _, want := range []string{"EdgegateControllerStuck", "EdgegateLeaseStoreDown", "EdgegateDeadLettersRising", "EdgegateDevicesRefused"} {
		if !seen[want] {
			t.Errorf("no alert %s", want)
		}
	}
}

// TestDashboardWellFormed: the dashboard imports (its data source is an
// input), its panels have unique IDs, fit the 24-column grid, and every
// graph has a query on that data source.
func TestDashboardWellFormed(t *testing.T) {
	d := readDashboard(t)
	if d.UID == "" || d.Title == "" {
		t.Errorf("uid %q title %q: want both", d.UID, d.Title)
	}
	if len(d.Inputs) != 1 || d.Inputs[0].Name != "DS_PROMETHEUS" || d.Inputs[0].PluginID != "prometheus" {
		t.Errorf("__inputs %+v, want the Prometheus data source DS_PROMETHEUS", d.Inputs)
	}
	ids := map[int]bool{}
	for _, p := range d.Panels {
		if ids[p.ID] {
			t.Errorf("panel id %d twice", p.ID)
		}
		ids[p.ID] = true
		if p.GridPos.W <= 0 || p.GridPos.H <= 0 || p.GridPos.X < 0 || p.GridPos.X+p.GridPos.W > 24 {
			t.Errorf("panel %q: gridPos %+v outside the 24-column grid", p.Title, p.GridPos)
		}
		if p.Type == "row" {
			continue
		}
		if p.Datasource == nil || p.Datasource.UID != "${DS_PROMETHEUS}" {
			t.Errorf("panel %q: data source %+v, want ${DS_PROMETHEUS}", p.Title, p.Datasource)
		}
		if len(p.Targets) == 0 {
			t.Errorf("panel %q: no query", p.Title)
		}
		for _, q := range p.Targets {
			if strings.TrimSpace(q.Expr) == "" {
				t.Errorf("panel %q: query %s is empty", p.Title, q.RefID)
			}
		}
	}
}

// exprs returns every PromQL expression the rules and the dashboard hold,
// each with where it is.
func exprs(t *testing.T) map[string]string {
	t.Helper()
	out := map[string]string{}
	for _, g := range readRules(t).Groups {
		for _, r := range g.Rules {
			out["alert "+r.Alert] = r.Expr
		}
	}
	d := readDashboard(t)
	for _, p := range d.Panels {
		for _, q := range p.Targets {
			out["panel "+p.Title+" "+q.RefID] = q.Expr
		}
	}
	for _, v := range d.Templating.List {
		out["variable "+v.Name] = v.Definition
	}
	return out
}

var (
	// A metric name of edgegate, of the Go runtime or of the process,
	// with the label matchers that follow it, if any.
	selectorRE = regexp.MustCompile(`\b((?:edgegate|go|process)_[a-zA-Z0-9_]+)(\{[^}]*\})?`)
	matcherRE  = regexp.MustCompile(`([a-zA-Z_][a-zA-Z0-9_]*)\s*(?:=~|!~|!=|=)`)
	// Labels Prometheus adds to every scraped series.
	targetLabels = []string{"instance", "job"}
)

// TestMetricsExist starts an appliance, makes it serve a device and refuse
// one (so that the series that appear only with traffic appear), scrapes
// its /metrics, and checks that every metric the rules and the dashboard
// name exists there, with the labels they match on: a renamed metric
// must not leave an alert that can never fire.
func TestMetricsExist(t *testing.T) {
	families := scrape(t)
	checked := 0
	for where, expr := range exprs(t) {
		for _, m := range selectorRE.FindAllStringSubmatch(expr, -1) {
			name, matchers := m[1], m[2]
			mf := family(families, name)
			if mf == nil {
				t.Errorf("%s: no metric %s in /metrics", where, name)
				continue
			}
			checked++
			for _, lm := range matcherRE.FindAllStringSubmatch(matchers, -1) {
				label := lm[1]
				if !slices.Contains(targetLabels, label) && !hasLabel(mf, label) {
					t.Errorf("%s: %s has no label %q", where, name, label)
				}
			}
		}
	}
	if checked < 20 {
		t.Errorf("only %d metric references checked: the expressions were not read", checked)
	}
	t.Logf("%d metric references checked against /metrics", checked)
}

// family returns the family that serves name: itself, or the histogram or
// summary whose _bucket, _sum or _count series it is.
func family(families map[string]*dto.MetricFamily, name string) *dto.MetricFamily {
	if mf := families[name]; mf != nil {
		return mf
	}
	for _, suffix := range []string{"_bucket", "_sum", "_count"} {
		base, ok := strings.CutSuffix(name, suffix)
		if !ok {
			continue
		}
		if mf := families[base]; mf != nil && (mf.GetType() == dto.MetricType_HISTOGRAM || mf.GetType() == dto.MetricType_SUMMARY && suffix != "_bucket") {
			return mf
		}
	}
	return nil
}

func hasLabel(mf *dto.MetricFamily, label string) bool {
	if label == "le" && mf.GetType() == dto.MetricType_HISTOGRAM {
		return true
	}
	for _, m := range mf.GetMetric() {
		for _, l := range m.GetLabel() {
			if l.GetName() == label {
				return true
			}
		}
	}
	return false
}

// scrape runs an appliance on loopback until the test ends, has one
// device deliver a message and another refused for its token, and returns
// the parsed /metrics.
func scrape(t *testing.T) map[string]*dto.MetricFamily {
	t.Helper()
	tokens := filepath.Join(t.TempDir(), "devices.tokens")
	if err := os.WriteFile(tokens, []byte("mon-* mon-secret\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	cfg := appliance.DefaultConfig()
	cfg.Name = "monitoring"
	cfg.DataDir = t.TempDir()
	cfg.Devices.Listen = "127.0.0.1:0"
	cfg.Devices.Tokens = tokens
	cfg.NATS.Listen = ""
	cfg.NATS.JetStream = false
	cfg.HTTP.Listen = "127.0.0.1:0"
	cfg.Parser.Workers = 2
	cfg.Logger = slog.New(slog.DiscardHandler)

	ctx, cancel := context.WithCancel(context.Background())
	a, err := appliance.New(ctx, cfg)
	if err != nil {
		cancel()
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- a.Run(ctx) }()
	t.Cleanup(func() {
		cancel()
		select {
		case err := <-done:
			if err != nil {
				t.Errorf("appliance: %v", err)
			}
		case <-time.After(30 * time.Second):
			t.Errorf("appliance did not stop within 30s")
		}
	})
	select {
	case <-a.Ready():
	case err := <-done:
		t.Fatalf("appliance stopped at start: %v", err)
	case <-time.After(10 * time.Second):
		t.Fatal("appliance not ready within 10s")
	}

	dctx, dcancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer dcancel()
	addrs := []string{a.DeviceAddr()}
	dev, err := device.Dial(dctx, device.Config{Addrs: addrs, ID: "mon-1", Token: []byte("mon-secret")})
	if err != nil {
		t.Fatal(err)
	}
	defer dev.Close()
	if _, err := dev.Send(dctx, []byte(`{"t":21.5}`)); err != nil {
		t.Fatal(err)
	}
	if err := dev.Flush(dctx); err != nil {
		t.Fatal(err)
	}
	var pe *egp.Error
	if c, err := device.Dial(dctx, device.Config{Addrs: addrs, ID: "mon-2", Token: []byte("wrong")}); err == nil {
		c.Close()
		t.Fatal("a device with a wrong token was served")
	} else if !errors.As(err, &pe) || pe.Code != egp.CodeAuth {
		t.Fatalf("a device with a wrong token: %v, want ERROR auth", err)
	}

	resp, err := http.Get("http://" + a.HTTPAddr() + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	p := expfmt.NewTextParser(model.UTF8Validation)
	families, err := p.TextToMetricFamilies(resp.Body)
	if err != nil {
		t.Fatalf("/metrics: %v", err)
	}
	return families
}

// TestPromtool checks the rules with Prometheus's own promtool, and runs
// their unit tests (edgegate.rules.test.yml: each alert fires on its
// series, not before its time). Without promtool it skips, unless
// EDGEGATE_REQUIRE_PACKAGING is set (the rules are part of the package).
func TestPromtool(t *testing.T) {
	bin, err := exec.LookPath("promtool")
	if err != nil {
		if os.Getenv("EDGEGATE_REQUIRE_PACKAGING") != "" {
			t.Fatal("promtool not found and EDGEGATE_REQUIRE_PACKAGING is set")
		}
		t.Skip("promtool not found: skipping (it is in Debian's prometheus package; .ci/run extracts it)")
	}
	for _, args := range [][]string{{"check", "rules", "edgegate.rules.yml"}, {"test", "rules", "edgegate.rules.test.yml"}} {
		ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
		out, err := exec.CommandContext(ctx, bin, args...).CombinedOutput()
		cancel()
		if err != nil {
			t.Errorf("promtool %s: %v\n%s", strings.Join(args, " "), err, out)
		}
	}
}
