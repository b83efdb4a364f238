-- A lease is one string, so one GET reads it and one SET ... PX writes it with its TTL: holder ('' = free, or
-- blocked by a lock-delay), fencing token, expiresAt (ms), waiters flag ('1' while somebody may wait in the queue),
-- separated by newlines.
local function decodeLease(s)
  if not s then return nil end
  local f, pos = {}, 1
  for i = 1, 3 do
    local e = string.find(s, '\n', pos, true)
    f[i] = string.sub(s, pos, e - 1)
    pos = e + 1
  end
  return { h = f[1], t = f[2], ex = tonumber(f[3]), q = string.sub(s, pos) }
end
local function putLease(key, l, ttl)
  redis.call('SET', key, table.concat({ l.h, l.t, string.format('%.0f', l.ex), l.q or '0' }, '\n'), 'PX',
    math.max(1, math.ceil(ttl)))
end
