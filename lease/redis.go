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
// one Lua script, loaded once and run by SHA; a controller's keys carry the
// hash tag {<id>} so that they live in one Cluster slot:
//
//	<prefix>:{<id>}:fence  the last fence granted
//	<prefix>:{<id>}:lock   "<fence>:<owner>", PX ttl
//	<prefix>:{<id>}:hb     unix ms of the last heartbeat (Redis clock), PX ttl
//	<prefix>:{<id>}:done   last seq handled in the current generation
//	<prefix>:{<id>}:rel    fence of the last grant released with its done seq
//	<prefix>:{<id>}:sess   the newest device session's number (Open)
//	<prefix>:{<id>}:gen    the current seq generation
//	<prefix>:{<id>}:lg     "<gen>:<session>" the lock was granted for
//
// and <prefix>:epoch (with Redis Cluster, one per master, in a slot it
// serves): "<run_id>/<replid>:<since ms>", when the server's current epoch
// began (see OnConnect).
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

	// The epochs that connections found (onConnect): epochStart is the
	// latest start, on this process's clock; floor the lowest fence a
	// grant may have (above every fence of an earlier epoch).
	epochMu    sync.Mutex
	epochStart time.Time
	floor      uint64
	lastEpoch  string // the epoch the last connection met (not with Cluster)
	// replids are the master replication IDs connections met (with
	// Cluster): a grant by a master whose ID is not among them came over
	// a connection older than the master's term.
	replids map[string]bool
}

// NewRedis returns a store on c with key prefix ("edgegate" when empty).
// db is the database number c uses (for keyspace notification channels).
// c's options must call OnConnect on every new connection (DialRedis does):
// without it the store cannot tell when a server began a new epoch.
func NewRedis(c redis.UniversalClient, prefix string, db int) *Redis {
	if prefix == "" {
		prefix = "edgegate"
	}
	_, cluster := c.(*redis.ClusterClient)
	return &Redis{c: c, prefix: prefix, db: db, pipe: pipeliner{c: c}, cluster: cluster}
}

// DialRedis returns a store with a client for opts whose connections
// report the server's epoch (OnConnect) before they carry any call.
//
// The client never sends a call again on its own, whatever opts say: a
// script whose reply was lost (a reset link, a read timeout) has run,
// and it does not answer the same twice (an acquire would find its own
// lock held, a welcome a newer session, a release its lock gone). The
// call fails instead, like any store error, and its caller tries again
// later, knowing it may have run. With Redis Cluster that includes
// MOVED and ASK redirects: the client reloads the slots, and the next
// call goes to the right master. And every call ends by its context's
// deadline: a Redis that stops answering without closing the connection
// must not hold a check loop or a heartbeat for the read timeout.
func DialRedis(opts *redis.UniversalOptions, prefix string) *Redis {
	s := new(Redis)
	o := *opts
	o.MaxRetries, o.MaxRedirects = -1, -1
	o.ContextTimeoutEnabled = true
	prev := o.OnConnect
	o.OnConnect = func(ctx context.Context, cn *redis.Conn) error {
		if prev != nil {
			if err := prev(ctx, cn); err != nil {
				return err
			}
		}
		return s.OnConnect(ctx, cn)
	}
	c := redis.NewUniversalClient(&o)
	*s = *NewRedis(c, prefix, o.DB)
	return s
}

// Client returns the Redis client.
func (s *Redis) Client() redis.UniversalClient { return s.c }

