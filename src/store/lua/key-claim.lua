-- Input: KEYS[1] record; ARGV[1] fingerprint, ARGV[2] owner, ARGV[3] claim TTL ms, ARGV[4] retryUnknown '1'|'0',
--        ARGV[5] unknown TTL ms, ARGV[6] how long an expired claim lingers (ms)
-- Output: {'claimed', fence, tookOver 0|1} or {'existing', state, fingerprint, owner, fence, expiresAt, result|nil}
-- @include clock
-- @include key-record
local ttl, linger = tonumber(ARGV[3]), tonumber(ARGV[6])
local fence, tookOver = decideClaim(KEYS[1], ARGV[1], ARGV[4], linger)
if not fence then
  local v = tookOver
  return { 'existing', v[1], v[2], v[3], v[4], v[5], v[6] }
end
putKey(KEYS[1], { st = 'claimed', fp = ARGV[1], ow = ARGV[2], fe = fence, ex = now + ttl, ut = tonumber(ARGV[5]) },
  ttl + linger)
return { 'claimed', fence, tookOver }
