package appliance_test

import (
	"context"
	"fmt"
	"testing"

	"github.com/edgegate/edgegate/appliance"
	"github.com/edgegate/edgegate/device"
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
