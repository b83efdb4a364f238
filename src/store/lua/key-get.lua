-- Input: KEYS[1] record; ARGV[1] '1' when the caller will wait for the record to settle, '0' to only read
-- Output: {now, state|nil, fingerprint, owner, fence, expiresAt, unknownTtlMs, result|nil} (the stored row,
--         unjudged). A waiter marks a live record, so that its owner publishes the transition that settles it.
-- @include clock
-- @include key-record
local r = decodeKey(redis.call('GET', KEYS[1]))
if not r then return { now } end
if ARGV[1] == '1' and r.w ~= '1' and (r.st == 'claimed' or r.st == 'dispatched') then
  r.w = '1'
  redis.call('SET', KEYS[1], encodeKey(r), 'KEEPTTL')
end
return { now, r.st, r.fp, r.ow, string.format('%.0f', r.fe), string.format('%.0f', r.ex), string.format('%.0f', r.ut), r.rs }
