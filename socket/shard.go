package socket

import (
	"log/slog"
	"sync"
)

// shards is the number of locks the controllers are spread over. A batch's
// hot path (a device read, the hand-out to a parser, the outcome, the ACK)
// takes only its controller's shard lock, so that busy controllers do not
// queue for one lock: Go's mutex, once a waiter has waited a millisecond,
// hands the lock over at the scheduler's pace.
const shards = 64

// shard holds the controllers whose IDs hash to it, and guards them.
//
// Its mu guards the fields of those controllers and of their sessions
// (session.ctrl, closed, waiting, pinged: a session's ID is its
// controller's). Lock order: shard.mu, then Server.mu, then session.wmu;
// never two shard locks at once.
type shard struct {
	mu    sync.Mutex
	ctrls map[string]*controller
	log   *slog.Logger // the socket's (see controller.move)
	_     [40]byte     // keeps neighbouring shards' locks off one cache line
}

// shardOf returns the shard of controller id (FNV-1a).
func (s *Server) shardOf(id string) *shard {
	h := uint32(2166136261)
	for i := 0; i < len(id); i++ {
		h ^= uint32(id[i])
		h *= 16777619
	}
	return &s.shards[h%shards]
}

// eachShard calls f with every shard locked in turn. The caller holds no
// shard lock and not Server.mu.
func (s *Server) eachShard(f func(sh *shard)) {
	for i := range s.shards {
		sh := &s.shards[i]
		sh.mu.Lock()
		f(sh)
		sh.mu.Unlock()
	}
}

// lookup returns id's controller, nil if none, with its shard locked (the
// caller unlocks it).
func (s *Server) lookup(id string) (*controller, *shard) {
	sh := s.shardOf(id)
	sh.mu.Lock()
	return sh.ctrls[id], sh
}
