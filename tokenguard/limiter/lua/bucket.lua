-- tokenguard limiter, bucket model (see _bucket.py): appended after lib.lua, it replaces
-- the window's decisions (expire, earliest, charge, soonest, remove_charge, and the
-- queue's MODEL table), so acquire.lua and leave.lua run unchanged on it.
-- Keys: :s fields bl<k>/ba<k> level and time of bucket k (1 TPM, 2 RPM, 3 TPD, 4 RPD),
--          bc1..bc4 the capacity of TPM/RPM/TPD/RPD when a header or a refusal body gave one,
--          bdf/bfr deferred/freed tokens (TPM), bot/bor tokens/requests in flight,
--          bag aged tokens not settled, bst tokens charged by settles (ever), blk,
--          blb/blt the floor and its time, bll its limit, blg its lag, bls the
--          admissions counted when that limit last rose (see Buckets.answer), and the shared adm/admr/lrn/fr/seq (see lib.lua)
--       :bo zset rid -> admission time (in flight), :bot hash rid -> "tokens|admr" or
--          "tokens|admr|floor" (the floor at its admission, while learning)
--       :bag hash rid -> when it aged (in flight a whole window: charged, not settled)
local B_LIMITS = {TPM, RPM, TPD, RPD}
local B_PERIOD = {W, W, D, D}
local B_TOKENS = {true, false, true, false}
local B_EPS = 1e-9