// Keys returns the keys of controller id, in the order fence, lock, hb,
// done, rel, sess, gen, lg.
func (s *Redis) Keys(id string) []string {
	p := s.prefix + ":{" + id + "}:"
	return []string{p + "fence", p + "lock", p + "hb", p + "done", p + "rel", p + "sess", p + "gen", p + "lg"}
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

// gt compares two decimal strings of u64 values exactly (Lua's numbers
// are doubles, exact only to 2^53).
const gt = `
local function gt(a, b)
  if #a ~= #b then return #a > #b end
  return a > b
end
`

// KEYS: fence lock hb done sess gen lg. ARGV: owner ttl_ms epoch session
// gen floor. Returns {fence, done, fresh, run_id, replid}, false when
// held, or -1 when a newer session exists. A fence at or below the floor
// (the counter is missing, or older than the store's epoch: a rollback)
// becomes now_ms*1000, above every fence of an earlier epoch. A fresh
// grant with ARGV[3] = 1 returns the server's run_id too (Grant.Epoch);
// with ARGV[3] = 0 (Redis Cluster) every grant returns the master's
// replication ID, which a promotion changes (see Redis.acquire). done is the
// done record of the session's generation (0 for another). Numbers are
// formatted with %.0f because Lua's tostring writes large ones in
// exponent notation.
var acquireScript = redis.NewScript(`
if redis.call('EXISTS', KEYS[2]) == 1 then return false end
if tonumber(redis.call('GET', KEYS[5]) or '0') > tonumber(ARGV[4]) then return -1 end
` + nowMs + `
local fresh = 0
local f = redis.call('INCR', KEYS[1])
if f == 1 then fresh = 1 end
if f == 1 or f <= tonumber(ARGV[6]) then
  f = math.max(now * 1000, tonumber(ARGV[6]) + 1)
  redis.call('SET', KEYS[1], string.format('%.0f', f))
end
local fs = string.format('%.0f', f)
redis.call('SET', KEYS[2], fs .. ':' .. ARGV[1], 'PX', ARGV[2])
redis.call('SET', KEYS[3], string.format('%.0f', now), 'PX', ARGV[2])
redis.call('SET', KEYS[7], ARGV[5] .. ':' .. ARGV[4])
local run_id = ''
if fresh == 1 and ARGV[3] == '1' then
  run_id = string.match(redis.call('INFO', 'server'), '\nrun_id:(%x+)') or ''
end
local replid = ''
if ARGV[3] == '0' then
  replid = string.match(redis.call('INFO', 'replication'), '\nmaster_replid:(%x+)') or ''
end
local done = '0'
if (redis.call('GET', KEYS[6]) or '0') == ARGV[5] then done = redis.call('GET', KEYS[4]) or '0' end
return {fs, done, fresh, run_id, replid}
`)

// KEYS: lock hb. ARGV: token ttl_ms. Returns 1, or 0 when the lock is not ours.
var heartbeatScript = redis.NewScript(`
if redis.call('GET', KEYS[1]) ~= ARGV[1] then return 0 end
` + nowMs + `
redis.call('PEXPIRE', KEYS[1], ARGV[2])
redis.call('SET', KEYS[2], string.format('%.0f', now), 'PX', ARGV[2])
return 1
`)

// setDone records done (KEYS[3], ARGV[3]) when the lock was granted for
// the current generation (KEYS[6] "<gen>:<session>", KEYS[5] the
// generation), never backwards: a batch of a session before a seq reset
// cannot write its seq over the new generation's record. It leaves lsess,
// the lock's session number, for the caller.
const setDone = gt + `
local lg = redis.call('GET', KEYS[6]) or '0:0'
local lgen, lsess = string.match(lg, '^(%d+):(%d+)$')
if lgen == (redis.call('GET', KEYS[5]) or '0') and gt(ARGV[3], redis.call('GET', KEYS[3]) or '0') then
  redis.call('SET', KEYS[3], ARGV[3])
end
`

// KEYS: lock hb done rel gen lg sess. ARGV: token ttl_ms done
// fence. Returns 1, 0 when the lock is not ours, or 2 when a newer
// session exists: done recorded and the lock released.
var keepScript = redis.NewScript(`
if redis.call('GET', KEYS[1]) ~= ARGV[1] then return 0 end
` + setDone + `
if tonumber(redis.call('GET', KEYS[7]) or '0') > tonumber(lsess or '0') then
  redis.call('DEL', KEYS[1], KEYS[2])
  redis.call('SET', KEYS[4], ARGV[4])
  return 2
end
` + nowMs + `
redis.call('PEXPIRE', KEYS[1], ARGV[2])
redis.call('SET', KEYS[2], string.format('%.0f', now), 'PX', ARGV[2])
return 1
`)

// KEYS: lock hb done rel gen lg sess. ARGV: token unused done fence.
// Returns 1 or 0.
var releaseScript = redis.NewScript(`
if redis.call('GET', KEYS[1]) ~= ARGV[1] then return 0 end
redis.call('DEL', KEYS[1], KEYS[2])
` + setDone + `
redis.call('SET', KEYS[4], ARGV[4])
return 1
`)

// KEYS: lock hb. ARGV: token. Returns 1 or 0.
var abandonScript = redis.NewScript(`
if redis.call('GET', KEYS[1]) ~= ARGV[1] then return 0 end
redis.call('DEL', KEYS[1], KEYS[2])
return 1
`)

// newGen starts a generation in KEYS[gen]: above the last one, and at least
// the clock in milliseconds, so that a generation started after the store
// lost its data, or went back to older data, names none of the records the
// output stream may already hold.
const newGen = nowMs + `
local function newgen(key)
  local g = math.max((tonumber(redis.call('GET', key)) or 0) + 1, now)
  local gs = string.format('%.0f', g)
  redis.call('SET', key, gs)
  return gs
end
`

// KEYS: sess gen done. ARGV: continues (1 or 0), the store's epoch start
// (unix ms). Returns {session, gen}. A controller without a generation
// (new, or its record lost) starts one, and so does one whose generation
// began before the epoch: the server went back to older data (a rollback,
// a failover to a replica that lagged), which may lack a seq reset made
// since, and the older generation's done record would then cover seqs
// the device has sent again from 1, acknowledging them unhandled.
var openScript = redis.NewScript(newGen + `
local n = redis.call('INCR', KEYS[1])
local g = redis.call('GET', KEYS[2])
if ARGV[1] ~= '1' or not g or tonumber(g) < tonumber(ARGV[2]) then
  g = newgen(KEYS[2])
  redis.call('DEL', KEYS[3])
end
return {string.format('%.0f', n), g}
`)

// KEYS: lock sess gen done. ARGV: session gen. Returns {gen, done}, -1
// while a lock is held, -2 when the session is no longer the newest. The
// session goes on in a new generation, with the done record carried
// over: the record may lag what was stored under the old one (its last
// lease expired without recording done, or the store lost writes in a
// restart, a rollback or a failover), and a device that numbers on from
// it must not reuse those messages' IDs. A store that lost the session's
// record takes it up again in a new generation with no done record.
var welcomeScript = redis.NewScript(newGen + `
if redis.call('EXISTS', KEYS[1]) == 1 then return -1 end
local cur = tonumber(redis.call('GET', KEYS[2]) or '0')
if cur > tonumber(ARGV[1]) then return -2 end
local g = redis.call('GET', KEYS[3]) or '0'
if cur < tonumber(ARGV[1]) or g ~= ARGV[2] then
  if cur == tonumber(ARGV[1]) then return -2 end
  redis.call('SET', KEYS[2], ARGV[1])
  g = newgen(KEYS[3])
  redis.call('DEL', KEYS[4])
  return {g, '0'}
end
return {newgen(KEYS[3]), redis.call('GET', KEYS[4]) or '0'}
`)

// KEYS: epoch. ARGV: the epoch the caller met last ("" for none, or with
// Redis Cluster, whose masters each have their own). Returns {epoch,
// since_ms, now_ms}: the server's epoch (its run_id and replication ID: a
// restart changes the first, a promotion the second) and when it began,
// recorded by the first connection that met it: without a record, the
// server's start (from uptime_in_seconds, rounded down: no earlier than
// the start, and so than the death of the process it replaced); with
// another epoch's record, now. A caller coming from another epoch to one
// whose record is older also makes it begin now: a master a failover left
// running (Sentinel demotes it only later) and a second failover made
// master again kept its own record, and its data lacks what the other
// master granted meanwhile.
var epochScript = redis.NewScript(`
local server = redis.call('INFO', 'server')
local id = (string.match(server, '\nrun_id:(%x+)') or '') .. '/' ..
  (string.match(redis.call('INFO', 'replication'), '\nmaster_replid:(%x+)') or '')
` + nowMs + `
local since = now
local v = redis.call('GET', KEYS[1])
if v then
  local e, at = string.match(v, '^([%x/]+):(%d+)$')
  if e == id and (ARGV[1] == '' or ARGV[1] == id) then return {id, at, string.format('%.0f', now)} end
  -- Another epoch's record: this server went back to older data, or was
  -- promoted (the record came from its old master). Its epoch began at
  -- the restart or the promotion: no earlier than now by what it tells.
else
  -- No record: a server that lost its data, or one nobody used yet.
  -- Nothing it holds predates its start.
  since = now - 1000 * (tonumber(string.match(server, '\nuptime_in_seconds:(%d+)')) or 0)
end
redis.call('SET', KEYS[1], id .. ':' .. string.format('%.0f', since))
return {id, string.format('%.0f', since), string.format('%.0f', now)}
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
func (s *Redis) Acquire(ctx context.Context, id, owner string, ttl time.Duration, sess Session) (Grant, error) {
	g, err := s.acquire(ctx, id, owner, ttl, sess)
	// A connection made meanwhile met a new epoch (with Redis Cluster,
	// perhaps another master's: the floor and start are the latest of
	// all): the fence floor the call carried may be an earlier epoch's.
	// Again, above it; a burst of new connections settles in a few.
	for try := 0; try < 4 && errors.Is(err, errNewEpoch); try++ {
		g, err = s.acquire(ctx, id, owner, ttl, sess)
	}
	if errors.Is(err, errNewEpoch) {
		return Grant{}, redisErr("acquire", err)
	}
	return g, err
}

// errNewEpoch: a grant was made while the store met a new epoch.
var errNewEpoch = errors.New("the server began a new epoch during the call")

func (s *Redis) acquire(ctx context.Context, id, owner string, ttl time.Duration, sess Session) (Grant, error) {
	k := s.Keys(id)
	epoch := "1"
	if s.cluster {
		epoch = "0" // one node's run_id is not the cluster's epoch
	}
	start, floor := s.epoch()
	v, err := s.pipe.run(ctx, acquireScript, []string{k[0], k[1], k[2], k[3], k[5], k[6], k[7]}, owner, ms(ttl), epoch, sess.No, sess.Gen, floor).Result()
	if errors.Is(err, redis.Nil) {
		return Grant{}, ErrHeld
	}
	if err != nil {
		return Grant{}, redisErr("acquire", err)
	}
	if n, ok := v.(int64); ok && n == -1 {
		return Grant{}, ErrSuperseded
	}
	arr, ok := v.([]any)
	if !ok || len(arr) != 5 {
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
	tok := Token{Fence: fence, Owner: owner}
	if replid, _ := arr[4].(string); s.cluster && !s.replidMet(replid) {
		// Granted by a master over a connection made before its
		// current term: one it had when it was master before, kept
		// while it was a replica (a failback; Redis does not close a
		// demoted node's connections). Its epoch is read now, over a
		// connection of its own, and the grant given up.
		if err := s.readEpochOf(ctx, k[0]); err != nil {
			s.abandonQuietly(ctx, id, tok)
			return Grant{}, err
		}
	}
	if later, _ := s.epoch(); later.After(start) {
		// Granted on a connection that met a new epoch during the call,
		// with the floor of an earlier one: given up, never used.
		s.abandonQuietly(ctx, id, tok)
		return Grant{}, errNewEpoch
	}
	return Grant{Token: tok, Done: done, Fresh: fresh == 1, Epoch: runID, EpochStart: start}, nil
}

// abandonQuietly gives up a grant that is never used, its error ignored:
// the lock then expires.
func (s *Redis) abandonQuietly(ctx context.Context, id string, tok Token) {
	actx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 5*time.Second)
	s.Abandon(actx, id, tok)
	cancel()
}

// replidMet reports whether a connection's epoch read met the master
// replication ID replid (with Redis Cluster).
func (s *Redis) replidMet(replid string) bool {
	s.epochMu.Lock()
	defer s.epochMu.Unlock()
	return s.replids[replid]
}

// readEpochOf reads the epoch of the Redis Cluster master that serves
// key, over a new connection of its own (OnConnect).
func (s *Redis) readEpochOf(ctx context.Context, key string) error {
	cc, ok := s.c.(*redis.ClusterClient)
	if !ok {
		return nil
	}
	node, err := cc.MasterForKey(ctx, key)
	if err != nil {
		return redisErr("epoch", err)
	}
	// A client of its own, whose connection reads the epoch as it is
	// made: one from the node's pool may be of the old term.
	o := *node.Options()
	o.PoolSize, o.MinIdleConns, o.MaxIdleConns = 1, 0, 0
	c := redis.NewClient(&o)
	defer c.Close()
	if err := c.Ping(ctx).Err(); err != nil {
		return redisErr("epoch", err)
	}
	return nil
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
	n, err := s.pipe.run(ctx, keepScript, []string{k[1], k[2], k[3], k[4], k[6], k[7], k[5]}, tok.String(), ms(ttl), done, tok.Fence).Int()
	if err != nil {
		return redisErr("keep", err)
	}
	switch n {
	case 1:
		return nil
	case 2:
		return ErrSuperseded
	}
	return ErrLost
}

// Release implements Store.
func (s *Redis) Release(ctx context.Context, id string, tok Token, done uint64) error {
	k := s.Keys(id)
	n, err := s.pipe.run(ctx, releaseScript, []string{k[1], k[2], k[3], k[4], k[6], k[7], k[5]}, tok.String(), 0, done, tok.Fence).Int()
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

// Open implements Store.
func (s *Redis) Open(ctx context.Context, id string, continues bool) (Session, error) {
	k := s.Keys(id)
	c := "0"
	if continues {
		c = "1"
	}
	var v []any
	for try := 0; ; try++ {
		_, floor := s.epoch()
		var err error
		v, err = s.pipe.run(ctx, openScript, []string{k[5], k[6], k[3]}, c, floor/1000).Slice()
		if err != nil {
			return Session{}, redisErr("open", err)
		}
		// A connection made meanwhile met a new epoch: the generation
		// may have been judged by an earlier one's start. Again (its
		// session is then the newer, and this one's never used).
		if _, later := s.epoch(); later == floor {
			break
		} else if try == 3 {
			return Session{}, redisErr("open", errNewEpoch)
		}
	}
	if len(v) != 2 {
		return Session{}, redisErr("open", fmt.Errorf("unexpected reply %v", v))
	}
	no, err := parseUint(v[0])
	if err != nil {
		return Session{}, redisErr("open", err)
	}
	gen, err := parseUint(v[1])
	if err != nil {
		return Session{}, redisErr("open", err)
	}
	return Session{No: no, Gen: gen}, nil
}

// Welcome implements Store.
func (s *Redis) Welcome(ctx context.Context, id string, sess Session) (Session, uint64, error) {
	k := s.Keys(id)
	v, err := s.pipe.run(ctx, welcomeScript, []string{k[1], k[5], k[6], k[3]}, sess.No, sess.Gen).Result()
	if err != nil {
		return sess, 0, redisErr("welcome", err)
	}
	switch n, _ := v.(int64); {
	case n == -1:
		return sess, 0, ErrHeld
	case n == -2:
		return sess, 0, ErrSuperseded
	}
	arr, ok := v.([]any)
	if !ok || len(arr) != 2 {
		return sess, 0, redisErr("welcome", fmt.Errorf("unexpected reply %v", v))
	}
	gen, err := parseUint(arr[0])
	if err != nil {
		return sess, 0, redisErr("welcome", err)
	}
	done, err := parseUint(arr[1])
	if err != nil {
		return sess, 0, redisErr("welcome", err)
	}
	return Session{No: sess.No, Gen: gen}, done, nil
}

// OnConnect reads the epoch of the server a new connection reached,
// before the connection carries any call (DialRedis sets it as the
// client's OnConnect). A server that restarted (with its data, older
// data, or none) or was promoted has a new epoch; the leases granted
// before it may be lost while their holders still run, until a lease TTL
// after it began, so grants made on it carry when it began
// (Grant.EpochStart) and fences above every fence of earlier epochs.
// A connection whose epoch cannot be read is refused: its calls fail, and
// a failure is never taken as a lease given up.
func (s *Redis) OnConnect(ctx context.Context, cn *redis.Conn) error {
	info, err := cn.Info(ctx, "server", "replication").Result()
	if err != nil {
		return redisErr("epoch", err)
	}
	if infoField(info, "redis_mode") == "sentinel" {
		return nil // a failover client connects to Sentinels too
	}
	if infoField(info, "role") != "master" {
		if s.cluster {
			// A Cluster client loads the cluster state from replicas
			// too, and keeps a connection to a node whatever its role
			// becomes: once the replica is promoted, grants made over
			// this connection would not carry its epoch. Refused, so
			// that a promoted node gets a connection that reads it.
			return redisErr("epoch", errors.New("a Redis Cluster replica: refused, its epoch would go unread once promoted"))
		}
		// A replica behind a failover client, which drops its
		// connections to a node no longer master: no lease is granted
		// through it.
		return nil
	}
	key := s.prefix + ":epoch"
	if s.cluster {
		// The record must live in a slot this master serves: a key whose
		// hash tag falls in the first of them.
		slot, ok, err := ownSlot(ctx, cn)
		if err != nil {
			return redisErr("epoch", err)
		}
		if !ok {
			return nil // a master without slots holds no lease
		}
		key = s.prefix + ":{" + tagForSlot(slot) + "}:epoch"
	}
	last := ""
	if !s.cluster {
		s.epochMu.Lock()
		last = s.lastEpoch
		s.epochMu.Unlock()
	}
	v, err := epochScript.Run(ctx, cn, []string{key}, last).Slice()
	if err != nil {
		return redisErr("epoch", err)
	}
	if len(v) != 3 {
		return redisErr("epoch", fmt.Errorf("unexpected reply %v", v))
	}
	since, err1 := parseUint(v[1])
	now, err2 := parseUint(v[2])
	if err := errors.Join(err1, err2); err != nil {
		return redisErr("epoch", err)
	}
	// The start on this clock, estimated late: the reply's arrival less
	// how long ago, by the server's clock, the epoch began.
	start := time.Now().Add(-time.Duration(now-min(since, now)) * time.Millisecond)
	s.epochMu.Lock()
	s.noteEpochLocked(start, since*1000)
	s.lastEpoch, _ = v[0].(string)
	if s.cluster {
		if s.replids == nil {
			s.replids = make(map[string]bool)
		}
		_, replid, _ := strings.Cut(s.lastEpoch, "/")
		s.replids[replid] = true
	}
	s.epochMu.Unlock()
	return nil
}

// infoField returns the value of name in an INFO reply, "" if absent.
func infoField(info, name string) string {
	for rest := info; ; {
		i := strings.Index(rest, name+":")
		if i < 0 {
			return ""
		}
		if i == 0 || rest[i-1] == '\n' {
			v, _, _ := strings.Cut(rest[i+len(name)+1:], "\n")
			return strings.TrimSpace(v)
		}
		rest = rest[i+len(name)+1:]
	}
}

// ownSlot returns the first hash slot the Redis Cluster master cn reaches
// serves, and false when it serves none.
func ownSlot(ctx context.Context, cn *redis.Conn) (int, bool, error) {
	me, err := cn.Do(ctx, "CLUSTER", "MYID").Text()
	if err != nil {
		return 0, false, err
	}
	//lint:ignore SA1019 CLUSTER SHARDS, its successor, needs Redis 7.0; CLUSTER SLOTS answers every version.
	slots, err := cn.ClusterSlots(ctx).Result()
	if err != nil {
		return 0, false, err
	}
	first := -1
	for _, r := range slots {
		if len(r.Nodes) > 0 && r.Nodes[0].ID == me && (first < 0 || r.Start < first) {
			first = r.Start
		}
	}
	return first, first >= 0, nil
}

// tagForSlot returns a short hash tag whose key falls in slot.
func tagForSlot(slot int) string {
	// Every slot is hit within a few times 16384 tags; the bound only
	// keeps the loop finite.
	for i := 0; i < 1<<24; i++ {
		tag := "e" + strconv.Itoa(i)
		if int(crc16([]byte(tag))%16384) == slot {
			return tag
		}
	}
	return ""
}

// crc16 is Redis Cluster's key hash (CRC-16/XMODEM).
func crc16(b []byte) uint16 {
	var crc uint16
	for _, c := range b {
		crc ^= uint16(c) << 8
		for range 8 {
			if crc&0x8000 != 0 {
				crc = crc<<1 ^ 0x1021
			} else {
				crc <<= 1
			}
		}
	}
	return crc
}

func (s *Redis) noteEpochLocked(start time.Time, floor uint64) {
	if start.After(s.epochStart) {
		s.epochStart = start
	}
	s.floor = max(s.floor, floor)
}

// epoch returns the latest epoch start met and the fence floor.
func (s *Redis) epoch() (time.Time, uint64) {
	s.epochMu.Lock()
	defer s.epochMu.Unlock()
	return s.epochStart, s.floor
}

// Done reads the done record of the current generation, 0 if none.
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

// SetEpochStart records that the current epoch of the server c reaches
// began at t, for stores with key prefix. It is for a server known never to
// have held leases before t (a test's fresh redis-server): a store that
// meets a server without a record takes the server's start as its epoch's,
// and waits a lease TTL from it before its grants are used.
func SetEpochStart(ctx context.Context, c redis.Cmdable, prefix string, t time.Time) error {
	if prefix == "" {
		prefix = "edgegate"
	}
	server, err := c.Info(ctx, "server").Result()
	if err != nil {
		return redisErr("info", err)
	}
	repl, err := c.Info(ctx, "replication").Result()
	if err != nil {
		return redisErr("info", err)
	}
	field := func(info, name string) string {
		_, v, _ := strings.Cut(info, "\n"+name+":")
		v, _, _ = strings.Cut(v, "\n")
		return strings.TrimSpace(v)
	}
	v := field(server, "run_id") + "/" + field(repl, "master_replid") + ":" + strconv.FormatInt(t.UnixMilli(), 10)
	return c.Set(ctx, prefix+":epoch", v, 0).Err()
}
