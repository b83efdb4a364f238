-- The next fencing token: one INCR. A counter found missing (new, or lost with Redis' data) restarts at Redis' clock
-- in µs, so tokens keep growing across such a loss as long as fewer than a million are issued per second.
local function nextToken(counterKey, counterTtlMs)
  local t = redis.call('INCR', counterKey)
  if t == 1 then
    t = nowUs
    redis.call('SET', counterKey, string.format('%.0f', t), 'PX', counterTtlMs)
  end
  return string.format('%.0f', t)
end
