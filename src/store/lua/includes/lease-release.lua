-- Releases the lease in hash `lk` if (holder, token) still holds it. Returns the id of the waiter now at the head
-- of queue `qk` ('' when none, or when this grant no longer held it), published on `channel` so that only the one
-- waiter who can go next tries again, on whichever replica it waits. With block ms > 0 the scope stays blocked (no
-- holder) that long. While somebody waits, the hash stays (free, q = '1') so newcomers queue behind the waiters.
local function releaseLease(lk, qk, index, holder, token, block, channel, scope)
  local r = redis.call('HMGET', lk, 'h', 't', 'q')
  if r[1] ~= holder or tonumber(r[2]) ~= tonumber(token) then return '' end
  redis.call('ZREM', index, scope)
  if block <= 0 and r[3] ~= '1' then
    redis.call('DEL', lk)
    return ''
  end
  redis.call('HSET', lk, 'h', '', 'ex', now + math.max(0, block))
  redis.call('PEXPIRE', lk, math.max(block, 7000))
  local head = redis.call('ZRANGE', qk, 0, 0)[1]
  if head then redis.call('PUBLISH', channel, head) end
  return head or ''
end
