package appliance_test

import (
	"context"
	"fmt"
	"log/slog"
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
			cfg := appliance.DefaultConfig()
			cfg.Name, cfg.DataDir = "bench", b.TempDir()
			cfg.Devices.Listen, cfg.NATS.Listen, cfg.HTTP.Listen = "127.0.0.1:0", "", ""
			cfg.NATS.JetStream = false
			cfg.Parser.Handler = "discard"
			cfg.Logger = slog.New(slog.DiscardHandler)
			ctx, cancel := context.WithCancel(context.Background())
			defer cancel()
			a, err := appliance.New(ctx, cfg)
			if err != nil {
				b.Fatal(err)
			}
			done := make(chan error, 1)
			go func() { done <- a.Run(ctx) }()
			defer func() { cancel(); <-done }()
			<-a.Ready()
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
