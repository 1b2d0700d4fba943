package parser

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/edgegate/edgegate/coord"
)

// announceGap is the least time between two ready announcements made
// because workers freed up, unless every worker was busy in between:
// sockets count the workers they took and got back themselves, and an
// announcement per batch costs every socket a JSON decode.
const announceGap = 5 * time.Millisecond

// announceLoop publishes ready announcements when a worker frees up (at
// once after all were busy, else at most every announceGap) and every
// Announce period.
func (p *Pool) announceLoop(ctx context.Context) {
	t := time.NewTicker(p.cfg.Announce)
	defer t.Stop()
	p.publishReady()
	last := time.Now()
	var soon <-chan time.Time // a coalesced announcement is due then
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
			p.pruneKept()
		case <-p.announce:
			if soon != nil {
				continue
			}
			p.mu.Lock()
			exhausted := p.exhausted
			p.mu.Unlock()
			if wait := announceGap - time.Since(last); wait > 0 && !exhausted {
				soon = time.After(wait)
				continue
			}
		case <-soon:
		}
		soon = nil
		p.publishReady()
		last = time.Now()
	}
}

func (p *Pool) publishReady() {
	p.mu.Lock()
	free := p.free
	p.exhausted = false
	if p.stopped {
		free = 0
	}
	p.mu.Unlock()
	r := coord.Ready{
		Pool: p.id, Appliance: p.cfg.Name, Subject: coord.PoolSubject(p.id),
		Free: free, Workers: p.cfg.Workers, Busy: p.cfg.Workers - free,
	}
	p.announced.Store(time.Now().UnixNano())
	b, _ := marshalReady(&r)
	if err := p.nc.Publish(coord.SubjectReady, b); err != nil && !errors.Is(err, nats.ErrConnectionClosed) {
		p.log.Warn("parser: ready announcement", "err", err)
	}
}

// Healthy reports whether the pool works: its announcement loop ran within
// three announce periods (the loop is what sockets find the pool by).
func (p *Pool) Healthy() error {
	last := p.announced.Load()
	if last == 0 {
		return errors.New("parser pool not started")
	}
	if age := time.Since(time.Unix(0, last)); age > 3*p.cfg.Announce {
		return fmt.Errorf("parser pool silent for %v", age.Round(time.Millisecond))
	}
	return nil
}

func marshalReady(r *coord.Ready) ([]byte, error) { return json.Marshal(r) }
