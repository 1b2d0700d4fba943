package bench

import (
	"context"
	"errors"
	"fmt"
	"os"
	"strconv"
	"sync"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/redis/go-redis/v9"

	"github.com/edgegate/edgegate/embed"
	"github.com/edgegate/edgegate/lease"
)

// NATSCeiling measures embedded NATS publish → subscribe of n messages of
// size bytes over in-process connections: the most any design built on
// this server could move, with no work per message.
func NATSCeiling(ctx context.Context, size, n int) (Result, error) {
	s, err := embed.New(embed.Config{Name: "bench-ceiling"})
	if err != nil {
		return Result{}, err
	}
	defer s.Shutdown()
	pub, err := s.Connect("bench-pub")
	if err != nil {
		return Result{}, err
	}
	defer pub.Close()
	sub, err := s.Connect("bench-sub")
	if err != nil {
		return Result{}, err
	}
	defer sub.Close()
	done := make(chan struct{})
	got := 0
	if _, err := sub.Subscribe("bench.ceiling", func(*nats.Msg) {
		if got++; got == n {
			close(done)
		}
	}); err != nil {
		return Result{}, err
	}
	if err := sub.Flush(); err != nil {
		return Result{}, err
	}
	payload := make([]byte, size)
	start := time.Now()
	for i := 0; i < n; i++ {
		if err := pub.Publish("bench.ceiling", payload); err != nil {
			return Result{}, err
		}
	}
	pub.Flush()
	select {
	case <-done:
	case <-ctx.Done():
		return Result{}, ctx.Err()
	case <-time.After(time.Minute):
		return Result{}, fmt.Errorf("bench: NATS ceiling: %d of %d delivered (slow consumer?)", got, n)
	}
	el := time.Since(start)
	return Result{Scenario: "ceiling/nats-pubsub", Controllers: 1, Messages: int64(n), Elapsed: el, Rate: float64(n) / el.Seconds(),
		CPU: -1, RSS: -1, Note: fmt.Sprintf("%d-byte messages, in-process connections, no work per message", size)}, nil
}

// RedisCeiling measures the lease scripts: acquire + release pairs per
// second against Redis at url, from conc goroutines on their own
// controllers, for d.
func RedisCeiling(ctx context.Context, url string, conc int, d time.Duration) (Result, error) {
	opts, err := redis.ParseURL(url)
	if err != nil {
		return Result{}, err
	}
	opts.PoolSize = conc + 2
	c := redis.NewClient(opts)
	defer c.Close()
	store := lease.NewRedis(c, "edgegate-bench", opts.DB)
	rctx, cancel := context.WithTimeout(ctx, d)
	defer cancel()
	var wg sync.WaitGroup
	counts := make([]int64, conc)
	errs := make([]error, conc)
	start := time.Now()
	run := start.UnixNano() // ids of their own: a lock left by an earlier run does not matter
	for g := 0; g < conc; g++ {
		wg.Go(func() {
			id := fmt.Sprintf("ceiling-%d-%d", run, g)
			for rctx.Err() == nil {
				gr, err := store.Acquire(rctx, id, "bench", 10*time.Second, lease.Session{})
				if err != nil {
					// The end of the run can surface as the deadline of a
					// pipeline a moment before rctx itself reports it.
					if rctx.Err() == nil && !errors.Is(err, context.DeadlineExceeded) {
						errs[g] = err
					}
					return
				}
				if err := store.Release(ctx, id, gr.Token, uint64(counts[g]+1)); err != nil {
					errs[g] = err
					return
				}
				counts[g]++
			}
		})
	}
	wg.Wait()
	el := time.Since(start)
	var n int64
	for g := range counts {
		if errs[g] != nil {
			return Result{}, fmt.Errorf("bench: Redis ceiling: %w", errs[g])
		}
		n += counts[g]
	}
	return Result{Scenario: fmt.Sprintf("ceiling/redis-acquire+release-x%d", conc), Controllers: conc, Messages: n, Elapsed: el,
		Rate: float64(n) / el.Seconds(), CPU: -1, RSS: -1, Note: "lease script pairs per second (a message per pair in a one-message-per-lock design)"}, nil
}

