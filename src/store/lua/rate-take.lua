-- Input: KEYS[1] bucket hash; ARGV[1] perSecond, ARGV[2] burst
-- Output: {1} admitted (tat advanced), or {0, retryAfterMs} refused (nothing consumed): includes/gcra.lua on
--         Redis' clock (in fractional ms).
-- @include gcra
local clock = redis.call('TIME')
local now = tonumber(clock[1]) * 1000 + tonumber(clock[2]) / 1000
local r = redis.call('HMGET', KEYS[1], 'tat', 'pu')
local ok, v = gcraTake(tonumber(r[1]) or 0, tonumber(r[2]) or 0, now, tonumber(ARGV[1]), tonumber(ARGV[2]))
if not ok then return {0, v} end
redis.call('HSET', KEYS[1], 'tat', string.format('%.3f', v))
redis.call('PEXPIRE', KEYS[1], math.ceil(v - now) + 1000)
return {1}
