-- Input: KEYS[1] record, KEYS[2] lease index, then per grant i: KEYS[1+2i] lease, KEYS[2+2i] queue zset;
--        ARGV[1] owner, ARGV[2] fence, ARGV[3] result, ARGV[4] TTL ms, ARGV[5] key channel, ARGV[6] key scope,
--        ARGV[7] lease channel, then per grant i: ARGV[6+2i] token, ARGV[7+2i] lease scope
-- Output: {completed 0|1, head...}: the key claimed|dispatched → completed (compare-and-set on owner and fence;
--         published when somebody waits for it), and every grant released (see includes/lease-release.lua); head i
--         is the waiter that may go next on scope i ('' when none). One script instead of complete + release.
-- @include clock
-- @include key-record
-- @include lease-record
-- @include lease-release
local done = 0
local r = decodeKey(redis.call('GET', KEYS[1]))
if r and r.ow == ARGV[1] and r.fe == tonumber(ARGV[2]) and r.ex > now and (r.st == 'claimed' or r.st == 'dispatched') then
  local ttl = math.max(1, tonumber(ARGV[4]))
  r.st, r.rs, r.ex = 'completed', ARGV[3], now + ttl
  putKey(KEYS[1], r, ttl)
  if r.w == '1' then redis.call('PUBLISH', ARGV[5], ARGV[6]) end
  done = 1
end
local out = { done }
for i = 1, (#KEYS - 2) / 2 do
  out[1 + i] = releaseLease(KEYS[1 + 2 * i], KEYS[2 + 2 * i], KEYS[2], ARGV[1], ARGV[6 + 2 * i], 0, ARGV[7], ARGV[7 + 2 * i])
end
return out