-- The state, read once per script (BST: sums and buckets; BOPEN: charges in flight,
-- oldest first, as {rid, at, tokens, admr, floor}) and written back after every change.
local BST, BOPEN
local function b_state(now)
  if BST then return BST end
  local f = redis.call('HMGET', S, 'bl1', 'ba1', 'bl2', 'ba2', 'bl3', 'ba3', 'bl4', 'ba4',
    'bdf', 'bfr', 'bot', 'bor', 'bag', 'bst', 'blk', 'bc1', 'bc4', 'blb', 'blt', 'bll', 'bls',
    'blg', 'brl', 'bc2', 'bc3')
  local st = {levels = {}, deferred = num(f[9]), freed = num(f[10]), ot = num(f[11]),
    orq = num(f[12]), ag = num(f[13]), settled = num(f[14]), blk = tonumber(f[15]) or -math.huge,
    floor = num(f[18]), floor_at = tonumber(f[19]) or -math.huge,
    flim = tonumber(f[20]) or TPM, floor_mark = num(f[21]), floor_lag = num(f[22]),
    released = num(f[23])}
  -- A capacity kept on the key (a header's, or a refusal body's: see named.lua) wins,
  -- and counts a limit this caller's arguments do not have.
  local server = {tonumber(f[16]), tonumber(f[24]), tonumber(f[25]), tonumber(f[17])}
  for k = 1, 4 do
    local cap = B_LIMITS[k]
    if server[k] then cap = server[k] end
    if cap >= 0 then
      local level, at = tonumber(f[2 * k - 1]), tonumber(f[2 * k])
      -- A new key starts full; a lost one (see LOST) starts its minute buckets empty:
      -- the server still counts what was admitted before the loss.
      if not level then level, at = (LOST and B_PERIOD[k] == W) and 0 or cap, now end
      local lv = {k = k, cap = cap, rate = cap / B_PERIOD[k], level = level, at = at,
        tokens = B_TOKENS[k]}
      st.levels[#st.levels + 1] = lv
      if k == 1 then st.tpm = lv elseif k == 4 then st.rpd = lv end
    end
  end
  local e = redis.call('ZRANGE', P .. ':bo', 0, -1, 'WITHSCORES')
  local ids = {}
  for i = 1, #e, 2 do ids[#ids + 1] = e[i] end
  local info = #ids > 0 and chunked('HMGET', P .. ':bot', ids) or {}
  BOPEN = {}
  for i = 1, #ids do
    local t, r, fl, rl = string.match(info[i] or '0|0', '([^|]+)|([^|]+)|?([^|]*)|?([^|]*)')
    BOPEN[i] = {ids[i], tonumber(e[2 * i]), tonumber(t), tonumber(r), tonumber(fl) or 0,
      tonumber(rl) or 0}
  end
  BST = st
  return st
end

local function b_save()
  local st = BST
  local args = {'bdf', fmt(st.deferred), 'bfr', fmt(st.freed), 'brl', fmt(st.released),
    'bot', fmt(st.ot),
    'bor', fmt(st.orq), 'bag', fmt(st.ag), 'bst', fmt(st.settled)}
  if st.blk > -math.huge then
    args[#args + 1] = 'blk'
    args[#args + 1] = fmt(st.blk)
  end
  if st.floor_at > -math.huge then
    for _, kv in ipairs({{'blb', st.floor}, {'blt', st.floor_at}, {'bll', st.flim},
        {'blg', st.floor_lag}}) do
      args[#args + 1] = kv[1]
      args[#args + 1] = fmt(kv[2])
    end
  end
  if st.floor_mark > 0 then
    args[#args + 1] = 'bls'
    args[#args + 1] = st.floor_mark
  end
  for _, lv in ipairs(st.levels) do
    args[#args + 1] = 'bl' .. lv.k
    args[#args + 1] = fmt(lv.level)
    args[#args + 1] = 'ba' .. lv.k
    args[#args + 1] = fmt(lv.at)
  end
  redis.call('HSET', S, unpack(args))
end

local function b_cost(lv, tokens)
  if lv.tokens then return tokens end
  return 1
end

-- The floor drained to `now`; empty, it forgets its lag (see Buckets._floor_to).
local function b_floor_to(st, now)
  if now > st.floor_at then
    if st.floor ~= 0 then
      local rate = st.flim / W
      local floor = st.floor - rate * (now - st.floor_at)
      if floor <= 0 then
        floor = 0
        st.floor_lag = 0
      end
      st.floor = floor
    end
    st.floor_at = now
  end
  return st.floor
end

-- Refill to `now`; what the TPM bucket loses at its cap, a lower trajectory gains.
local function b_advance(st, lv, now)
  if now <= lv.at then return end
  local level = lv.level + lv.rate * (now - lv.at)
  lv.at = now
  if level > lv.cap then
    local over = level - lv.cap
    level = lv.cap
    if lv.k == 1 then
      st.deferred = math.max(0, st.deferred - over)
      st.freed = math.max(0, st.freed - over)
    end
  end
  lv.level = level
end

-- Age the charges in flight a whole window (charged then, at their estimate), refill
-- to `now`; returns the charges still in flight. `persist`: move the aged ones in Redis.
local function b_age(st, now, open, persist)
  local keep = {}
  for _, c in ipairs(open) do
    if c[2] + W <= now then
      local at = c[2] + W
      st.ot = st.ot - c[3]
      st.orq = st.orq - 1
      st.ag = st.ag + c[3]
      for _, lv in ipairs(st.levels) do
        b_advance(st, lv, at)
        lv.level = lv.level - b_cost(lv, c[3])
      end
      if persist then
        redis.call('ZREM', P .. ':bo', c[1])
        redis.call('HDEL', P .. ':bot', c[1])
        redis.call('HSET', P .. ':bag', c[1], fmt(at))
      end
    else
      keep[#keep + 1] = c
    end
  end
  for _, lv in ipairs(st.levels) do b_advance(st, lv, now) end
  return keep
end

-- Take the capacity a header gives, above or below the configured one (see
-- _Level.limit_to); true if it changed. Call b_advance first.
local function b_limit_to(st, lv, server_limit)
  local cap, old = server_limit, lv.cap
  if cap == old then return false end
  lv.cap = cap
  lv.rate = cap / B_PERIOD[lv.k]
  if cap > old then
    lv.level = lv.level + cap - old  -- the tokens in use stay in use
  elseif lv.level > cap then
    local over = lv.level - cap
    lv.level = cap
    if lv.k == 1 then
      st.deferred = math.max(0, st.deferred - over)
      st.freed = math.max(0, st.freed - over)
    end
  end
  redis.call('HSET', S, 'bc' .. lv.k, fmt(cap))
  return true
end

-- The capacities for a reply, "tpm|rpm|tpd|rpd" (-1: no such limit): every process on
-- the key follows the limits the server's headers (or a refusal's body) gave any of them.
local function b_caps()
  local caps = {'-1', '-1', '-1', '-1'}
  for _, lv in ipairs(BST.levels) do caps[lv.k] = string.format('%d', lv.cap) end
  return table.concat(caps, '|')
end

-- Give back `amount` charged at `since`, less the refill since (see _Level.credit).
local function b_credit(lv, amount, since)
  local gained = math.max(B_LIMITS[lv.k], lv.cap) / B_PERIOD[lv.k] * math.max(0, lv.at - since)
  if amount > gained then lv.level = math.min(lv.cap, lv.level + amount - gained) end
end

-- Earliest time >= now at which `lv` has the room for `cost` (see Buckets._when).
local function b_when(st, lv, cost, now, open)
  if cost > lv.cap and cost <= B_LIMITS[lv.k] then cost = lv.cap end
  local flight = lv.tokens and st.ot or st.orq
  local level, t = lv.level, now
  if level - flight >= cost - B_EPS then return now end
  for _, c in ipairs(open) do
    local aged = c[2] + W
    if cost + flight <= lv.cap then
      local at = t + (cost + flight - level) / lv.rate
      if at <= aged then return at end
    end
    level = math.min(lv.cap, level + lv.rate * (aged - t))
    t = aged
    local x = b_cost(lv, c[3])
    level = level - x
    flight = flight - x
    if level - flight >= cost - B_EPS then return t end
  end
  if cost + flight <= lv.cap then return t + math.max(0, cost + flight - level) / lv.rate end
  return math.huge
end

local function b_earliest(st, tokens, now, open)
  local at = math.max(now, st.blk)
  for _, lv in ipairs(st.levels) do at = math.max(at, b_when(st, lv, b_cost(lv, tokens), now, open)) end
  return at
end

-- The decisions acquire.lua and leave.lua call, shadowing lib.lua's.
local function expire(now)
  local st = b_state(now)
  BOPEN = b_age(st, now, BOPEN, true)
  b_save()
end

local function earliest(tokens, now)
  return b_earliest(b_state(now), tokens, now, BOPEN)
end

-- Returns what lib.lua's charge does: day bucket (-1: none), admission marks, and the
-- settled mark (tokens charged by settles so far; see Buckets.adopt's `sure`).
local function charge(ticket, tokens, now)
  local st = b_state(now)
  local adm = incr(S, 'adm', tokens)
  local admr = incr(S, 'admr', 1)
  redis.call('ZADD', P .. ':bo', fmt(now), ticket)
  -- While learning, the floor at this admission (see Buckets.admit).
  local fl = 0
  if st.floor ~= 0 then
    fl = b_floor_to(st, now)
    fl = fl - st.flim / W * st.floor_lag
    if fl <= 0 then fl = 0 end
  end
  local info = tokens .. '|' .. admr
  if fl ~= 0 or st.released ~= 0 then
    info = info .. '|' .. fmt(fl) .. '|' .. fmt(st.released)
  end
  redis.call('HSET', P .. ':bot', ticket, info)
  st.ot = st.ot + tokens
  st.orq = st.orq + 1
  BOPEN[#BOPEN + 1] = {ticket, now, tokens, admr, fl, st.released}
  b_save()
  return -1, adm, admr, st.settled
end

-- The soonest `tokens` could go with nobody ahead, every request in flight settled for
-- nothing and, while an answer is still to come (a request in flight, or aged and not
-- settled), deferred tokens freed by its header; the limit that binds it and when that
-- limit is whole again (see Buckets.soonest).
local B_NAMES = {'tpm', 'rpm', 'tpd', 'rpd'}
local function soonest(tokens, now)
  local st = b_state(now)
  local at, name, resets = math.max(now, st.blk), 'retry-after', st.blk
  if at <= now then at, name, resets = now, '', now end
  local pending = st.orq > 0 or st.ag > 0
  for _, lv in ipairs(st.levels) do
    local cost = math.min(b_cost(lv, tokens), lv.cap)
    local level = lv.level
    if lv.k == 1 and pending then level = math.min(lv.cap, level + st.deferred) end
    if level < cost - B_EPS then
      local when = now + (cost - level) / lv.rate
      if when > at then
        local flight = lv.tokens and st.ot or st.orq
        at, name = when, B_NAMES[lv.k]
        resets = now + math.max(0, lv.cap - lv.level + flight) / lv.rate
      end
    end
  end
  return at, name, resets
end

-- Forget rid's open (in-flight) charge, if it has one; true when it had.
local function drop_open(rid)
  if not redis.call('ZSCORE', P .. ':bo', rid) then return false end
  redis.call('ZREM', P .. ':bo', rid)
  redis.call('HDEL', P .. ':bot', rid)
  local keep = {}
  for _, c in ipairs(BOPEN) do if c[1] ~= rid then keep[#keep + 1] = c end end
  BOPEN = keep
  return true
end

-- Take back an admission that never reached the server (a waiter gone before it
-- learned of it).
local function remove_charge(rid, tokens, b)
  local st = b_state(0)
  if drop_open(rid) then
    st.ot = st.ot - tokens
    st.orq = st.orq - 1
  else
    local aged = tonumber(redis.call('HGET', P .. ':bag', rid))
    if aged then
      redis.call('HDEL', P .. ':bag', rid)
      st.ag = st.ag - tokens
      for _, lv in ipairs(st.levels) do b_credit(lv, b_cost(lv, tokens), aged) end
    end
  end
  b_save()
end

-- How much later the turn of a waiter of `behind` tokens comes once `tokens` more are in
-- flight: each bucket's refill of their cost, the longest, if all fits in the capacity;
-- else no bound (see Buckets.delay).
local function delay(tokens, now, behind)
  local st, d = b_state(now), 0
  for _, lv in ipairs(st.levels) do
    local cost, flight = b_cost(lv, tokens), lv.tokens and st.ot or st.orq
    if math.min(b_cost(lv, behind), lv.cap) + flight + cost > lv.cap then return math.huge end
    d = math.max(d, cost / lv.rate)
  end
  return d
end

MODEL.earliest = earliest
MODEL.charge = charge
MODEL.soonest = soonest
MODEL.delay = delay
-- The smallest token bucket's capacity (a header's when one gave it): see q_need.
MODEL.tcap = function(now)
  local c = math.huge
  for _, lv in ipairs(b_state(now).levels) do
    if lv.tokens and lv.cap < c then c = lv.cap end
  end
  return c
end

-- The charge in flight of rid ({rid, at, tokens, admr, floor}), or nil.
local function b_open(rid)
  for _, c in ipairs(BOPEN) do if c[1] == rid then return c end end
  return nil
end

-- While learning, read the headers in ARGV[base..] of a served response to the charge
-- `c` in flight, committed for `actual` (see Buckets.answer): returns the lesson that
-- the server refunds, or nil after raising the floor by this charge.
local function b_answer(st, c, est, actual, now, base)
  local rt, lt, ra = tonumber(ARGV[base]), tonumber(ARGV[base + 2]), tonumber(ARGV[base + 6])
  if not st.tpm or lt <= 0 or rt < 0 or ra >= 0 then return nil end
  if lt > st.flim then
    st.flim = lt
    st.floor, st.floor_at, st.floor_lag = 0, now, 0
    st.floor_mark = sum('admr')
  end
  local rate = st.flim / W
  local since = now - c[2]
  if c[4] > st.floor_mark then
    local kept = c[5] - rate * since
    local used = lt - rt
    if used < kept - math.max(16, 0.02 * lt) then
      redis.call('HSET', S, 'lrn', '1')
      st.floor = 0
      return {'headers', used, math.floor(kept)}
    end
  end
  if actual < est then
    st.floor = b_floor_to(st, now) + est
    st.floor_lag = math.max(st.floor_lag, since)
  end
  return nil
end

-- Settle rid (estimate `est`; `actual` < 0: cancel) under policy `pol` (1, 0, -1; see
-- Buckets.settle), `refunds` the caller's setting. Returns the tokens other settles
-- charged since its admission.
local function b_settle(rid, est, actual, pol, mark, refunds)
  local st = BST
  local others = st.settled - mark
  local tpm = st.tpm
  local full = math.max(est, actual)
  local settled = false
  local was_open = drop_open(rid)
  if was_open then
    st.ot = st.ot - est
    st.orq = st.orq - 1
    if actual >= 0 then
      settled = true
      for _, lv in ipairs(st.levels) do
        if not lv.tokens then
          lv.level = lv.level - 1
        elseif lv.k == 1 then
          local taken = pol ~= 0 and actual or full
          lv.level = lv.level - taken
          st.settled = st.settled + taken
        else
          lv.level = lv.level - (refunds == 1 and actual or full)
        end
      end
    end
  end
  -- Charged at its estimate when it aged: correct that charge now.
  local aged = not was_open and tonumber(redis.call('HGET', P .. ':bag', rid))
  if aged then
    redis.call('HDEL', P .. ':bag', rid)
    st.ag = st.ag - est
    if actual < 0 then
      for _, lv in ipairs(st.levels) do b_credit(lv, b_cost(lv, est), aged) end
    else
      settled = true
      for _, lv in ipairs(st.levels) do
        if lv.tokens then
          if actual > est then
            lv.level = lv.level - (actual - est)
          elseif (lv.k == 1 and pol ~= 0) or (lv.k ~= 1 and refunds == 1) then
            b_credit(lv, est - actual, aged)
          end
        end
      end
    end
  end
  if settled and tpm and full > actual then
    if pol == 0 then
      st.deferred = st.deferred + (full - actual)
    elseif refunds == -1 then
      -- Learning, or learned that the server refunds: charged again by a later lesson.
      st.freed = st.freed + (full - actual)
      st.released = st.released + (full - actual)
      incr(S, 'fr', full - actual)
    end
  end
  b_save()
  return others
end

local function b_defer_frees(st)
  if st.tpm and st.freed > 0 then
    st.tpm.level = st.tpm.level - st.freed
    st.deferred = st.deferred + st.freed
    st.freed = 0
  end
end

-- While learning, or after learning that the server refunds, is this header evidence
-- that it does not? (See Buckets._check_refunds; `since`: the answered charge's
-- admission, nil for a header on its own.) Returns the lesson, or nil.
local function b_check_refunds(st, rt, lt, ra, seen, now, since, given, refunds)
  if not st.tpm or rt < 0 then return nil end
  local ls = lt > 0 and lt or st.tpm.cap
  local server_used = ls - rt
  local ours_used = math.floor(st.tpm.cap - (st.tpm.level - seen) + 0.5)
  local excess = server_used - ours_used
  local least = 2
  if policy(refunds) == 1 then
    if since then
      least = least + st.flim / W * math.max(0, now - since) + given
    else
      least = least + math.max(16, 0.02 * ls)
    end
  end
  local lesson
  if ra >= 0 and sum('fr') > 0 then
    lesson = {'429', server_used, ours_used}
  elseif excess >= least and excess <= st.freed then
    lesson = {'headers', server_used, ours_used}
  end
  if lesson then
    redis.call('HSET', S, 'lrn', '0')
    st.floor = 0
    b_defer_frees(st)
  end
  return lesson
end

-- Adopt the server view in ARGV[base..base+8] (see observe in lib.lua; -1: absent);
-- `others`: tokens charged by settles the header may not include (-1: a header on
-- its own); `since`, `given`: the answered charge's admission, and what was given back
-- to the level from then until its settle, when it was in flight (else nil);
-- `answered`: b_answer just learned from this header. Returns whether anything
-- changed and the lesson learned, or nil.
local function b_adopt(now, base, refunds, others, since, given, answered)
  local st = BST
  local rt, lt = tonumber(ARGV[base]), tonumber(ARGV[base + 2])
  local rr = tonumber(ARGV[base + 3])
  local ra = tonumber(ARGV[base + 6])
  local mr = tonumber(ARGV[base + 8])
  -- In flight and taken as seen (see Buckets._seen): all but those admitted within the
  -- lag, except those admitted before the request answered.
  local seen_t, seen_r = 0, 0
  for _, c in ipairs(BOPEN) do
    if LAG <= 0 or c[2] <= now - LAG or c[4] <= mr then
      seen_t = seen_t + c[3]
      seen_r = seen_r + 1
    end
  end
  local changed, lesson = false, nil
  -- A smaller limit in the headers is the server's bucket (see Buckets.adopt).
  local lr = tonumber(ARGV[base + 5])
  local tpm, rpd = st.tpm, st.rpd
  if tpm and lt > 0 then
    b_advance(st, tpm, now)
    if b_limit_to(st, tpm, lt) then changed = true end
  end
  if rpd and lr > 0 then
    b_advance(st, rpd, now)
    if b_limit_to(st, rpd, lr) then changed = true end
  end
  if refunds == -1 and policy(refunds) ~= 0 then
    if not answered then
      lesson = b_check_refunds(st, rt, lt, ra, seen_t, now, since, given, refunds)
    end
    if lesson or answered then changed = true end
    if policy(refunds) == -1 and rt >= 0 then b_defer_frees(st) end
  end
  if ra >= 0 and now + ra > st.blk then
    st.blk = now + ra
    changed = true
  end
  if tpm and rt >= 0 then
    b_advance(st, tpm, now)
    if tpm.level > rt + seen_t then
      tpm.level = rt + seen_t
      changed = true
    end
    if st.deferred > 0 and refunds ~= 1 then
      -- Trust nothing in flight, nothing aged, nothing settled since its admission.
      local unseen = st.ag + math.max(0, others)
      local free = math.min(rt - unseen - tpm.level, st.deferred)
      if free > 0 then
        tpm.level = tpm.level + free
        st.deferred = st.deferred - free
        st.released = st.released + free
        changed = true
      end
    end
  end
  if rpd and rr >= 0 then
    b_advance(st, rpd, now)
    if rpd.level > rr + seen_r then
      rpd.level = rr + seen_r
      changed = true
    end
  end
  b_save()
  return changed, lesson
end
