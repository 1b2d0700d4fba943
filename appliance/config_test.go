package appliance_test

import (
	"context"
	"net"
	"strings"
	"testing"
	"time"

	"github.com/edgegate/edgegate/appliance"
)

// TestNewFailsCleanly: a listener that cannot bind is an error naming the
// setting, and everything already started is stopped (goleak checks).
func TestNewFailsCleanly(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	cfg := testConfig(t, "busyport")
	cfg.Devices.Listen = ln.Addr().String()
	_, err = appliance.New(context.Background(), cfg)
	if err == nil || !strings.Contains(err.Error(), "devices.listen") {
		t.Fatalf("New with a taken port: %v, want an error naming devices.listen", err)
	}
}

// TestDuplicateWindowTooShort: a duplicate window shorter than a resend
// takes is refused, naming the setting.
func TestDuplicateWindowTooShort(t *testing.T) {
	cfg := testConfig(t, "dupwindow")
	cfg.NATS.DuplicateWindow = 5 * time.Second
	_, err := appliance.New(context.Background(), cfg)
	if err == nil || !strings.Contains(err.Error(), "nats.duplicate_window") {
		t.Fatalf("New with a 5s duplicate window: %v, want an error naming nats.duplicate_window", err)
	}
}
