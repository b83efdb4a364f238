-- Input: KEYS[1] lease, KEYS[2] lease index, KEYS[3] queue zset; ARGV[1] holder, ARGV[2] token, ARGV[3] block ms,
--        ARGV[4] channel, ARGV[5] scope
-- Output: the id of the waiter now at the head of the queue ('' when none, or when this grant no longer held the
--         lease); see includes/lease-release.lua.
-- @include clock
-- @include lease-record
-- @include lease-release
return releaseLease(KEYS[1], KEYS[3], KEYS[2], ARGV[1], ARGV[2], tonumber(ARGV[3]), ARGV[4], ARGV[5])
