-- Commit or cancel a charge. ARGV[8]: rid, ARGV[9]: estimate, ARGV[10]: actual (-1: cancel),
-- ARGV[11]: day bucket, ARGV[12..20]: server view (see observe in lib.lua).
local rid, est, actual, b = ARGV[8], tonumber(ARGV[9]), tonumber(ARGV[10]), tonumber(ARGV[11])
local now = now_s()
expire(now)
remove_charge(rid, est, b)
local nb = -1
if actual >= 0 then
  -- Restamped now: the server charged it no later than its response arrived.
  nb = add_charge(rid, actual, now)
end
observe(now, 12)
admit_waiting(now, true)
touch()
return {fmt(now), nb}
