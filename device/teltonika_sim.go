package device

import (
	"context"
	"fmt"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/edgegate/edgegate/teltonika"
)

// simCodecs are the codecs a simulated tracker rotates through, a packet
// each.
var simCodecs = [...]byte{teltonika.Codec8, teltonika.Codec8E, teltonika.Codec16}

// simulateTeltonika is Simulate for Teltonika trackers: Controllers
// devices (IMEI Prefix + their number, 15 digits) each send Messages
// packets of Records AVL records (TeltonikaRecords, a track ending about
// now), rotating through Codec 8, 8 Extended and 16, one packet at a
// time as trackers do, and check each ACK's record count; with
// Reconnect, a missing or wrong ACK makes the device reconnect and send
// the packet again. Sent and Acked count packets, Records the records
// acknowledged, OrderErrors the wrong ACKs; the latency runs from a
// packet's first send to its ACK.
func simulateTeltonika(ctx context.Context, cfg SimConfig, progress func(SimReport)) (SimReport, error) {
	if cfg.Prefix == "" || strings.Trim(cfg.Prefix, "0123456789") != "" {
		cfg.Prefix = "35600" // an IMEI's first digits (a TAC); "sim-" is not digits
	}
	width := max(15-len(cfg.Prefix), 6)
	if len(cfg.Prefix)+width > teltonika.MaxIMEILen {
		return SimReport{}, fmt.Errorf("device: simulate: prefix %q leaves no room for device numbers in an IMEI", cfg.Prefix)
	}
	if cfg.Records <= 0 {
		cfg.Records = 4
	}
	if cfg.Records > 255 {
		return SimReport{}, fmt.Errorf("device: simulate: %d records per packet, at most 255", cfg.Records)
	}
	if cfg.ConnectConcurrency <= 0 {
		cfg.ConnectConcurrency = 256
	}
	imei := func(i int) string { return fmt.Sprintf("%s%0*d", cfg.Prefix, width, i) }
	// The tracks end about now, a record a second: records of an earlier
	// run differ (their IDs too, so they are not taken for resends).
	start := time.Now().Add(-time.Duration(cfg.Messages*cfg.Records) * time.Second).Truncate(time.Second)

	clients := make([]*Teltonika, cfg.Controllers)
	defer func() {
		for _, c := range clients {
			if c != nil {
				c.Close()
			}
		}
	}()
	sem := make(chan struct{}, cfg.ConnectConcurrency)
	var wg sync.WaitGroup
	var dialErr error
	var errOnce sync.Once
	for i := range clients {
		sem <- struct{}{}
		wg.Go(func() {
			defer func() { <-sem }()
			c, err := DialTeltonika(ctx, TeltonikaConfig{Addrs: rotate(cfg.Addrs, i), IMEI: imei(i), Reconnect: cfg.Reconnect})
			if err != nil {
				errOnce.Do(func() { dialErr = fmt.Errorf("device: simulate: IMEI %s: %w", imei(i), err) })
				return
			}
			clients[i] = c
		})
	}
	wg.Wait()
	if dialErr != nil {
		return SimReport{}, dialErr
	}

	var (
		hist    histogram
		sent    atomic.Int64
		lastAck atomic.Int64
	)
	begin := time.Now()
	report := func() SimReport {
		r := SimReport{Controllers: cfg.Controllers, Sent: sent.Load()}
		for _, c := range clients {
			st := c.Stats()
			r.Acked += int64(st.Packets)
			r.Records += int64(st.Records)
			r.Resent += int64(st.Resent)
			r.Reconnects += int64(st.Reconnects)
			r.OrderErrors += int64(st.AckErrors)
		}
		r.finish(begin, lastAck.Load(), &hist)
		return r
	}
	stop := make(chan struct{})
	var pwg sync.WaitGroup
	if progress != nil {
		pwg.Go(func() {
			t := time.NewTicker(time.Second)
			defer t.Stop()
			for {
				select {
				case <-stop:
					return
				case <-t.C:
					progress(report())
				}
			}
		})
	}
	errs := make(chan error, cfg.Controllers)
	for i, c := range clients {
		wg.Go(func() {
			var tick *time.Ticker
			if cfg.Rate > 0 {
				tick = time.NewTicker(max(time.Duration(float64(time.Second)/cfg.Rate), time.Millisecond))
				defer tick.Stop()
			}
			for p := 0; p < cfg.Messages; p++ {
				if tick != nil {
					select {
					case <-ctx.Done():
						errs <- ctx.Err()
						return
					case <-tick.C:
					}
				}
				// Each device starts at another codec, so that every
				// codec is on the wire from the first packets.
				codec := simCodecs[(i+p)%len(simCodecs)]
				pkt, err := teltonika.Encode(codec, TeltonikaRecords(codec, i, p*cfg.Records, cfg.Records, start))
				if err != nil {
					errs <- fmt.Errorf("IMEI %s: %w", imei(i), err)
					return
				}
				at := time.Now()
				sent.Add(1)
				if err := c.Send(ctx, pkt); err != nil {
					errs <- fmt.Errorf("IMEI %s: %w", imei(i), err)
					return
				}
				now := time.Now()
				hist.record(now.Sub(at))
				lastAck.Store(now.UnixNano())
			}
		})
	}
	wg.Wait()
	close(stop)
	pwg.Wait()
	close(errs)
	r := report()
	for err := range errs {
		return r, err
	}
	return r, nil
}
