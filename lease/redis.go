package lease

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/redis/go-redis/v9"
)

// Redis is the Store shared by the appliances of a cluster. Every change is
// one Lua script (DESIGN §4), loaded once and run by SHA; a controller's
// keys carry the hash tag {<id>} so that they live in one Cluster slot:
//
//	<prefix>:{<id>}:fence  counter, INCR on every grant
//	<prefix>:{<id>}:lock   "<fence>:<owner>", PX ttl
//	<prefix>:{<id>}:hb     unix ms of the last heartbeat (Redis clock), PX ttl
//	<prefix>:{<id>}:done   last seq handled
//	<prefix>:{<id>}:rel    fence of the last grant released with its done seq
//
// Times are Redis' own (TIME), so appliances need no synchronized clocks.
type Redis struct {
	c      redis.UniversalClient
	prefix string
	db     int
	pipe   pipeliner // script calls made together share a round trip
	// cluster: c is a Redis Cluster client, each master has its own
	// run_id, and keyless commands go to any of them.
	cluster bool

	// A Redis that restarted or failed over has its own configuration:
	// keyspace notifications, wanted while a Notify subscription is open,
	// are enabled again on the first epoch read that finds a new run_id
	// (see renotify). notifiedOn is the run_id they were last enabled on.
	notifyMu   sync.Mutex
	notifying  int // open subscriptions
	notifiedOn string
}

// NewRedis returns a store on c with key prefix ("edgegate" when empty).
// db is the database number c uses (for keyspace notification channels).
func NewRedis(c redis.UniversalClient, prefix string, db int) *Redis {
	if prefix == "" {
		prefix = "edgegate"
	}
	_, cluster := c.(*redis.ClusterClient)
	return &Redis{c: c, prefix: prefix, db: db, pipe: pipeliner{c: c}, cluster: cluster}
}

// Client returns the Redis client.
func (s *Redis) Client() redis.UniversalClient { return s.c }

// Keys returns the keys of controller id, in the order fence, lock, hb,
// done, rel, reset.
func (s *Redis) Keys(id string) []string {
	p := s.prefix + ":{" + id + "}:"
	return []string{p + "fence", p + "lock", p + "hb", p + "done", p + "rel", p + "reset"}
}

// LockKeyPrefix is the prefix of every lock key, "<prefix>:{", for keyspace
// notification patterns.
func (s *Redis) LockKeyPrefix() string { return s.prefix + ":{" }

// nowMs is the Redis clock in unix milliseconds. Scripts that write after
// TIME need effects replication, the default since Redis 5 (always on in 7).
const nowMs = `
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
`

// KEYS: fence lock hb done. ARGV: owner ttl_ms epoch. Returns {fence,
// done, fresh, run_id} or false. A missing fence counter starts at
// now_ms*1000 (see Grant.Fresh); a fresh grant with ARGV[3] = 1 returns
// the server's run_id too (Grant.Epoch; INFO costs Redis about 8 µs, a
// separate read a round trip and a wait). Numbers are formatted with %.0f
// because Lua's tostring writes large ones in exponent notation.
var acquireScript = redis.NewScript(`
if redis.call('EXISTS', KEYS[2]) == 1 then return false end
` + nowMs + `
local fresh = 0
local f = redis.call('INCR', KEYS[1])
if f == 1 then
  fresh = 1
  f = now * 1000
  redis.call('SET', KEYS[1], string.format('%.0f', f))
end
local fs = string.format('%.0f', f)
redis.call('SET', KEYS[2], fs .. ':' .. ARGV[1], 'PX', ARGV[2])
redis.call('SET', KEYS[3], string.format('%.0f', now), 'PX', ARGV[2])
local run_id = ''
if fresh == 1 and ARGV[3] == '1' then
  run_id = string.match(redis.call('INFO', 'server'), '\nrun_id:(%x+)') or ''
end
return {fs, redis.call('GET', KEYS[4]) or '0', fresh, run_id}
`)

// KEYS: lock hb. ARGV: token ttl_ms. Returns 1, or 0 when the lock is not ours.
var heartbeatScript = redis.NewScript(`
if redis.call('GET', KEYS[1]) ~= ARGV[1] then return 0 end
` + nowMs + `
redis.call('PEXPIRE', KEYS[1], ARGV[2])
redis.call('SET', KEYS[2], string.format('%.0f', now), 'PX', ARGV[2])
return 1
`)

// setDone records done (KEYS[3], ARGV[3]) unless the record was reset
// after the lease of fence ARGV[4] was granted (KEYS[4] holds the last
// fence granted before the reset): a batch of the session before a seq
// reset must not write its seq over the cleared record.
const setDone = `
local r = redis.call('GET', KEYS[4])
if not r or tonumber(ARGV[4]) > tonumber(r) then redis.call('SET', KEYS[3], ARGV[3]) end
`

