-- Input: KEYS[1] bucket hash; ARGV[1] pause ms
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
