package appliance_test

import (
	"context"
	"fmt"
	"net"
	"runtime"
	"testing"
	"time"

	"github.com/edgegate/edgegate/appliance"
	"github.com/edgegate/edgegate/device"
	"github.com/edgegate/edgegate/egp"
)

// BenchmarkEndToEnd sends b.N messages from pipelining devices over TCP
// through a whole appliance (in-process leases, the no-op handler) and
// waits for every ACK. allocs/op is the allocations per message of the
// whole path: device client, socket, NATS, parser. With window 1 every
// message is a batch of its own: the per-batch cost (lease, assignment,
// outcome).
//
//	go test ./appliance -run '^$' -bench EndToEnd -benchmem
func BenchmarkEndToEnd(b *testing.B) {
	for _, tt := range []struct{ controllers, window int }{{1, 256}, {100, 256}, {1000, 1}} {
		controllers := tt.controllers
		b.Run(fmt.Sprintf("controllers=%d/window=%d", controllers, tt.window), func(b *testing.B) {
			cfg := testConfig(b, "bench")
			d := appliance.DefaultConfig() // default leases and workers, not the tests' fast ones
			cfg.Lease, cfg.Parser.Workers = d.Lease, d.Parser.Workers
			cfg.Parser.Handler = "discard"
			a := start(b, cfg)
			ctx, cancel := context.WithCancel(context.Background())
			defer cancel()
			clients := make([]*device.Client, controllers)
			for i := range clients {
				c, err := device.Dial(ctx, device.Config{Addrs: []string{a.DeviceAddr()}, ID: fmt.Sprintf("b-%d", i), Window: tt.window})
				if err != nil {
					b.Fatal(err)
				}
				defer c.Close()
				clients[i] = c
			}
			payload := make([]byte, 64)
			b.ReportAllocs()
			b.ResetTimer()
			errs := make(chan error, controllers)
			for i, c := range clients {
				n := b.N / controllers
				if i < b.N%controllers {
					n++
				}
				go func() {
					for k := 0; k < n; k++ {
						if _, err := c.Send(ctx, payload); err != nil {
							errs <- err
							return
						}
					}
					errs <- c.Flush(ctx)
				}()
			}
			for range clients {
				if err := <-errs; err != nil {
					b.Fatal(err)
				}
			}
			b.StopTimer()
			b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "msg/s")
		})
	}
}

// BenchmarkIdleDevices connects 2,000 devices that each send one message,
// read its ACK and then stay connected and silent, and reports what the
// appliance holds per device: Go heap and goroutine stacks, by the
// runtime's statistics after a collection (the devices' side of each
// connection, a socket and no goroutine, is in the figure too). lean
// serves every connection lean (devices.lean_after 0), buffered none.
//
//	go test ./appliance -run '^$' -bench IdleDevices
func BenchmarkIdleDevices(b *testing.B) {
	const devices = 2000
	for _, lean := range []bool{false, true} {
		b.Run(map[bool]string{false: "buffered", true: "lean"}[lean], func(b *testing.B) {
			for range b.N {
				cfg := testConfig(b, "idle")
				serve(&cfg, lean)
				cfg.Parser.Handler = "discard"
				a := start(b, cfg)
				before := inUse()
				conns := make([]net.Conn, devices)
				for i := range conns {
					conns[i] = idleDevice(b, a.DeviceAddr(), fmt.Sprintf("idle-%d", i))
				}
				after := inUse()
				b.ReportMetric(float64(after.heap-before.heap)/devices, "heap-B/device")
				b.ReportMetric(float64(after.stack-before.stack)/devices, "stack-B/device")
				for _, c := range conns {
					c.Close()
				}
			}
		})
	}
}

type memInUse struct{ heap, stack uint64 }

// inUse is the heap and the stacks in use after two collections (the
// second frees what the first's finalizers let go).
func inUse() memInUse {
	runtime.GC()
	runtime.GC()
	var m runtime.MemStats
	runtime.ReadMemStats(&m)
	return memInUse{m.HeapInuse, m.StackInuse}
}

// idleDevice connects as id, sends one message, waits for its ACK and
// returns the connection.
func idleDevice(b *testing.B, addr, id string) net.Conn {
	b.Helper()
	c, err := net.DialTimeout("tcp", addr, 5*time.Second)
	if err != nil {
		b.Fatal(err)
	}
	c.SetDeadline(time.Now().Add(10 * time.Second))
	if _, err := c.Write(egp.AppendData(hello(id, 0), 1, []byte("hello"))); err != nil {
		b.Fatal(err)
	}
	r := egp.NewReader(c, 0, 64)
	for want := egp.TypeWelcome; ; want = egp.TypeAck {
		h, _, err := r.ReadFrame()
		if err != nil || h.Type != want {
			b.Fatalf("%s: got %v (%v), want %v", id, h.Type, err, want)
		}
		if want == egp.TypeAck {
			break
		}
	}
	c.SetDeadline(time.Time{})
	return c
}
