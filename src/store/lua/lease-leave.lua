-- Input: KEYS[1] queue zset, KEYS[2] heartbeat zset; ARGV[1] waiter id, ARGV[2] channel, ARGV[3] scope
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
