// The Lua scripts of the Redis store. Each runs atomically in Redis and judges time by Redis' own clock (TIME), so
// replicas with skewed clocks agree on what has expired. They mirror key-rules.ts and gcra.ts, which the in-process
// stores use; the contract suite runs against both. Kept as string constants so that tsc ships them in dist/.
//
// Keys (all under the configured prefix P, each with a TTL):
//   P key:<scope>        hash  st fp ow fe ex ut [rs]  idempotency record (state, fingerprint, owner, fence,
//                              expiresAt, unknown TTL, result)
//   P lease:<scope>      hash  h t ex                 a held lease (holder '' = blocked by a lock-delay)
//   P lease-q:<scope>    zset  waiter id -> arrival (Redis time, µs): FIFO order
//   P lease-hb:<scope>   zset  waiter id -> heartbeat deadline (ms): a dead replica's waiters drop out
//   P lease-index        zset  scope -> lease expiry, for listing held leases
//   P lease-seq          string the last fencing token issued
//   P rate:<bucket>      hash  tat pu                 GCRA theoretical arrival time and pause-until (ms)
//   P audit              stream                       capped audit trail

export interface LuaScript {
  readonly name: string;
  readonly keys: number;
  readonly lua: string;
}

/** Redis' clock in ms (integer) and µs; every script starts with it. */
const CLOCK = `
local clock = redis.call('TIME')
local now = tonumber(clock[1]) * 1000 + math.floor(tonumber(clock[2]) / 1000)
local nowUs = tonumber(clock[1]) * 1000000 + tonumber(clock[2])
`;

export const KEY_CLAIM: LuaScript = {
  name: 'key-claim',
  keys: 1,
  lua: `-- Input: KEYS[1] record hash; ARGV[1] fingerprint, ARGV[2] owner, ARGV[3] claim TTL ms, ARGV[4] retryUnknown '1'|'0',
--        ARGV[5] unknown TTL ms, ARGV[6] how long an expired claim lingers (ms)
-- Output: {'claimed', fence, tookOver 0|1} or {'existing', state, fingerprint, owner, fence, expiresAt, result|nil}
${CLOCK}
local ttl, ut, linger = tonumber(ARGV[3]), tonumber(ARGV[5]), tonumber(ARGV[6])
local function claim(fence, tookOver)
  redis.call('HDEL', KEYS[1], 'rs')
  redis.call('HSET', KEYS[1], 'st', 'claimed', 'fp', ARGV[1], 'ow', ARGV[2], 'fe', fence, 'ex', now + ttl, 'ut', ut)
  redis.call('PEXPIRE', KEYS[1], ttl + linger)
  return {'claimed', fence, tookOver}
end
local r = redis.call('HMGET', KEYS[1], 'st', 'fp', 'ow', 'fe', 'ex', 'ut', 'rs')
local st = r[1]
if not st then return claim(1, 0) end
local fe, ex, rut = tonumber(r[4]), tonumber(r[5]), tonumber(r[6])
local goneAt = ex
if st == 'claimed' then goneAt = ex + linger elseif st == 'dispatched' then goneAt = ex + rut end
if now >= goneAt then return claim(1, 0) end
-- The owner died before sending: nothing went upstream, so the next caller runs it.
if st == 'claimed' and ex <= now then return claim(fe + 1, 1) end
local vst, vex = st, ex
if st == 'dispatched' and ex <= now then
  vst, vex = 'unknown', ex + rut
  redis.call('HSET', KEYS[1], 'st', 'unknown', 'ex', vex)
end
if vst == 'unknown' and ARGV[4] == '1' and r[2] == ARGV[1] then return claim(fe + 1, 1) end
return {'existing', vst, r[2], r[3], fe, vex, r[7]}
`,
};

