-- Commit or cancel a charge. ARGV[8]: rid, ARGV[9]: estimate, ARGV[10]: actual (-1: cancel),
-- ARGV[11]: day bucket, ARGV[12..20]: server view (see observe in lib.lua), ARGV[21]:
-- refunds (1 yes, 0 no, -1 learn; see "Refunds" in _window.py), ARGV[22]: the
-- charge's sure mark (see Charge.sure_tokens).
-- Returns {now, new day bucket, refunds state, evidence, server used, ledger used}
-- (see refunds_reply in lib.lua).
local rid, est, actual, b = ARGV[8], tonumber(ARGV[9]), tonumber(ARGV[10]), tonumber(ARGV[11])
local refunds, sure = tonumber(ARGV[21]), tonumber(ARGV[22])
local now = now_s()
expire(now)
remove_charge(rid, est, b)
local nb = -1
if actual >= 0 then
  local pol = policy(refunds)
  -- With token headers at hand, they say what to free (see Window.settle).
  if pol == -1 and tonumber(ARGV[12]) >= 0 then pol = 0 end
  local full = math.max(actual, est)
  -- Unless the server is known to refund, it may have charged the whole estimate;
  -- while learning, the minute ledger frees the difference and remembers it.
  local minute = pol == 0 and full or actual
  local day = pol == 1 and actual or full
  -- Restamped now: the server charged it no later than its response arrived.
  nb = add_charge(rid, minute, now, day)
  if HAS_MIN and full > actual then
    if pol == 0 then
      redis.call('HSET', P .. ':mdf', rid, full - actual)
    elseif pol == -1 then
      redis.call('HSET', P .. ':mof', rid, full - actual)
      incr(S, 'mof', full - actual)
      incr(S, 'fr', full - actual)
    end
  end
end
local _, lesson = observe(now, 12, refunds)
local rt, mt = tonumber(ARGV[12]), tonumber(ARGV[19])
if policy(refunds) ~= 1 and HAS_MIN and TPM >= 0 and rt >= 0 and mt >= 0 then
  -- Freeing trusts neither the lag nor the admission order: see Window.adopt.
  local unseen = sum('adm') - mt + math.min(sum('mo'), mt - sure)
  local ok = confirm(now, TPM, rt, tonumber(ARGV[14]), tonumber(ARGV[13]), unseen)
  free_deferred(ok)
end
admit_waiting(now, true)
touch()
return refunds_reply({fmt(now), nb}, refunds, lesson)
