-- Adopt a limit a refusal's body named, in the bucket model (see _named.py): ARGV[8] the
-- bucket (1 TPM, 2 RPM, 3 TPD, 4 RPD), ARGV[9] its limit, ARGV[10] what the body says is
-- used (-1: not said). The capacity is kept on the key (bc<k>), so a limit the callers'
-- arguments lack is counted by every process from its next call; the level is only
-- lowered, to the room left plus what is in flight (charged again when it settles).
-- Returns {now, capacities} (see b_caps).
local k, limit, used = tonumber(ARGV[8]), tonumber(ARGV[9]), tonumber(ARGV[10])
local now = now_s()
expire(now)
local st = b_state(now)
local lv
for _, x in ipairs(st.levels) do
  if x.k == k then lv = x end
end
local changed = false
if not lv then
  lv = {k = k, cap = limit, rate = limit / B_PERIOD[k], level = limit, at = now,
    tokens = B_TOKENS[k]}
  st.levels[#st.levels + 1] = lv
  if k == 1 then st.tpm = lv elseif k == 4 then st.rpd = lv end
  redis.call('HSET', S, 'bc' .. k, fmt(limit))
  changed = true
elseif b_limit_to(st, lv, limit) then
  changed = true
end
if used >= 0 then
  local seen = 0
  for _, c in ipairs(BOPEN) do
    if LAG <= 0 or c[2] <= now - LAG then seen = seen + b_cost(lv, c[3]) end
  end
  local target = limit - used + seen
  if lv.level > target then
    lv.level = target
    changed = true
  end
end
b_save()
if changed then wake_head() end
touch()
return {fmt(now), b_caps()}