export const KEY_GET: LuaScript = {
  name: 'key-get',
  keys: 1,
  lua: `-- Input: KEYS[1] record hash
-- Output: {now, state|nil, fingerprint, owner, fence, expiresAt, unknownTtlMs, result|nil} (the stored row, unjudged)
${CLOCK}
local r = redis.call('HMGET', KEYS[1], 'st', 'fp', 'ow', 'fe', 'ex', 'ut', 'rs')
return {now, r[1], r[2], r[3], r[4], r[5], r[6], r[7]}
`,
};

export const KEY_MOVE: LuaScript = {
  name: 'key-move',
  keys: 1,
  lua: `-- Input: KEYS[1] record hash; ARGV[1] op dispatch|renew|complete|unknown|release, ARGV[2] owner, ARGV[3] fence,
--        ARGV[4] TTL ms, ARGV[5] result, ARGV[6] channel, ARGV[7] scope, ARGV[8] how long an expired claim lingers (ms)
-- Output: 1 done, 0 refused (missing, expired, other owner or fence, or a state the op does not start from).
--        complete/unknown/release publish the scope on the channel, waking joined callers on every replica.
${CLOCK}
local r = redis.call('HMGET', KEYS[1], 'st', 'ow', 'fe', 'ex', 'ut')
local st, op = r[1], ARGV[1]
if not st or r[2] ~= ARGV[2] or tonumber(r[3]) ~= tonumber(ARGV[3]) or tonumber(r[4]) <= now then return 0 end
local ttl, ut, linger = math.max(1, tonumber(ARGV[4])), tonumber(r[5]), tonumber(ARGV[8])
local live = st == 'claimed' or st == 'dispatched'
if op == 'dispatch' and st == 'claimed' then
  redis.call('HSET', KEYS[1], 'st', 'dispatched', 'ex', now + ttl)
  redis.call('PEXPIRE', KEYS[1], ttl + ut)
  return 1
elseif op == 'renew' and live then
  redis.call('HSET', KEYS[1], 'ex', now + ttl)
  if st == 'claimed' then redis.call('PEXPIRE', KEYS[1], ttl + linger) else redis.call('PEXPIRE', KEYS[1], ttl + ut) end
  return 1
elseif op == 'complete' and live then
  redis.call('HSET', KEYS[1], 'st', 'completed', 'rs', ARGV[5], 'ex', now + ttl)
  redis.call('PEXPIRE', KEYS[1], ttl)
elseif op == 'unknown' and st == 'dispatched' then
  redis.call('HSET', KEYS[1], 'st', 'unknown', 'ex', now + ttl)
  redis.call('PEXPIRE', KEYS[1], ttl)
elseif op == 'release' and live then
  redis.call('DEL', KEYS[1])
else
  return 0
end
redis.call('PUBLISH', ARGV[6], ARGV[7])
return 1
`,
};

/** Shared by the lease scripts: keeps the index of held leases alive at least `ms` more. */
const EXTEND_INDEX = `
local function extendIndex(key, ms)
  if redis.call('PTTL', key) < ms then redis.call('PEXPIRE', key, ms) end
end
`;

