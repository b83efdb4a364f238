-- Input: KEYS[1] record; ARGV[1] op dispatch|renew|complete|unknown|release, ARGV[2] owner, ARGV[3] fence,
--        ARGV[4] TTL ms, ARGV[5] result, ARGV[6] channel, ARGV[7] scope, ARGV[8] how long an expired claim lingers (ms)
-- Output: 1 done, 0 refused (missing, expired, other owner or fence, or a state the op does not start from).
--        complete/unknown/release publish the scope on the channel when somebody waits for it (on any replica).
-- @include clock
-- @include key-record
local r = decodeKey(redis.call('GET', KEYS[1]))
local op = ARGV[1]
if not r or r.ow ~= ARGV[2] or r.fe ~= tonumber(ARGV[3]) or r.ex <= now then return 0 end
local ttl, linger = math.max(1, tonumber(ARGV[4])), tonumber(ARGV[8])
local live = r.st == 'claimed' or r.st == 'dispatched'
if op == 'dispatch' and r.st == 'claimed' then
  r.st, r.ex = 'dispatched', now + ttl
  putKey(KEYS[1], r, ttl + r.ut)
  return 1
elseif op == 'renew' and live then
  r.ex = now + ttl
  if r.st == 'claimed' then putKey(KEYS[1], r, ttl + linger) else putKey(KEYS[1], r, ttl + r.ut) end
  return 1
elseif op == 'complete' and live then
  r.st, r.rs, r.ex = 'completed', ARGV[5], now + ttl
  putKey(KEYS[1], r, ttl)
elseif op == 'unknown' and r.st == 'dispatched' then
  r.st, r.ex = 'unknown', now + ttl
  putKey(KEYS[1], r, ttl)
elseif op == 'release' and live then
  redis.call('DEL', KEYS[1])
else
  return 0
end
if r.w == '1' then redis.call('PUBLISH', ARGV[6], ARGV[7]) end
return 1
