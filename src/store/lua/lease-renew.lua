-- Input: KEYS[1] lease, KEYS[2] lease index; ARGV[1] holder, ARGV[2] token, ARGV[3] TTL ms, ARGV[4] scope
-- Output: 1 renewed, 0 refused (not held by this grant, or already expired)
-- @include clock
-- @include lease-index
-- @include lease-record
local l = decodeLease(redis.call('GET', KEYS[1]))
if not l or l.h ~= ARGV[1] or tonumber(l.t) ~= tonumber(ARGV[2]) or l.ex <= now then return 0 end
local ttl = tonumber(ARGV[3])
l.ex = now + ttl
putLease(KEYS[1], l, ttl)
redis.call('ZADD', KEYS[2], now + ttl, ARGV[4])
indexTtl(KEYS[2], ttl)
return 1
