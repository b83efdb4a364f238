-- Input: KEYS[1] lease, KEYS[2] queue zset, KEYS[3] heartbeat zset, KEYS[4] lease index, KEYS[5] token counter;
--        ARGV[1] waiter id, ARGV[2] holder, ARGV[3] TTL ms, ARGV[4] heartbeat TTL ms, ARGV[5] scope,
--        ARGV[6] '1' to queue up when it cannot go now, '0' to only try; ARGV[7] counter TTL ms
-- Output: {1, token, expiresAt} granted (the waiter leaves the queue), or {0, retryAfterMs, held 0|1} not yet (the
--         waiter is queued, or stays queued with a fresh heartbeat). Granted only to the head of the queue.
--         The lease's q = '1' tells releasers (and begin-write) that somebody may wait.
-- @include clock
-- @include lease-index
-- @include lease-record
-- @include lease-token
local id, ttl, hb = ARGV[1], tonumber(ARGV[3]), tonumber(ARGV[4])
-- Waiters whose replica stopped heartbeating (it died) lose their place.
local dead = redis.call('ZRANGEBYSCORE', KEYS[3], '-inf', now)
for _, w in ipairs(dead) do
  redis.call('ZREM', KEYS[2], w)
  redis.call('ZREM', KEYS[3], w)
end
local l = decodeLease(redis.call('GET', KEYS[1]))
local held = l ~= nil and l.ex > now
local head = redis.call('ZRANGE', KEYS[2], 0, 0)[1]
if not held and (head == nil or head == id) then
  local token = nextToken(KEYS[5], ARGV[7])
  redis.call('ZREM', KEYS[2], id)
  redis.call('ZREM', KEYS[3], id)
  local waiting = redis.call('ZCARD', KEYS[2]) > 0
  if not waiting then redis.call('DEL', KEYS[2], KEYS[3]) end
  putLease(KEYS[1], { h = ARGV[2], t = token, ex = now + ttl, q = waiting and '1' or '0' }, ttl)
  redis.call('ZREMRANGEBYSCORE', KEYS[4], '-inf', now)
  redis.call('ZADD', KEYS[4], now + ttl, ARGV[5])
  indexTtl(KEYS[4], ttl)
  return {1, token, now + ttl}
end
local retry = 1
if held then retry = math.max(1, l.ex - now) end
if ARGV[6] == '1' then
  if not redis.call('ZSCORE', KEYS[2], id) then redis.call('ZADD', KEYS[2], string.format('%.0f', nowUs), id) end
  redis.call('ZADD', KEYS[3], now + hb, id)
  redis.call('PEXPIRE', KEYS[2], 2 * hb)
  redis.call('PEXPIRE', KEYS[3], 2 * hb)
  if held and l.q ~= '1' then
    l.q = '1'
    redis.call('SET', KEYS[1], table.concat({ l.h, l.t, string.format('%.0f', l.ex), '1' }, '\n'), 'KEEPTTL')
  end
end
return {0, retry, held and 1 or 0}
