package appliance_test

import (
	"context"
	"net"
	"testing"

	"github.com/edgegate/edgegate/appliance"
)

// TestNewErrorReleasesDeviceListener: New fails after it bound the
// device port (http.listen in use); the port is free again, so that an
// embedder can call New again in the same process.
func TestNewErrorReleasesDeviceListener(t *testing.T) {
	busy, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer busy.Close()
	probe, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	devAddr := probe.Addr().String()
	probe.Close()

	cfg := testConfig(t, "a1")
	cfg.Devices.Listen = devAddr
	cfg.HTTP.Listen = busy.Addr().String()
	if _, err := appliance.New(context.Background(), cfg); err == nil {
		t.Fatal("New succeeded with http.listen in use")
	}
	ln, err := net.Listen("tcp", devAddr)
	if err != nil {
		t.Fatalf("devices.listen %s still bound after New failed: %v", devAddr, err)
	}
	ln.Close()
}
