package lease_test

import (
	"context"
	"fmt"
	"strconv"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/edgegate/edgegate/internal/redistest"
	"github.com/edgegate/edgegate/lease"
)

// BenchmarkRedisLeaseCycle is what a controller's burst costs the Redis
// of a cluster: acquire, keep, release. Redis runs every script on its one
// thread, so its CPU time per cycle ("redis-cpu-µs/cycle", from INFO
// cpu, network reads and writes included) bounds the leases a whole
// cluster can grant. Many callers at once, as in an appliance under load:
// their calls share pipelines.
func BenchmarkRedisLeaseCycle(b *testing.B) {
	srv := redistest.Start(b)
	c := srv.Client()
	s := lease.NewRedis(c, "bench", 0)
	ctx := context.Background()
	// Known controllers (their fence counters exist), as after a first
	// session: the usual case.
	for i := range 1000 {
		id := "c" + strconv.Itoa(i)
		g, err := s.Acquire(ctx, id, "o", 5*time.Second, lease.Session{})
		if err != nil {
			b.Fatal(err)
		}
		if err := s.Release(ctx, id, g.Token, 0); err != nil {
			b.Fatal(err)
		}
	}
	cpu0, err := redisCPU(ctx, c)
	if err != nil {
		b.Fatal(err)
	}
	var next atomic.Int64
	b.SetParallelism(32) // 64 callers on 2 CPUs: their calls share pipelines
	b.ResetTimer()
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			i := next.Add(1)
			id := "c" + strconv.FormatInt(i%1000, 10)
			g, err := s.Acquire(ctx, id, "o", 5*time.Second, lease.Session{})
			if err == lease.ErrHeld {
				continue // another caller has it at this moment
			}
			if err == nil {
				err = s.Keep(ctx, id, g.Token, 5*time.Second, uint64(i))
			}
			if err == nil {
				err = s.Release(ctx, id, g.Token, uint64(i)+1)
			}
			if err != nil {
				b.Error(err)
				return
			}
		}
	})
	b.StopTimer()
	cpu1, err := redisCPU(ctx, c)
	if err != nil {
		b.Fatal(err)
	}
	b.ReportMetric(float64((cpu1-cpu0).Microseconds())/float64(b.N), "redis-cpu-µs/cycle")
}

// redisCPU is the CPU time Redis has used (INFO cpu: user and system).
func redisCPU(ctx context.Context, c *redis.Client) (time.Duration, error) {
	info, err := c.Info(ctx, "cpu").Result()
	if err != nil {
		return 0, err
	}
	var total time.Duration
	for _, line := range strings.Split(info, "\n") {
		k, v, ok := strings.Cut(strings.TrimSpace(line), ":")
		if !ok || k != "used_cpu_user" && k != "used_cpu_sys" {
			continue
		}
		sec, err := strconv.ParseFloat(v, 64)
		if err != nil {
			return 0, fmt.Errorf("INFO cpu %q: %w", line, err)
		}
		total += time.Duration(sec * float64(time.Second))
	}
	return total, nil
}
