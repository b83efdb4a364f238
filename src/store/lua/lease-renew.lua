-- Input: KEYS[1] lease hash, KEYS[2] lease index; ARGV[1] holder, ARGV[2] token, ARGV[3] TTL ms, ARGV[4] scope
-- Output: 1 renewed, 0 refused (not held by this grant, or already expired)
-- @include clock
-- @include lease-index
local r = redis.call('HMGET', KEYS[1], 'h', 't', 'ex')
if r[1] ~= ARGV[1] or tonumber(r[2]) ~= tonumber(ARGV[2]) or tonumber(r[3]) <= now then return 0 end
local ttl = tonumber(ARGV[3])
redis.call('HSET', KEYS[1], 'ex', now + ttl)
redis.call('PEXPIRE', KEYS[1], ttl)
redis.call('ZADD', KEYS[2], now + ttl, ARGV[4])
indexTtl(KEYS[2], ttl)
return 1
