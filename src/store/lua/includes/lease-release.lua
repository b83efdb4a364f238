-- Releases lease `lk` if (holder, token) still holds it. Returns the id of the waiter now at the head of queue `qk`
-- ('' when none, or when this grant no longer held it), published on `channel` so that only the one waiter who can
-- go next tries again, on whichever replica it waits. With block ms > 0 the scope stays blocked (no holder) that
-- long. While somebody may wait, the lease stays (free, q = '1') so that newcomers queue behind the waiters.
local function releaseLease(lk, qk, index, holder, token, block, channel, scope)
  local l = decodeLease(redis.call('GET', lk))
  if not l or l.h ~= holder or tonumber(l.t) ~= tonumber(token) then return '' end
  redis.call('ZREM', index, scope)
  if block <= 0 and l.q ~= '1' then
    redis.call('DEL', lk)
    return ''
  end
  l.h, l.ex = '', now + math.max(0, block)
  putLease(lk, l, math.max(block, 7000))
  if l.q ~= '1' then return '' end
  local head = redis.call('ZRANGE', qk, 0, 0)[1]
  if head then redis.call('PUBLISH', channel, head) end
  return head or ''
end
