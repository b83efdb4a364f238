-- Input: KEYS[1] record, KEYS[2] lease index, KEYS[3] audit stream, then per grant i: KEYS[2+2i] lease,
--        KEYS[3+2i] queue zset; ARGV[1] owner, ARGV[2] fence, ARGV[3] result, ARGV[4] TTL ms, ARGV[5] key channel,
--        ARGV[6] key scope, ARGV[7] lease channel, ARGV[8] audit batch (JSON, '' for none), ARGV[9] the stream's MAXLEN
--        in items, ARGV[10] the stream's TTL ms to set (0: leave it), then per grant i: ARGV[9+2i] token,
--        ARGV[10+2i] lease scope
-- Output: {completed 0|1, head...}: the key claimed|dispatched → completed (compare-and-set on owner and fence;
--         published when somebody waits for it), and every grant released (see includes/lease-release.lua); head i
--         is the waiter that may go next on scope i ('' when none). One script instead of complete + release (+ the
--         audit entries waiting to be sent, appended as one stream item).
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
for i = 1, (#KEYS - 3) / 2 do
  out[1 + i] = releaseLease(KEYS[2 + 2 * i], KEYS[3 + 2 * i], KEYS[2], ARGV[1], ARGV[9 + 2 * i], 0, ARGV[7],
    ARGV[10 + 2 * i])
end
if ARGV[8] ~= '' then
  redis.call('XADD', KEYS[3], 'MAXLEN', '~', ARGV[9], '*', 'b', ARGV[8])
  if ARGV[10] ~= '0' then redis.call('PEXPIRE', KEYS[3], ARGV[10]) end
end
return out
