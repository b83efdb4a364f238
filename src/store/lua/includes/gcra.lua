-- The GCRA rule of gcra.ts (takeFromBucket), on plain numbers in ms: bucket state tat and pu (pause-until), the
-- store's now, the rate. Returns true and the new tat, or false and the wait in whole ms until a call would be
-- admitted. A pause admits nothing until it ends and then restarts at the steady rate, not with a full burst.
-- test/contract/gcra.test.ts runs this against the TypeScript rule on the same inputs.
local function gcraTake(tat, pu, now, perSecond, burst)
  if not perSecond or perSecond <= 0 then return false, 1000 end
  local interval = 1000 / perSecond
  local size = math.max(1, math.floor(burst))
  if pu > 0 then tat = math.max(tat, pu + (size - 1) * interval) end
  local nxt = math.max(tat, now) + interval
  local admitAt = nxt - size * interval
  if admitAt > now then return false, math.max(1, math.ceil(admitAt - now)) end
  return true, nxt
end
