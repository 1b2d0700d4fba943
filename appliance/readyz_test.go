package appliance_test

import (
	"io"
	"net/http"
	"runtime"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats-server/v2/server"

	"github.com/edgegate/edgegate/appliance"
	"github.com/edgegate/edgegate/internal/redistest"
	"github.com/edgegate/edgegate/internal/wait"
)

// get returns the status and body of an HTTP GET.
func get(t *testing.T, url string) (int, string) {
	t.Helper()
	resp, err := http.Get(url)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b)
}

// TestReadyzFollowsTheLeaseStore: with Redis down the appliance cannot
// dispatch, so /readyz says 503 naming the lease store (and edgegate_ready
// is 0), and 200 again once Redis answers.
func TestReadyzFollowsTheLeaseStore(t *testing.T) {
	if testing.Short() {
		t.Skip("long: a Redis outage")
	}
	rs := redistest.Start(t)
	cfg := testConfig(t, "readyz")
	cfg.HTTP.Listen = "127.0.0.1:0"
	cfg.Lease.Redis = rs.URL()
	a := start(t, cfg)
	base := "http://" + a.HTTPAddr()
	waitStatus := func(want int, body string) {
		t.Helper()
		wait.True(t, 15*time.Second, "/readyz answers "+http.StatusText(want), func() bool {
			code, b := get(t, base+"/readyz")
			return code == want && strings.Contains(b, body)
		})
	}
	waitStatus(http.StatusOK, "ready")

	rs.Kill()
	waitStatus(http.StatusServiceUnavailable, "lease store")
	_, metrics := get(t, base+"/metrics")
	for _, want := range []string{"edgegate_lease_store_up 0", "edgegate_ready 0"} {
		if !strings.Contains(metrics, want) {
			t.Errorf("/metrics with Redis down lacks %q", want)
		}
	}
	if code, _ := get(t, base+"/healthz"); code != http.StatusOK {
		t.Errorf("/healthz with Redis down: %d, want 200 (the process works)", code)
	}

	rs.Restart()
	waitStatus(http.StatusOK, "ready")
	_, metrics = get(t, base+"/metrics")
	if !strings.Contains(metrics, "edgegate_ready 1") {
		t.Errorf("/metrics with Redis back lacks edgegate_ready 1")
	}
}

// TestBuildInfo: /metrics carries edgegate_build_info with the build's
// labels.
func TestBuildInfo(t *testing.T) {
	cfg := testConfig(t, "build")
	cfg.HTTP.Listen = "127.0.0.1:0"
	cfg.Build = appliance.BuildInfo{Version: "1.2.3", Commit: "abc123"}
	a := start(t, cfg)
	_, metrics := get(t, "http://"+a.HTTPAddr()+"/metrics")
	want := `edgegate_build_info{commit="abc123",goversion="` + runtime.Version() + `",nats_server="` + server.VERSION + `",version="1.2.3"} 1`
	if !strings.Contains(metrics, want) {
		t.Errorf("/metrics lacks %s", want)
	}
}
