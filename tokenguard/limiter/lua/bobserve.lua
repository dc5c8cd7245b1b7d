-- Adopt the server's view from headers given on their own, in the bucket model (see
-- Buckets.adopt). ARGV[8..16]: see observe in lib.lua; ARGV[17]: refunds.
-- Returns {now, refunds state, evidence, server used, ours} (see refunds_reply).
local refunds = tonumber(ARGV[17])
local now = now_s()
expire(now)
local changed, lesson = b_adopt(now, 8, refunds, -1, nil, nil, false)
if changed then wake_head() end
touch()
return refunds_reply({fmt(now)}, refunds, lesson)