export const LEASE_ACQUIRE: LuaScript = {
  name: 'lease-acquire',
  keys: 5,
  lua: `-- Input: KEYS[1] lease hash, KEYS[2] queue zset, KEYS[3] heartbeat zset, KEYS[4] lease index, KEYS[5] token counter;
--        ARGV[1] waiter id, ARGV[2] holder, ARGV[3] TTL ms, ARGV[4] heartbeat TTL ms, ARGV[5] scope,
--        ARGV[6] '1' to queue up when it cannot go now, '0' to only try; ARGV[7] counter TTL ms
-- Output: {1, token, expiresAt} granted (the waiter leaves the queue), or {0, retryAfterMs, held 0|1} not yet (the
--         waiter is queued, or stays queued with a fresh heartbeat). Granted only to the head of the queue.
${CLOCK}
${EXTEND_INDEX}
local id, ttl, hb = ARGV[1], tonumber(ARGV[3]), tonumber(ARGV[4])
-- Waiters whose replica stopped heartbeating (it died) lose their place.
local dead = redis.call('ZRANGEBYSCORE', KEYS[3], '-inf', now)
for _, w in ipairs(dead) do
  redis.call('ZREM', KEYS[2], w)
  redis.call('ZREM', KEYS[3], w)
end
local ex = tonumber(redis.call('HGET', KEYS[1], 'ex'))
local held = ex ~= nil and ex > now
local head = redis.call('ZRANGE', KEYS[2], 0, 0)[1]
if not held and (head == nil or head == id) then
  -- Never behind the stored counter, and never behind Redis' clock in µs: tokens keep growing even if Redis
  -- loses the counter.
  local token = math.max((tonumber(redis.call('GET', KEYS[5])) or 0) + 1, nowUs)
  local tokenText = string.format('%.0f', token)
  redis.call('SET', KEYS[5], tokenText, 'PX', ARGV[7])
  redis.call('HSET', KEYS[1], 'h', ARGV[2], 't', tokenText, 'ex', now + ttl)
  redis.call('PEXPIRE', KEYS[1], ttl)
  redis.call('ZREM', KEYS[2], id)
  redis.call('ZREM', KEYS[3], id)
  if redis.call('ZCARD', KEYS[2]) == 0 then redis.call('DEL', KEYS[2], KEYS[3]) end
  redis.call('ZREMRANGEBYSCORE', KEYS[4], '-inf', now)
  redis.call('ZADD', KEYS[4], now + ttl, ARGV[5])
  extendIndex(KEYS[4], ttl + 1000)
  return {1, token, now + ttl}
end
local retry = 1
if held then retry = math.max(1, ex - now) end
if ARGV[6] == '1' then
  if not redis.call('ZSCORE', KEYS[2], id) then redis.call('ZADD', KEYS[2], string.format('%.0f', nowUs), id) end
  redis.call('ZADD', KEYS[3], now + hb, id)
  redis.call('PEXPIRE', KEYS[2], 2 * hb)
  redis.call('PEXPIRE', KEYS[3], 2 * hb)
end
return {0, retry, held and 1 or 0}
`,
};

export const LEASE_LEAVE: LuaScript = {
  name: 'lease-leave',
  keys: 2,
  lua: `-- Input: KEYS[1] queue zset, KEYS[2] heartbeat zset; ARGV[1] waiter id, ARGV[2] channel, ARGV[3] scope
-- Output: the id of the new head when the leaver was the head ('' otherwise); that waiter's id is published so it
--         tries now.
local head = redis.call('ZRANGE', KEYS[1], 0, 0)[1]
redis.call('ZREM', KEYS[1], ARGV[1])
redis.call('ZREM', KEYS[2], ARGV[1])
if redis.call('ZCARD', KEYS[1]) == 0 then redis.call('DEL', KEYS[1], KEYS[2]) end
if head ~= ARGV[1] then return '' end
local nextHead = redis.call('ZRANGE', KEYS[1], 0, 0)[1]
if nextHead then redis.call('PUBLISH', ARGV[2], nextHead) end
return nextHead or ''
`,
};

export const LEASE_RENEW: LuaScript = {
  name: 'lease-renew',
  keys: 2,
  lua: `-- Input: KEYS[1] lease hash, KEYS[2] lease index; ARGV[1] holder, ARGV[2] token, ARGV[3] TTL ms, ARGV[4] scope
-- Output: 1 renewed, 0 refused (not held by this grant, or already expired)
${CLOCK}
${EXTEND_INDEX}
local r = redis.call('HMGET', KEYS[1], 'h', 't', 'ex')
if r[1] ~= ARGV[1] or tonumber(r[2]) ~= tonumber(ARGV[2]) or tonumber(r[3]) <= now then return 0 end
local ttl = tonumber(ARGV[3])
redis.call('HSET', KEYS[1], 'ex', now + ttl)
redis.call('PEXPIRE', KEYS[1], ttl)
redis.call('ZADD', KEYS[2], now + ttl, ARGV[4])
extendIndex(KEYS[2], ttl + 1000)
return 1
`,
};