// KEYS: lock hb done reset. ARGV: token ttl_ms done fence. Returns 1, or 0
// when the lock is not ours.
var keepScript = redis.NewScript(`
if redis.call('GET', KEYS[1]) ~= ARGV[1] then return 0 end
` + nowMs + `
redis.call('PEXPIRE', KEYS[1], ARGV[2])
redis.call('SET', KEYS[2], string.format('%.0f', now), 'PX', ARGV[2])
` + setDone + `
return 1
`)

// KEYS: lock hb done reset rel. ARGV: token unused done fence. Returns 1
// or 0.
var releaseScript = redis.NewScript(`
if redis.call('GET', KEYS[1]) ~= ARGV[1] then return 0 end
redis.call('DEL', KEYS[1], KEYS[2])
` + setDone + `
redis.call('SET', KEYS[5], ARGV[4])
return 1
`)

// KEYS: fence done reset. Clears the done record and notes the last fence
// granted so far, whose leases may no longer record done.
var resetScript = redis.NewScript(`
redis.call('DEL', KEYS[2])
redis.call('SET', KEYS[3], redis.call('GET', KEYS[1]) or '0')
return 1
`)

// KEYS: lock hb. ARGV: token. Returns 1 or 0.
var abandonScript = redis.NewScript(`
if redis.call('GET', KEYS[1]) ~= ARGV[1] then return 0 end
redis.call('DEL', KEYS[1], KEYS[2])
return 1
`)

// KEYS: lock hb done rel. Returns {lock|false, hb|false, done|false, rel|false, now}.
var inspectScript = redis.NewScript(`
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
return {redis.call('GET', KEYS[1]), redis.call('GET', KEYS[2]), redis.call('GET', KEYS[3]), redis.call('GET', KEYS[4]), string.format('%.0f', now)}
`)

func ms(d time.Duration) int64 { return max(1, d.Milliseconds()) }

func redisErr(op string, err error) error { return fmt.Errorf("lease: redis %s: %w", op, err) }

// Acquire implements Store.
func (s *Redis) Acquire(ctx context.Context, id, owner string, ttl time.Duration) (Grant, error) {
	k := s.Keys(id)
	epoch := "1"
	if s.cluster {
		epoch = "0" // one node's run_id is not the cluster's epoch
	}
	v, err := s.pipe.run(ctx, acquireScript, k[:4], owner, ms(ttl), epoch).Result()
	if errors.Is(err, redis.Nil) {
		return Grant{}, ErrHeld
	}
	if err != nil {
		return Grant{}, redisErr("acquire", err)
	}
	arr, ok := v.([]any)
	if !ok || len(arr) != 4 {
		return Grant{}, redisErr("acquire", fmt.Errorf("unexpected reply %v", v))
	}
	fence, err := parseUint(arr[0])
	if err != nil {
		return Grant{}, redisErr("acquire", err)
	}
	done, err := parseUint(arr[1])
	if err != nil {
		return Grant{}, redisErr("acquire", err)
	}
	fresh, _ := arr[2].(int64)
	runID, _ := arr[3].(string)
	return Grant{Token: Token{Fence: fence, Owner: owner}, Done: done, Fresh: fresh == 1, Epoch: runID}, nil
}

// Heartbeat implements Store.
func (s *Redis) Heartbeat(ctx context.Context, id string, tok Token, ttl time.Duration) error {
	k := s.Keys(id)
	n, err := s.pipe.run(ctx, heartbeatScript, k[1:3], tok.String(), ms(ttl)).Int()
	if err != nil {
		return redisErr("heartbeat", err)
	}
	if n != 1 {
		return ErrLost
	}
	return nil
}

// Keep implements Store.
func (s *Redis) Keep(ctx context.Context, id string, tok Token, ttl time.Duration, done uint64) error {
	k := s.Keys(id)
	n, err := s.pipe.run(ctx, keepScript, []string{k[1], k[2], k[3], k[5]}, tok.String(), ms(ttl), done, tok.Fence).Int()
	if err != nil {
		return redisErr("keep", err)
	}
	if n != 1 {
		return ErrLost
	}
	return nil
}

// Release implements Store.
func (s *Redis) Release(ctx context.Context, id string, tok Token, done uint64) error {
	k := s.Keys(id)
	n, err := s.pipe.run(ctx, releaseScript, []string{k[1], k[2], k[3], k[5], k[4]}, tok.String(), 0, done, tok.Fence).Int()
	if err != nil {
		return redisErr("release", err)
	}
	if n != 1 {
		return ErrLost
	}
	return nil
}

