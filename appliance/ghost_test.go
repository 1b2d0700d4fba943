//go:build linux

package appliance_test

import (
	"context"
	"net"
	"syscall"
	"testing"
	"time"

	"github.com/edgegate/edgegate/device"
	"github.com/edgegate/edgegate/egp"
)

// ghostHello sends hello on a new connection to addr and closes it, the
// bytes and the end of the stream in one segment (TCP_CORK holds the
// bytes until the close): the appliance finds the connection closed when
// it reads the HELLO, as it does after being stopped while the device
// gave up on the connection.
func ghostHello(t *testing.T, addr string, hello []byte) {
	t.Helper()
	c, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	rc, err := c.(*net.TCPConn).SyscallConn()
	if err != nil {
		t.Fatal(err)
	}
	var serr error
	rc.Control(func(fd uintptr) { serr = syscall.SetsockoptInt(int(fd), syscall.IPPROTO_TCP, syscall.TCP_CORK, 1) })
	if serr != nil {
		t.Fatal(serr)
	}
	if _, err := c.Write(hello); err != nil {
		t.Fatal(err)
	}
	c.Close()
}

// TestGhostHelloTakesNothingOver: a HELLO whose connection is closed by
// the time it is read opens no session: the live session of the same
// controller goes on. A device that gave up on a connection to a stopped
// or overloaded appliance reconnected elsewhere; when that appliance read
// the stale HELLO, it took the live session over (ERROR 6, "a newer
// session exists") with nobody at the other end.
func TestGhostHelloTakesNothingOver(t *testing.T) {
	cfg := testConfig(t, "ghost")
	cfg.Devices.LinesListen = "127.0.0.1:0"
	a := start(t, cfg)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	for _, tc := range []struct {
		name, id string
		hello    []byte
	}{
		{"egp", "ghost-egp", egp.AppendHello(nil, egp.Hello{Version: egp.Version, ID: "ghost-egp"})},
		{"lines", "ghost-lines", []byte("HELLO ghost-lines\n")},
	} {
		t.Run(tc.name, func(t *testing.T) {
			dev := dialDevice(t, device.Config{Addrs: []string{a.DeviceAddr()}, ID: tc.id})
			if err := sendAll(ctx, dev, tc.id, 3); err != nil {
				t.Fatal(err)
			}
			addr := a.DeviceAddr()
			if tc.name == "lines" {
				addr = a.LinesAddr()
			}
			for range 3 {
				ghostHello(t, addr, tc.hello)
			}
			// The ghosts' HELLOs are read in well under a second; the
			// device sends on meanwhile, and after.
			for range 5 {
				if err := sendAll(ctx, dev, tc.id, 20); err != nil {
					t.Fatalf("the live session after ghost HELLOs: %v", err)
				}
			}
		})
	}
}