// JetStreamCeiling measures what the embedded server stores when nothing
// but publishing stands in the way: w's messages published asynchronously,
// each with a message ID and the headers of an edgegate record, over one
// subject per controller, into a file stream with the parsed stream's
// duplicate window, by as many goroutines as w has workers, at most 4,096
// unacknowledged. Every durable figure is given as a ratio to it, at the
// same controller count. Each goroutine waits for its oldest
// acknowledgement once it has its share of the 4,096 out.
func JetStreamCeiling(ctx context.Context, w Workload) (Result, error) {
	dir, err := os.MkdirTemp("", "edgegate-bench-js-")
	if err != nil {
		return Result{}, err
	}
	defer os.RemoveAll(dir)
	s, err := embed.New(embed.Config{Name: "bench-js-ceiling", JetStream: true, StoreDir: dir})
	if err != nil {
		return Result{}, err
	}
	defer s.Shutdown()
	nc, err := s.Connect("bench-js-ceiling")
	if err != nil {
		return Result{}, err
	}
	defer nc.Close()
	js, err := jetstream.New(nc, jetstream.WithPublishAsyncMaxPending(4096))
	if err != nil {
		return Result{}, err
	}
	if _, err := js.CreateStream(ctx, jetstream.StreamConfig{
		Name: "CEILING", Subjects: []string{"ceiling.>"}, Storage: jetstream.FileStorage, Duplicates: 2 * time.Minute,
	}); err != nil {
		return Result{}, fmt.Errorf("bench: JetStream ceiling: stream: %w", err)
	}
	payload := make([]byte, w.Size)
	goroutines := max(1, min(w.Workers, w.Controllers))
	// Each goroutine keeps its share of the unacknowledged publishes and
	// waits for its oldest itself: all of them stalled on the client's
	// limit at once wake together for every slot freed, and on a busy box
	// that herd, not the server, set the figure.
	window := max(1, 4096/goroutines)
	errs := make(chan error, goroutines)
	start := time.Now()
	var wg sync.WaitGroup
	for g := range goroutines {
		wg.Go(func() {
			var inflight []jetstream.PubAckFuture
			wait := func(f jetstream.PubAckFuture) error {
				select {
				case <-f.Ok():
					return nil
				case err := <-f.Err():
					return err
				case <-ctx.Done():
					return ctx.Err()
				}
			}
			defer func() {
				for _, f := range inflight {
					if err := wait(f); err != nil {
						errs <- err
						return
					}
				}
			}()
			// Controllers g, g+goroutines, ...: each one's messages in
			// order, the controllers interleaved.
			for seq := 1; seq <= w.Messages; seq++ {
				for c := g; c < w.Controllers; c += goroutines {
					id := ctrlName(c)
					m := nats.NewMsg("ceiling." + id)
					m.Data = payload
					m.Header["Edgegate-Controller"] = []string{id}
					m.Header["Edgegate-Seq"] = []string{strconv.Itoa(seq)}
					m.Header["Edgegate-Gen"] = []string{"1"}
					m.Header["Edgegate-Fence"] = []string{"1"}
					m.Header["Edgegate-Received"] = []string{strconv.FormatInt(time.Now().UnixMilli(), 10)}
					m.Header[jetstream.MsgIDHeader] = []string{id + ":1:" + strconv.Itoa(seq)}
					if len(inflight) == window {
						if err := wait(inflight[0]); err != nil {
							errs <- err
							inflight = nil
							return
						}
						inflight = inflight[1:]
					}
					f, err := js.PublishMsgAsync(m, jetstream.WithStallWait(time.Minute))
					if err != nil {
						errs <- err
						inflight = nil
						return
					}
					inflight = append(inflight, f)
				}
			}
		})
	}
	wg.Wait()
	close(errs)
	if err := <-errs; err != nil {
		return Result{}, fmt.Errorf("bench: JetStream ceiling: %w", err)
	}
	el := time.Since(start)
	n := int64(w.Controllers * w.Messages)
	st, err := js.Stream(ctx, "CEILING")
	if err != nil {
		return Result{}, err
	}
	info, err := st.Info(ctx)
	if err != nil {
		return Result{}, err
	}
	if int64(info.State.Msgs) != n {
		return Result{}, fmt.Errorf("bench: JetStream ceiling: %d of %d stored", info.State.Msgs, n)
	}
	return Result{Scenario: "ceiling/jetstream-async", Controllers: w.Controllers, Messages: n, Elapsed: el, Rate: float64(n) / el.Seconds(),
		CPU: -1, RSS: -1, Note: fmt.Sprintf("asynchronous publishes with message IDs and record headers, %d goroutines, one subject per controller, file storage, in-process connection, same process", goroutines)}, nil
}
