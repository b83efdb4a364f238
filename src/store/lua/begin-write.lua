-- Input: KEYS[1] record, KEYS[2] token counter, KEYS[3] lease index, then per lease scope i: KEYS[2+2i] lease,
--        KEYS[3+2i] queue zset (unused here: the lease's q flag says whether anybody may wait);
--        ARGV[1] fingerprint, ARGV[2] owner, ARGV[3] claim TTL ms, ARGV[4] retryUnknown '1'|'0', ARGV[5] unknown TTL ms,
--        ARGV[6] how long an expired claim lingers (ms), ARGV[7] lease TTL ms, ARGV[8] dispatch '1'|'0',
--        ARGV[9] counter TTL ms, ARGV[10] '1' to refresh the lease index's TTL (the store asks once a minute),
--        then per scope i: ARGV[10+i] scope name
-- Output: {'existing', state, fingerprint, owner, fence, expiresAt, result|nil}, or
--         {'claimed', fence, tookOver 0|1, granted 0|1, dispatched 0|1, token...}: the key claimed, every lease
--         granted if each was free with nobody waiting (else none), and the key persisted `dispatched` when asked
--         and the leases were granted. One script instead of claim + acquire + dispatch.
-- @include clock
-- @include lease-index
-- @include lease-record
-- @include key-record
-- @include lease-token
local ttl, linger, leaseTtl = tonumber(ARGV[3]), tonumber(ARGV[6]), tonumber(ARGV[7])
local fence, tookOver = decideClaim(KEYS[1], ARGV[1], ARGV[4], linger)
if not fence then
  local v = tookOver
  return { 'existing', v[1], v[2], v[3], v[4], v[5], v[6] }
end
local n = (#KEYS - 3) / 2
local free = true
for i = 1, n do
  local l = decodeLease(redis.call('GET', KEYS[2 + 2 * i]))
  if l and (l.ex > now or l.q == '1') then
    free = false
    break
  end
end
local out = { 'claimed', fence, tookOver, free and 1 or 0, 0 }
if free then
  for i = 1, n do
    local token = nextToken(KEYS[2], ARGV[9])
    putLease(KEYS[2 + 2 * i], { h = ARGV[2], t = token, ex = now + leaseTtl }, leaseTtl)
    redis.call('ZADD', KEYS[3], now + leaseTtl, ARGV[10 + i])
    out[5 + i] = token
  end
  if ARGV[10] == '1' then indexTtl(KEYS[3], leaseTtl) end
end
local r = { st = 'claimed', fp = ARGV[1], ow = ARGV[2], fe = fence, ex = now + ttl, ut = tonumber(ARGV[5]) }
if free and ARGV[8] == '1' then
  r.st = 'dispatched'
  out[5] = 1
  putKey(KEYS[1], r, ttl + r.ut)
else
  putKey(KEYS[1], r, ttl + linger)
end
return out
