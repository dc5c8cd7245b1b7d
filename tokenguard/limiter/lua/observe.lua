-- Adopt the server's view from headers taken as current. ARGV[8..16]: see observe in
-- lib.lua; ARGV[17]: refunds (see settle.lua). Unless refunds are known to be given,
-- the header frees deferred tokens as far as it proves the room, counting as unseen
-- everything in flight and everything the lag covers (see Window.adopt).
-- Returns {now, refunds state, evidence, server used, ledger used} (see refunds_reply).
local refunds = tonumber(ARGV[17])
local now = now_s()
expire(now)
local changed, lesson, lag_unseen = observe(now, 8, refunds)
local rt = tonumber(ARGV[8])
if policy(refunds) ~= 1 and HAS_MIN and TPM >= 0 and rt >= 0 then
  local unseen = sum('mo') + lag_unseen
  if free_deferred(confirm(now, TPM, rt, tonumber(ARGV[10]), tonumber(ARGV[9]), unseen)) > 0 then
    changed = true
  end
end
if changed then wake_head() end
touch()
return refunds_reply({fmt(now)}, refunds, lesson)
