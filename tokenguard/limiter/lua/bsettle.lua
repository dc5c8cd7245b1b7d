-- Commit or cancel a charge of the bucket model (see Buckets.settle). ARGV as settle.lua:
-- ARGV[8]: rid, ARGV[9]: estimate, ARGV[10]: actual (-1: cancel), ARGV[11]: unused,
-- ARGV[12..20]: server view, ARGV[21]: refunds, ARGV[22]: the charge's settled mark.
-- Returns {now, the charge's settled mark now (see Buckets.settle), TPM and RPD capacities,
-- refunds state, evidence, server used, ours} (see b_caps and refunds_reply).
local rid, est, actual = ARGV[8], tonumber(ARGV[9]), tonumber(ARGV[10])
local refunds, mark = tonumber(ARGV[21]), tonumber(ARGV[22])
local now = now_s()
expire(now)
-- While learning, the headers of a served answer may prove refunds (see Buckets.answer).
local c = b_open(rid)
-- Given back to the level by others since its admission (see Buckets._check_refunds).
local given = c and (BST.released - c[6]) or nil
local taught
if c and actual >= 0 and refunds == -1 and policy(refunds) == -1 then
  taught = b_answer(BST, c, est, actual, now, 12)
end
local pol = policy(refunds)
-- With token headers at hand, they say what to free (see Buckets.settle).
if pol == -1 and tonumber(ARGV[12]) >= 0 then pol = 0 end
local others = b_settle(rid, est, actual, pol, mark, refunds)
local _, lesson = b_adopt(now, 12, refunds, others, c and c[2] or nil, given, taught ~= nil)
lesson = taught or lesson
admit_waiting(now, true)
touch()
return refunds_reply({fmt(now), BST.settled - others, b_caps()}, refunds, lesson)
