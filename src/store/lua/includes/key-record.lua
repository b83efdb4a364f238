-- An idempotency record is one string, so one GET reads it and one SET ... PX writes it with its TTL: state,
-- fingerprint, owner, fence, expiresAt, unknown TTL, joiners flag ('1' once somebody waits for it), each followed by
-- a newline, then the stored result (empty when none).
local function decodeKey(s)
  if not s then return nil end
  local f, pos = {}, 1
  for i = 1, 7 do
    local e = string.find(s, '\n', pos, true)
    f[i] = string.sub(s, pos, e - 1)
    pos = e + 1
  end
  local rs = string.sub(s, pos)
  return { st = f[1], fp = f[2], ow = f[3], fe = tonumber(f[4]), ex = tonumber(f[5]), ut = tonumber(f[6]),
    w = f[7], rs = rs ~= '' and rs or nil }
end
local function encodeKey(r)
  return table.concat({ r.st, r.fp, r.ow, string.format('%.0f', r.fe), string.format('%.0f', r.ex),
    string.format('%.0f', r.ut), r.w or '0', r.rs or '' }, '\n')
end
local function putKey(key, r, ttl)
  redis.call('SET', key, encodeKey(r), 'PX', math.max(1, math.ceil(ttl)))
end
-- Claims KEYS-side record `key` (see key-rules.ts decideClaim). Returns fence, tookOver for a claim (the caller
-- writes the row), or nil and the record as callers see it {state, fingerprint, owner, fence, expiresAt, result}.
local function decideClaim(key, fp, retryUnknown, linger)
  local r = decodeKey(redis.call('GET', key))
  if not r then return 1, 0 end
  local goneAt = r.ex
  if r.st == 'claimed' then goneAt = r.ex + linger elseif r.st == 'dispatched' then goneAt = r.ex + r.ut end
  if now >= goneAt then return 1, 0 end
  -- The owner died before sending: nothing went upstream, so the next caller runs it.
  if r.st == 'claimed' and r.ex <= now then return r.fe + 1, 1 end
  if r.st == 'dispatched' and r.ex <= now then
    r.st, r.ex = 'unknown', r.ex + r.ut
    putKey(key, r, r.ex - now)
  end
  if r.st == 'unknown' and retryUnknown == '1' and r.fp == fp then return r.fe + 1, 1 end
  return nil, { r.st, r.fp, r.ow, r.fe, r.ex, r.rs }
end
