package main

import (
	"context"
	"fmt"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/urfave/cli/v2"
)

// tailStored prints the records of stream on subject stored since the time
// --since gives, or the last --last of them, then follows new ones: one
// ordered consumer delivers both, in stream order, without a gap or a
// duplicate between the stored and the new.
func tailStored(c *cli.Context, nc *nats.Conn, stream, subject string, since time.Time) error {
	ctx := c.Context
	js, err := jetstream.New(nc)
	if err != nil {
		return fmt.Errorf("tail: %w", err)
	}
	s, err := js.Stream(ctx, stream)
	if err != nil {
		return fmt.Errorf("tail: stream %s: %w (--since and --last read the records JetStream stores: is nats.jetstream on?)", stream, err)
	}
	cfg := jetstream.OrderedConsumerConfig{FilterSubjects: []string{subject}}
	from := ""
	if !since.IsZero() {
		cfg.DeliverPolicy, cfg.OptStartTime = jetstream.DeliverByStartTimePolicy, &since
		from = "stored since " + since.Format(time.RFC3339)
	} else {
		n := uint64(c.Int("last"))
		seq, err := lastStart(ctx, s, subject, n)
		if err != nil {
			return fmt.Errorf("tail: stream %s: %w", stream, err)
		}
		cfg.DeliverPolicy, cfg.OptStartSeq = jetstream.DeliverByStartSequencePolicy, seq
		from = fmt.Sprintf("the last %d stored", n)
	}
	cons, err := s.OrderedConsumer(ctx, cfg)
	if err != nil {
		return fmt.Errorf("tail: stream %s: %w", stream, err)
	}
	it, err := cons.Messages()
	if err != nil {
		return fmt.Errorf("tail: stream %s: %w", stream, err)
	}
	defer it.Stop()
	fmt.Fprintf(c.App.ErrWriter, "tail: %s on %s, %s then new ones\n", subject, redactNATS(c.String("nats")), from)
	count := c.Int("count")
	for n := 0; count == 0 || n < count; n++ {
		m, err := it.Next(jetstream.NextContext(ctx))
		if err != nil {
			if ctx.Err() != nil {
				return nil // interrupted
			}
			return fmt.Errorf("tail: %w", err)
		}
		printRecord(c, &nats.Msg{Subject: m.Subject(), Header: m.Headers(), Data: m.Data()})
	}
	return nil
}

// lastStart returns the stream sequence from which the last n records on
// subject are stored: the highest sequence from which n or more of them
// are, found by bisection over the stream's sequences (a few dozen steps
// for any stream), each asking the server how many records on subject a
// consumer starting there would have pending. When n or fewer are stored,
// it is the stream's first sequence.
func lastStart(ctx context.Context, s jetstream.Stream, subject string, n uint64) (uint64, error) {
	info, err := s.Info(ctx)
	if err != nil {
		return 0, err
	}
	first, last := info.State.FirstSeq, info.State.LastSeq
	if info.State.Msgs == 0 || first == 0 {
		return max(first, 1), nil
	}
	pending := func(seq uint64) (uint64, error) {
		cons, err := s.CreateConsumer(ctx, jetstream.ConsumerConfig{
			FilterSubject: subject,
			DeliverPolicy: jetstream.DeliverByStartSequencePolicy,
			OptStartSeq:   seq,
			AckPolicy:     jetstream.AckNonePolicy,
			MemoryStorage: true,
			// Removed at once below; this only covers a tail that dies
			// in between.
			InactiveThreshold: time.Minute,
		})
		if err != nil {
			return 0, err
		}
		np := cons.CachedInfo().NumPending
		if err := s.DeleteConsumer(ctx, cons.CachedInfo().Name); err != nil {
			return 0, err
		}
		return np, nil
	}
	total, err := pending(first)
	if err != nil || total <= n {
		return first, err
	}
	// pending(lo) >= n throughout; pending falls as the sequence rises.
	lo, hi := first, last
	for lo < hi {
		mid := lo + (hi-lo+1)/2
		p, err := pending(mid)
		if err != nil {
			return 0, err
		}
		if p >= n {
			lo = mid
		} else {
			hi = mid - 1
		}
	}
	return lo, nil
}

// parseSince reads --since: a duration back from now, or an RFC 3339 time.
func parseSince(s string, now time.Time) (time.Time, error) {
	if d, err := time.ParseDuration(s); err == nil {
		if d < 0 {
			return time.Time{}, fmt.Errorf("tail: --since %s: want a duration back from now, without a sign", s)
		}
		return now.Add(-d), nil
	}
	if t, err := time.Parse(time.RFC3339, s); err == nil {
		return t, nil
	}
	return time.Time{}, fmt.Errorf("tail: --since %q: want a duration back from now (10m, 2h) or an RFC 3339 time (2026-12-05T10:49:00Z)", s)
}
