-- Commit or cancel a charge. ARGV[8]: rid, ARGV[9]: estimate, ARGV[10]: actual (-1: cancel),
-- ARGV[11]: day bucket, ARGV[12..20]: server view (see observe in lib.lua), ARGV[21]:
-- refunds (1 yes, 0 no, -1 unknown; see "Deferred" in _window.py), ARGV[22]: the
-- charge's sure mark (see Charge.sure_tokens).
local rid, est, actual, b = ARGV[8], tonumber(ARGV[9]), tonumber(ARGV[10]), tonumber(ARGV[11])
local refunds, sure = tonumber(ARGV[21]), tonumber(ARGV[22])
local now = now_s()
expire(now)
remove_charge(rid, est, b)
local nb = -1
if actual >= 0 then
  -- Until the server is known to refund, it may have charged the whole estimate.
  local charged = actual
  if refunds ~= 1 then charged = math.max(actual, est) end
  -- Restamped now: the server charged it no later than its response arrived.
  nb = add_charge(rid, charged, now)
  if refunds == -1 and charged > actual and HAS_MIN then
    redis.call('HSET', P .. ':mdf', rid, charged - actual)
  end
end
observe(now, 12)
local rt, mt = tonumber(ARGV[12]), tonumber(ARGV[19])
if refunds == -1 and HAS_MIN and TPM >= 0 and rt >= 0 and mt >= 0 then
  -- Freeing trusts neither the lag nor the admission order: see Window.adopt.
  local unseen = sum('adm') - mt + math.min(sum('mo'), mt - sure)
  local ok = confirm(now, TPM, rt, tonumber(ARGV[14]), tonumber(ARGV[13]), unseen)
  free_deferred(ok)
end
admit_waiting(now, true)
touch()
return {fmt(now), nb}