// Abandon implements Store.
func (s *Redis) Abandon(ctx context.Context, id string, tok Token) error {
	k := s.Keys(id)
	n, err := s.pipe.run(ctx, abandonScript, k[1:3], tok.String()).Int()
	if err != nil {
		return redisErr("abandon", err)
	}
	if n != 1 {
		return ErrLost
	}
	return nil
}

// Inspect implements Store.
func (s *Redis) Inspect(ctx context.Context, id string) (State, error) {
	k := s.Keys(id)
	v, err := s.pipe.run(ctx, inspectScript, k[1:5]).Result()
	if err != nil {
		return State{}, redisErr("inspect", err)
	}
	arr, ok := v.([]any)
	if !ok || len(arr) != 5 {
		return State{}, redisErr("inspect", fmt.Errorf("unexpected reply %v", v))
	}
	var st State
	now, err := parseUint(arr[4])
	if err != nil {
		return State{}, redisErr("inspect", err)
	}
	st.Now = time.UnixMilli(int64(now))
	if lock, ok := arr[0].(string); ok {
		if st.Token, err = ParseToken(lock); err != nil {
			return State{}, err
		}
		st.Locked = true
	}
	if arr[1] != nil {
		hb, err := parseUint(arr[1])
		if err != nil {
			return State{}, redisErr("inspect", err)
		}
		st.Heartbeat = time.UnixMilli(int64(hb))
	}
	if st.Done, err = parseUint(arr[2]); err != nil {
		return State{}, redisErr("inspect", err)
	}
	if st.Released, err = parseUint(arr[3]); err != nil {
		return State{}, redisErr("inspect", err)
	}
	return st, nil
}

// Done implements Store.
func (s *Redis) Done(ctx context.Context, id string) (uint64, error) {
	v, err := s.pipe.do(ctx, "get", s.Keys(id)[3]).Text()
	if errors.Is(err, redis.Nil) {
		return 0, nil
	}
	if err != nil {
		return 0, redisErr("done", err)
	}
	return strconv.ParseUint(v, 10, 64)
}

// ResetDone implements Store.
func (s *Redis) ResetDone(ctx context.Context, id string) error {
	k := s.Keys(id)
	if err := s.pipe.run(ctx, resetScript, []string{k[0], k[3], k[5]}).Err(); err != nil {
		return redisErr("reset done", err)
	}
	return nil
}

// Epoch implements lease.Epoch with the Redis run_id: it changes with a
// restart or a failover, after which leases may be lost. With Redis
// Cluster it is every master's run_id, sorted: a keyless INFO goes to any
// master, and one master's restart loses the leases in its slots. A
// master added or removed changes it too (one pause of dispatch).
func (s *Redis) Epoch(ctx context.Context) (string, error) {
	cc, ok := s.c.(*redis.ClusterClient)
	if !ok {
		id, err := s.RunID(ctx)
		if err == nil {
			s.renotify(ctx, id)
		}
		return id, err
	}
	var mu sync.Mutex
	var ids []string
	err := cc.ForEachMaster(ctx, func(ctx context.Context, m *redis.Client) error {
		id, err := runID(ctx, m)
		mu.Lock()
		ids = append(ids, id)
		mu.Unlock()
		return err
	})
	if err != nil {
		return "", err
	}
	slices.Sort(ids)
	return strings.Join(ids, ","), nil
}

// RunID returns the run_id of the Redis server (of a master of Redis
// Cluster, any one): a change means a restart or a failover, after which
// leases may be lost.
func (s *Redis) RunID(ctx context.Context) (string, error) { return runID(ctx, s.c) }

func runID(ctx context.Context, c redis.Cmdable) (string, error) {
	info, err := c.Info(ctx, "server").Result()
	if err != nil {
		return "", redisErr("info", err)
	}
	for rest := info; ; {
		i := strings.Index(rest, "run_id:")
		if i < 0 {
			break
		}
		if i == 0 || rest[i-1] == '\n' { // a line of its own, not master_run_id
			v, _, _ := strings.Cut(rest[i+len("run_id:"):], "\n")
			if v = strings.TrimSpace(v); v != "" {
				return v, nil
			}
		}
		rest = rest[i+len("run_id:"):]
	}
	return "", redisErr("info", errors.New("no run_id in INFO server"))
}

// parseUint reads a Redis reply value: nil is 0.
func parseUint(v any) (uint64, error) {
	switch x := v.(type) {
	case nil:
		return 0, nil
	case int64:
		return uint64(x), nil
	case string:
		return strconv.ParseUint(x, 10, 64)
	}
	return 0, fmt.Errorf("unexpected value %v (%T)", v, v)
}