export const LEASE_RELEASE: LuaScript = {
  name: 'lease-release',
  keys: 3,
  lua: `-- Input: KEYS[1] lease hash, KEYS[2] lease index, KEYS[3] queue zset; ARGV[1] holder, ARGV[2] token, ARGV[3] block ms,
--        ARGV[4] channel, ARGV[5] scope
-- Output: the id of the waiter now at the head of the queue ('' when none, or when this grant no longer held the
--         lease). With block ms > 0 the scope stays blocked (no holder) that long. Publishes the head's id, so only
--         the one waiter who can go next tries again, on whichever replica it waits (no thundering herd).
${CLOCK}
local r = redis.call('HMGET', KEYS[1], 'h', 't')
if r[1] ~= ARGV[1] or tonumber(r[2]) ~= tonumber(ARGV[2]) then return '' end
local block = tonumber(ARGV[3])
if block > 0 then
  redis.call('HSET', KEYS[1], 'h', '', 'ex', now + block)
  redis.call('PEXPIRE', KEYS[1], block)
else
  redis.call('DEL', KEYS[1])
end
redis.call('ZREM', KEYS[2], ARGV[5])
local head = redis.call('ZRANGE', KEYS[3], 0, 0)[1]
if head then redis.call('PUBLISH', ARGV[4], head) end
return head or ''
`,
};

export const RATE_TAKE: LuaScript = {
  name: 'rate-take',
  keys: 1,
  lua: `-- Input: KEYS[1] bucket hash; ARGV[1] perSecond, ARGV[2] burst
-- Output: {1} admitted (tat advanced), or {0, retryAfterMs} refused (nothing consumed). GCRA on Redis' clock;
--         a pause admits nothing until it ends, then resumes at the steady rate (see gcra.ts).
local clock = redis.call('TIME')
local now = tonumber(clock[1]) * 1000 + tonumber(clock[2]) / 1000
local perSecond = tonumber(ARGV[1])
if not perSecond or perSecond <= 0 then return {0, 1000} end
local interval = 1000 / perSecond
local size = math.max(1, math.floor(tonumber(ARGV[2])))
local r = redis.call('HMGET', KEYS[1], 'tat', 'pu')
local tat, pu = tonumber(r[1]) or 0, tonumber(r[2]) or 0
if pu > 0 then tat = math.max(tat, pu + (size - 1) * interval) end
local nxt = math.max(tat, now) + interval
local admitAt = nxt - size * interval
if admitAt > now then return {0, math.max(1, math.ceil(admitAt - now))} end
redis.call('HSET', KEYS[1], 'tat', string.format('%.3f', nxt))
redis.call('PEXPIRE', KEYS[1], math.ceil(nxt - now) + 1000)
return {1}
`,
};

export const RATE_PAUSE: LuaScript = {
  name: 'rate-pause',
  keys: 1,
  lua: `-- Input: KEYS[1] bucket hash; ARGV[1] pause ms
-- Output: 1. Admit nothing in the bucket until Redis time + ms (an existing longer pause stays).
local clock = redis.call('TIME')
local now = tonumber(clock[1]) * 1000 + tonumber(clock[2]) / 1000
local r = redis.call('HMGET', KEYS[1], 'tat', 'pu')
local tat, pu = tonumber(r[1]) or 0, tonumber(r[2]) or 0
pu = math.max(pu, now + math.max(0, tonumber(ARGV[1])))
redis.call('HSET', KEYS[1], 'pu', string.format('%.3f', pu), 'tat', string.format('%.3f', tat))
-- The steady restart after a pause depends on the rate, unknown here: keep the state a minute past it.
redis.call('PEXPIRE', KEYS[1], math.ceil(math.max(tat, pu) - now) + 60000)
return 1
`,
};

export const ALL_SCRIPTS: readonly LuaScript[] = [
  KEY_CLAIM,
  KEY_GET,
  KEY_MOVE,
  LEASE_ACQUIRE,
  LEASE_LEAVE,
  LEASE_RENEW,
  LEASE_RELEASE,
  RATE_TAKE,
  RATE_PAUSE,
];
