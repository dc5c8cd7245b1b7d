-- Adopt the server's view from headers given on their own, in the bucket model (see
-- Buckets.adopt). ARGV[8..16]: see observe in lib.lua; ARGV[17]: refunds.
-- Returns {now, TPM and RPD capacities, refunds state, evidence, server used, ours} (see
-- b_caps and refunds_reply).
-- ARGV[18]: the settled mark of the reservation whose response carried the headers
-- (-1: headers taken as current); settles since its admission are not trusted.
local refunds, sure = tonumber(ARGV[17]), tonumber(ARGV[18] or -1)
local now = now_s()
expire(now)
local others = -1
if sure >= 0 then others = b_state(now).settled - sure end
local changed, lesson = b_adopt(now, 8, refunds, others, nil, nil, false)
if changed then wake_head() end
touch()
return refunds_reply({fmt(now), b_caps()}, refunds, lesson)
