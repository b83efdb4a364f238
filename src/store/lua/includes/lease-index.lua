-- The index of held leases (for listing) lives at least a day past its newest member, with one PEXPIRE and no PTTL:
-- leases are renewed long before a day passes, and expired members are trimmed on acquire and on listing.
local function indexTtl(index, leaseTtl)
  redis.call('PEXPIRE', index, math.max(leaseTtl + 1000, 86400000))
end
