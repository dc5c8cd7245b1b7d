-- tokenguard limiter: shared helpers, prepended to every script (see _window.py for the model).
-- KEYS[1] is the key prefix (a hash tag such as "{tokenguard}", so every key lives in one slot).
-- ARGV[1..7]: window, tpm, rpm, tpd, rpd (-1: no such limit), lease seconds, header lag;
-- the last ARGV: the caller's clock and the time source (see now_s).
-- Keys: :m zset minute ledger (rid -> stamp), :mt hash rid -> tokens
--       :d zset day buckets (idx -> bucket end), :dt/:dr hashes idx -> tokens/requests
--       :hm/:hd zsets holds (id -> expiry), :hmt/:hdr hashes id -> tokens/requests
--       :s hash sums and counters, :q zset queue (ticket -> seq), :ql zset leases (ticket -> expiry)
--       :qb zset batch queue (ticket -> seq; see q_head), :s owe (batch's credit), bsh (its share),
--          rsv (the interactive reserve, tokens: see q_need)
--       :qt hash ticket -> tokens, :w:<ticket> list wake-ups
--       :res hash ticket -> admission made on a waiter's behalf, :rest zset ticket -> time
--       :mo hash rid -> tokens of an admission not settled yet (in flight)
--       :mdf hash rid -> deferred tokens of a commit (see "Refunds" in _window.py)
--       :mof hash rid -> tokens of a commit freed while learning refunds (see "Refunds")
--       :s fields about refunds: lrn ("0": learned that the server does not refund;
--          "1": that it does, the bucket model only),
--          fr (tokens freed while learning, ever), mof (sum of :mof)
--       :pc hash process -> "its monotonic clock:our time" at its first call, :pr zset
--          process -> our time of its last call (see now_s); :s tofs, tl: see now_s
--       :am zset recent admissions ("cumulative tokens:requests" -> time), for the header lag
local P = KEYS[1]
local W = tonumber(ARGV[1])
local TPM = tonumber(ARGV[2])
local RPM = tonumber(ARGV[3])
local TPD = tonumber(ARGV[4])
local RPD = tonumber(ARGV[5])
local LEASE = tonumber(ARGV[6])
local LAG = tonumber(ARGV[7])
local D = W * 1440
local HAS_MIN = TPM >= 0 or RPM >= 0
local HAS_DAY = TPD >= 0 or RPD >= 0
local S = P .. ':s'
local HOLD_STEPS = 8

-- Seconds the keys live after their last use (see touch).
local TTL = (HAS_DAY and D or W) + W + LEASE

local function num(x)
  return tonumber(x) or 0
end

-- Every digit of a double: a time rounded to microseconds could end a retry-after
-- block (or stamp a charge) before the time it stands for.
local function fmt(x)
  return string.format('%.17g', x)
end

-- HMGET/ZREM/HDEL in chunks: Lua's unpack has a stack limit.
local function chunked(cmd, key, items)
  local out = {}
  for i = 1, #items, 1000 do
    local part = {}
    for j = i, math.min(i + 999, #items) do part[#part + 1] = items[j] end
    local r = redis.call(cmd, key, unpack(part))
    if type(r) == 'table' then
      for _, v in ipairs(r) do out[#out + 1] = v end
    end
  end
  return out
end

-- True when this key's state is gone although the caller used it recently (a restarted
-- Redis without persistence, a FLUSHALL): the buckets then start empty, not full.
local LOST = false

-- Seconds a script may run after its caller read its monotonic clock (the way there),
-- more than its first call did, beyond which a forward jump of Redis's clock is no longer
-- taken as time passed: what a jump may still refill. A script later than that (a loaded
-- Redis) makes the time lag by the excess once, which only slows the refill.
local CLOCK_SLACK = 0.25

-- The time: Redis TIME, made safe to jump (see "Clocks" in _redis.py). The last ARGV is
-- "fake|process|mono|seen|skew": `fake`, when not empty, is the time to use instead
-- (only the property tests give one, RedisBackend._test_clock, to replay any
-- interleaving on a fake clock); `process` names the calling process and `mono` is its
-- monotonic clock when it sent this call; `seen` is how long ago that process last had
-- a reply on this key (-1: never); `skew` is added to Redis TIME (0 in use; tests make
-- the clock lie with it). The time never goes back (a backward jump is absorbed into the
-- offset :s tofs, so nothing stalls) and never runs ahead of what the calling process's
-- own clock has seen pass since its first call here (its anchor in :pc), so a forward
-- jump refills nothing that was not earned.
local function now_s()
  local fake, proc, mono, seen, skew =
    string.match(ARGV[#ARGV], '^([^|]*)|([^|]*)|([^|]*)|([^|]*)|([^|]*)$')
  if fake ~= '' then return tonumber(fake) end
  mono, seen = tonumber(mono), tonumber(seen)
  local t = redis.call('TIME')
  local raw = tonumber(t[1]) + tonumber(t[2]) / 1000000 + tonumber(skew)
  local f = redis.call('HMGET', S, 'tofs', 'tl')
  local ofs, last = num(f[1]), tonumber(f[2])
  if not last and seen >= 0 and seen < TTL - 1 then LOST = true end
  local now = raw + ofs
  local anchor = redis.call('HGET', P .. ':pc', proc)
  if anchor then
    local m0, e0 = string.match(anchor, '^([^:]+):([^:]+)$')
    local bound = tonumber(e0) + (mono - tonumber(m0)) + CLOCK_SLACK
    if now > bound then now = bound end
  end
  if last and now < last then now = last end
  if now ~= raw + ofs then redis.call('HSET', S, 'tofs', fmt(now - raw)) end
  redis.call('HSET', S, 'tl', fmt(now))
  if not anchor then redis.call('HSET', P .. ':pc', proc, fmt(mono) .. ':' .. fmt(now)) end
  -- The processes seen on this key, by their last call (fail_open shares among them).
  redis.call('ZADD', P .. ':pr', now, proc)
  local gone = redis.call('ZRANGEBYSCORE', P .. ':pr', '-inf', now - TTL)
  if #gone > 0 then
    chunked('HDEL', P .. ':pc', gone)
    chunked('ZREM', P .. ':pr', gone)
  end
  return now
end

local function sum(field)
  return num(redis.call('HGET', S, field))
end

-- HINCRBY that skips zero (Lua writes -0 as "-0", which Redis rejects as an integer).
local function incr(key, field, n)
  if n ~= 0 then return redis.call('HINCRBY', key, field, n) end
  return num(redis.call('HGET', key, field))
end

local function drop_old(zkey, hkeys, fields, upto)
  local old = redis.call('ZRANGEBYSCORE', zkey, '-inf', upto)
  if #old == 0 then return end
  for i, hkey in ipairs(hkeys) do
    local total = 0
    for _, v in ipairs(chunked('HMGET', hkey, old)) do total = total + num(v) end
    if fields[i] then incr(S, fields[i], -total) end
    chunked('HDEL', hkey, old)
  end
  chunked('ZREM', zkey, old)
  return #old
end

local function expire(now)
  if LOST and TPM >= 0 then
    -- A lost window restarts as if the limit had just been spent, freed over one window
    -- in HOLD_STEPS holds (the bucket model starts empty; see b_state).
    for i = 1, HOLD_STEPS do
      local hid = incr(S, 'seq', 1)
      local piece = math.floor(TPM * i / HOLD_STEPS) - math.floor(TPM * (i - 1) / HOLD_STEPS)
      redis.call('ZADD', P .. ':hm', now + W * i / HOLD_STEPS, hid)
      redis.call('HSET', P .. ':hmt', hid, piece)
      incr(S, 'hmt', piece)
    end
    LOST = false
  end
  if HAS_MIN then
    local n = drop_old(P .. ':m', {P .. ':mt', P .. ':mdf', P .. ':mo', P .. ':mof'},
      {'mt', false, 'mo', 'mof'}, now - W)
    if n then incr(S, 'mr', -n) end
    drop_old(P .. ':hm', {P .. ':hmt'}, {'hmt'}, now)
  end
  if HAS_DAY then
    drop_old(P .. ':d', {P .. ':dt', P .. ':dr'}, {'dt', 'dr'}, now - D)
    drop_old(P .. ':hd', {P .. ':hdr'}, {'hdr'}, now)
  end
end

-- Future releases of one ledger, merged with its holds, in time order:
-- a list of {time, tokens, requests}.
local function releases(kind)
  local out = {}
  if kind == 'm' then
    local e = redis.call('ZRANGE', P .. ':m', 0, -1, 'WITHSCORES')
    local ids = {}
    for i = 1, #e, 2 do ids[#ids + 1] = e[i] end
    local costs = #ids > 0 and chunked('HMGET', P .. ':mt', ids) or {}
    for i = 1, #ids do out[#out + 1] = {tonumber(e[2 * i]) + W, num(costs[i]), 1} end
    local h = redis.call('ZRANGE', P .. ':hm', 0, -1, 'WITHSCORES')
    local hids = {}
    for i = 1, #h, 2 do hids[#hids + 1] = h[i] end
    local hc = #hids > 0 and chunked('HMGET', P .. ':hmt', hids) or {}
    for i = 1, #hids do out[#out + 1] = {tonumber(h[2 * i]), num(hc[i]), 0} end
  else
    local e = redis.call('ZRANGE', P .. ':d', 0, -1, 'WITHSCORES')
    local ids = {}
    for i = 1, #e, 2 do ids[#ids + 1] = e[i] end
    local ct = #ids > 0 and chunked('HMGET', P .. ':dt', ids) or {}
    local cr = #ids > 0 and chunked('HMGET', P .. ':dr', ids) or {}
    for i = 1, #ids do out[#out + 1] = {tonumber(e[2 * i]) + D, num(ct[i]), num(cr[i])} end
    local h = redis.call('ZRANGE', P .. ':hd', 0, -1, 'WITHSCORES')
    local hids = {}
    for i = 1, #h, 2 do hids[#hids + 1] = h[i] end
    local hc = #hids > 0 and chunked('HMGET', P .. ':hdr', hids) or {}
    for i = 1, #hids do out[#out + 1] = {tonumber(h[2 * i]), 0, num(hc[i])} end
  end
  table.sort(out, function(a, b) return a[1] < b[1] end)
  return out
end

-- `flight`: open tokens taken as refunded (Window.soonest), else nil.
local function ledger_earliest(kind, now, tokens, tl, rl, flight)
  local used_t, used_r
  if kind == 'm' then
    used_t, used_r = sum('mt') + sum('hmt') - (flight or 0), sum('mr')
  else
    used_t, used_r = sum('dt'), sum('dr') + sum('hdr')
  end
  local need_t = tl >= 0 and (used_t + tokens - tl) or 0
  local need_r = rl >= 0 and (used_r + 1 - rl) or 0
  if need_t <= 0 and need_r <= 0 then return now end
  for _, rel in ipairs(releases(kind)) do
    need_t = need_t - rel[2]
    need_r = need_r - rel[3]
    if need_t <= 0 and need_r <= 0 then return math.max(rel[1], now) end
  end
  return math.huge
end

local function earliest(tokens, now)
  local at = math.max(now, sum('blk'))
  if HAS_MIN then at = math.max(at, ledger_earliest('m', now, tokens, TPM, RPM)) end
  if HAS_DAY then at = math.max(at, ledger_earliest('d', now, tokens, TPD, RPD)) end
  return at
end

-- `day_tokens` (default `tokens`): what the day ledger keeps (see "Refunds" in _window.py).
local function add_charge(rid, tokens, now, day_tokens)
  day_tokens = day_tokens or tokens
  local b = -1
  if HAS_MIN then
    redis.call('ZADD', P .. ':m', now, rid)
    redis.call('HSET', P .. ':mt', rid, tokens)
    incr(S, 'mt', tokens)
    incr(S, 'mr', 1)
  end
  if HAS_DAY then
    b = math.floor(now / W)
    redis.call('ZADD', P .. ':d', (b + 1) * W, b)
    incr(P .. ':dt', b, day_tokens)
    incr(P .. ':dr', b, 1)
    incr(S, 'dt', day_tokens)
    incr(S, 'dr', 1)
  end
  return b
end

-- Take an admitted charge back out (commit or cancel); `b` is its day bucket.
local function remove_charge(rid, tokens, b)
  if HAS_MIN then
    local old = redis.call('HGET', P .. ':mt', rid)
    if old then
      incr(S, 'mt', -tonumber(old))
      incr(S, 'mr', -1)
      redis.call('HDEL', P .. ':mt', rid)
      redis.call('HDEL', P .. ':mdf', rid)
      local freed = redis.call('HGET', P .. ':mof', rid)
      if freed then
        incr(S, 'mof', -tonumber(freed))
        redis.call('HDEL', P .. ':mof', rid)
      end
      local open = redis.call('HGET', P .. ':mo', rid)
      if open then
        incr(S, 'mo', -tonumber(open))
        redis.call('HDEL', P .. ':mo', rid)
      end
      redis.call('ZREM', P .. ':m', rid)
    end
  end
  if HAS_DAY and b >= 0 and redis.call('ZSCORE', P .. ':d', b) then
    incr(P .. ':dt', b, -tokens)
    incr(P .. ':dr', b, -1)
    incr(S, 'dt', -tokens)
    incr(S, 'dr', -1)
  end
end

local function wake(ticket)
  local k = P .. ':w:' .. ticket
  redis.call('LPUSH', k, 1)
  redis.call('LTRIM', k, 0, 0)
  redis.call('PEXPIRE', k, math.ceil(LEASE * 1000))
end

-- The queue is two FIFO lines, interactive (:q) and batch (:qb), numbered by one
-- sequence; the head is the first interactive waiter unless batch is owed its share of
-- the tokens admitted while both waited (see _queue.py, which makes the same choice).
local function q_first(k)
  return redis.call('ZRANGE', k, 0, 0)[1]
end

local function q_head()
  local i, b = q_first(P .. ':q'), q_first(P .. ':qb')
  if not b then return i end
  if not i or sum('owe') >= num(redis.call('HGET', P .. ':qt', b)) then return b end
  return i
end

local function q_size()
  return redis.call('ZCARD', P .. ':q') + redis.call('ZCARD', P .. ':qb')
end

-- A head admitted: while the other line waits too, an interactive admission earns
-- batch bsh / (1 - bsh) of its tokens and a batch one spends its tokens; alone, a batch
-- admission spends down to zero (owed_after in _queue.py).
local function q_served(ticket, tokens)
  local batch = redis.call('ZSCORE', P .. ':qb', ticket)
  local owe, share = sum('owe'), sum('bsh')
  if redis.call('ZCARD', P .. (batch and ':q' or ':qb')) > 0 then
    owe = owe + (batch and -tokens or share / (1 - share) * tokens)
  elseif batch and owe > 0 then
    owe = math.max(owe - tokens, 0)
  else
    return
  end
  redis.call('HSET', S, 'owe', fmt(owe))
end

local function wake_head()
  local h = q_head()
  if h then wake(h) end
end

local function drop_ticket(ticket)
  redis.call('ZREM', P .. ':q', ticket)
  redis.call('ZREM', P .. ':qb', ticket)
  redis.call('ZREM', P .. ':ql', ticket)
  redis.call('HDEL', P .. ':qt', ticket)
  redis.call('DEL', P .. ':w:' .. ticket)
end

-- Admits queued waiters in order while they fit (defined below).
local admit_waiting

-- Waiters whose lease ran out (crashed, or stuck) lose their place.
local function purge(now)
  -- Admissions made for a waiter that never came to fetch them (it crashed): the charge
  -- stays and ages out with the window; only the note goes.
  local stale = redis.call('ZRANGEBYSCORE', P .. ':rest', '-inf', now - LEASE)
  if #stale > 0 then
    chunked('HDEL', P .. ':res', stale)
    chunked('ZREM', P .. ':rest', stale)
  end
  local dead = redis.call('ZRANGEBYSCORE', P .. ':ql', '-inf', now)
  if #dead == 0 then return end
  local head = q_head()
  for _, t in ipairs(dead) do drop_ticket(t) end
  local new = q_head()
  if new and new ~= head then admit_waiting(now, true) end
end

local function touch()
  local ttl = math.ceil(TTL * 1000)
  for _, k in ipairs({':pc', ':pr', ':m', ':mt', ':d', ':dt', ':dr', ':hm', ':hmt', ':hd', ':hdr', ':s', ':q', ':qb', ':ql', ':qt', ':am',
                        ':res', ':rest', ':mdf', ':mo', ':mof', ':bo', ':bot', ':bag'}) do
    redis.call('PEXPIRE', P .. k, ttl)
  end
end

-- Make this ledger never looser than the server's bucket (see Ledger.adopt in _window.py).
local function adopt(kind, now, limit, remaining, server_limit, reset, unseen)
  local period = kind == 'm' and W or D
  local ls = server_limit > 0 and server_limit or limit
  local rate = ls / period
  if reset > 0 and ls > remaining then rate = math.min(rate, (ls - remaining) / reset) end
  local base = remaining - unseen
  if rate <= 0 then return 0 end
  local untl
  if ls >= limit then
    if base >= limit then return 0 end
    untl = now + (limit - base) / rate
  else
    untl = now + period
  end
  local used, idx
  if kind == 'm' then used, idx = sum('mt') + sum('hmt'), 2 else used, idx = sum('dr') + sum('hdr'), 3 end
  local function gap(at, u)
    return (limit - u) - math.min(ls, base + rate * (at - now))
  end
  -- Our usage after each future release before `untl`.
  local times, useds = {now}, {used}
  for _, rel in ipairs(releases(kind)) do
    if rel[1] >= untl then break end
    if rel[1] > now then
      used = used - rel[idx]
      times[#times + 1] = rel[1]
      useds[#useds + 1] = used
    end
  end
  -- A staircase of HOLD_STEPS pieces expiring as the server's bucket refills.
  local points, edges = {}, {}
  for i = 1, #times do points[#points + 1] = {times[i], gap(times[i], useds[i])} end
  local j = 1
  for i = 0, HOLD_STEPS - 1 do
    local e = now + (untl - now) * i / HOLD_STEPS
    edges[#edges + 1] = e
    while j < #times and times[j + 1] <= e do j = j + 1 end
    points[#points + 1] = {e, gap(e, useds[j])}
  end
  table.sort(points, function(x, y) return x[1] < y[1] end)
  local env, best, p = {}, 0, #points
  for i = HOLD_STEPS, 1, -1 do
    while p >= 1 and points[p][1] >= edges[i] do
      best = math.max(best, points[p][2])
      p = p - 1
    end
    env[i] = best > 0 and math.ceil(best - 1e-9) or 0
  end
  env[HOLD_STEPS + 1] = 0
  for i = 1, HOLD_STEPS do
    local piece = env[i] - env[i + 1]
    if piece > 0 then
      local expiry = i < HOLD_STEPS and edges[i + 1] or untl
      local hid = incr(S, 'seq', 1)
      if kind == 'm' then
        redis.call('ZADD', P .. ':hm', expiry, hid)
        redis.call('HSET', P .. ':hmt', hid, piece)
        incr(S, 'hmt', piece)
      else
        redis.call('ZADD', P .. ':hd', expiry, hid)
        redis.call('HSET', P .. ':hdr', hid, piece)
        incr(S, 'hdr', piece)
      end
    end
  end
  return env[1]
end

-- Tokens the server's bucket proves we may free now (see Ledger.confirm in _window.py).
local function confirm(now, limit, remaining, server_limit, reset, unseen)
  local ls = server_limit > 0 and server_limit or limit
  if ls < limit then return 0 end
  local rate = ls / W
  if reset > 0 and ls > remaining then rate = math.min(rate, (ls - remaining) / reset) end
  local base = remaining - unseen
  if rate <= 0 or base <= 0 then return 0 end
  local untl = now + (limit - base) / rate
  local used = sum('mt') + sum('hmt')
  local slack = math.min(ls, base) - (limit - used)
  for _, rel in ipairs(releases('m')) do
    if rel[1] >= untl or slack <= 0 then break end
    used = used - rel[2]
    if rel[1] > now then
      slack = math.min(slack, math.min(ls, base + rate * (rel[1] - now)) - (limit - used))
    end
  end
  return math.max(0, math.floor(slack + 1e-9))
end

-- Free up to `tokens` of deferred minute charges, newest first (see Window.free_deferred).
local function free_deferred(tokens)
  if tokens <= 0 then return 0 end
  local kv = redis.call('HGETALL', P .. ':mdf')
  local items = {}
  for i = 1, #kv, 2 do
    local stamp = redis.call('ZSCORE', P .. ':m', kv[i])
    if stamp then items[#items + 1] = {tonumber(stamp), kv[i], tonumber(kv[i + 1])} end
  end
  table.sort(items, function(x, y) return x[1] > y[1] end)
  local freed = 0
  for _, it in ipairs(items) do
    if freed >= tokens then break end
    local x = math.min(it[3], tokens - freed)
    if x > 0 then
      redis.call('HINCRBY', P .. ':mt', it[2], -x)
      incr(S, 'mt', -x)
      if x == it[3] then
        redis.call('HDEL', P .. ':mdf', it[2])
      else
        redis.call('HINCRBY', P .. ':mdf', it[2], -x)
      end
      freed = freed + x
    end
  end
  return freed
end

-- Remember cumulative admissions by time, for as long as the header lag needs them.
local function note_admission(now, adm, admr)
  if LAG <= 0 then return end
  local k = P .. ':am'
  local cut = '(' .. fmt(now - LAG - W)
  local old = redis.call('ZREVRANGEBYSCORE', k, cut, '-inf', 'LIMIT', 0, 1)[1]
  if old then
    redis.call('HSET', S, 'seen', old)
    redis.call('ZREMRANGEBYSCORE', k, '-inf', cut)
  end
  redis.call('ZADD', k, fmt(now), adm .. ':' .. admr)
end

-- Cumulative admissions a header received now is taken to include (see Window.seen_mark).
local function seen_mark(now)
  if LAG <= 0 then return sum('adm'), sum('admr') end
  local m = redis.call('ZREVRANGEBYSCORE', P .. ':am', fmt(now - LAG), '-inf', 'LIMIT', 0, 1)[1]
  m = m or redis.call('HGET', S, 'seen') or '0:0'
  local a, b = string.match(m, '(%d+):(%d+)')
  return tonumber(a), tonumber(b)
end

-- What a commit for less does (see "Refunds" in _window.py): 1 frees the difference,
-- 0 defers it, -1 frees it while learning. `refunds` is the caller's setting (1, 0, -1);
-- while learning, lrn says what was learned ('0' no refunds; '1' refunds: the bucket
-- model only, see Buckets.answer).
local function policy(refunds)
  if refunds ~= -1 then return refunds end
  local learned = redis.call('HGET', S, 'lrn')
  if learned == '0' then return 0 end
  if learned == '1' then return 1 end
  return -1
end

-- Charge again every free still in the window, as deferred (see Window._defer_frees).
local function defer_frees()
  if sum('mof') <= 0 then return end
  local kv = redis.call('HGETALL', P .. ':mof')
  for i = 1, #kv, 2 do
    local rid, f = kv[i], tonumber(kv[i + 1])
    if f > 0 and redis.call('HEXISTS', P .. ':mt', rid) == 1 then
      redis.call('HINCRBY', P .. ':mt', rid, f)
      incr(S, 'mt', f)
      redis.call('HINCRBY', P .. ':mdf', rid, f)
    end
  end
  redis.call('DEL', P .. ':mof')
  redis.call('HDEL', S, 'mof')
end

-- The server does not refund: charge the frees again and behave as refunds=False (see
-- Window.learn). Returns the lesson for the caller to report.
local function learn(evidence, server_used, ledger_used)
  redis.call('HSET', S, 'lrn', '0')
  defer_frees()
  return {evidence, server_used, ledger_used}
end

-- While learning, is this header evidence that the server does not refund? (See
-- Window._check_refunds.) Returns the lesson, or nil.
local function check_refunds(rt, lt, ra)
  if not HAS_MIN or TPM < 0 or rt < 0 then return nil end
  local ls = lt > 0 and lt or TPM
  local server_used = ls - rt
  local ledger_used = sum('mt') + sum('hmt')
  local excess = server_used - ledger_used
  if ra >= 0 and sum('fr') > 0 then return learn('429', server_used, ledger_used) end
  if excess >= 2 and excess <= sum('mof') then
    return learn('headers', server_used, ledger_used)
  end
  return nil
end

-- Server view in ARGV[base..base+8]: remaining/reset/limit tokens, remaining/reset/limit
-- requests, retry-after, then the admission marks (tokens, requests); -1: absent.
-- `refunds`: the caller's setting (see policy). Returns whether anything changed, the
-- lesson learned about refunds (or nil), and the admissions taken as unseen by the
-- lag alone (tokens).
local function observe(now, base, refunds)
  local changed = false
  local rt, st, lt = tonumber(ARGV[base]), tonumber(ARGV[base + 1]), tonumber(ARGV[base + 2])
  local rr, sr, lr = tonumber(ARGV[base + 3]), tonumber(ARGV[base + 4]), tonumber(ARGV[base + 5])
  local ra = tonumber(ARGV[base + 6])
  local mt, mr = tonumber(ARGV[base + 7]), tonumber(ARGV[base + 8])
  local lesson
  if policy(refunds) == -1 then
    lesson = check_refunds(rt, lt, ra)
    if lesson then changed = true end
    -- Headers at hand: they decide what to free, as for refunds=False.
    if rt >= 0 and policy(refunds) == -1 then defer_frees() end
  end
  local lag_seen_t = seen_mark(now)
  local lag_unseen = sum('adm') - lag_seen_t
  if ra >= 0 and now + ra > sum('blk') then
    redis.call('HSET', S, 'blk', fmt(now + ra))
    changed = true
  end
  local seen_t, seen_r = seen_mark(now)
  if mt >= 0 then seen_t, seen_r = math.max(seen_t, mt), math.max(seen_r, mr) end
  if HAS_MIN and TPM >= 0 and rt >= 0 then
    local unseen = sum('adm') - seen_t
    if adopt('m', now, TPM, rt, lt, st, unseen) > 0 then changed = true end
  end
  if HAS_DAY and RPD >= 0 and rr >= 0 then
    local unseen = sum('admr') - seen_r
    if adopt('d', now, RPD, rr, lr, sr, unseen) > 0 then changed = true end
  end
  return changed, lesson, lag_unseen
end

-- The refunds state and a lesson, as the last fields of a reply: state (1 refunds,
-- 0 does not, -1 learning), then evidence ('' when none), server's and ledger's use.
local function refunds_reply(reply, refunds, lesson)
  reply[#reply + 1] = policy(refunds)
  if lesson then
    reply[#reply + 1] = lesson[1]
    reply[#reply + 1] = lesson[2]
    reply[#reply + 1] = lesson[3]
  else
    reply[#reply + 1] = ''
  end
  return reply
end

-- The soonest `tokens` could go with nobody ahead and the minute's tokens in flight
-- refunded, the limit that binds it and when that limit's window is empty (see
-- Window.soonest).
local function soonest(tokens, now)
  local at, name, resets = math.max(now, sum('blk')), 'retry-after', sum('blk')
  if at <= now then at, name, resets = now, '', now end
  for _, l in ipairs({{HAS_MIN, 'm', TPM, RPM, 'tpm', 'rpm'}, {HAS_DAY, 'd', TPD, RPD, 'tpd', 'rpd'}}) do
    if l[1] then
      for _, one in ipairs({{l[3], -1, l[5]}, {-1, l[4], l[6]}}) do
        if one[1] >= 0 or one[2] >= 0 then
          local flight = (l[2] == 'm' and one[1] >= 0) and sum('mo') or 0
          local when = ledger_earliest(l[2], now, tokens, one[1], one[2], flight)
          if when > at then
            local rel = releases(l[2])
            at, name, resets = when, one[3], rel[#rel] and rel[#rel][1] or now
          end
        end
      end
    end
  end
  return at, name, resets
end

-- Charge one admission (caller or waiter) and return its reply fields: day bucket,
-- admission marks, and the sure mark (see Charge.sure_tokens in _window.py).
local function charge(ticket, tokens, now)
  local sure = sum('adm') - sum('mo') + tokens
  local b = add_charge(ticket, tokens, now)
  if HAS_MIN then
    redis.call('HSET', P .. ':mo', ticket, tokens)
    incr(S, 'mo', tokens)
  end
  local adm = incr(S, 'adm', tokens)
  local admr = incr(S, 'admr', 1)
  note_admission(now, adm, admr)
  return b, adm, admr, sure
end

-- The decisions the queue uses: the window's, unless a model appended after this
-- library (bucket.lua) replaces them.
-- delay: no bound for the window (a charge holds its room for a whole window).
-- The smallest token limit (math.huge: none): what caps the interactive reserve.
local function tcap()
  local c = math.huge
  if TPM >= 0 then c = TPM end
  if TPD >= 0 and TPD < c then c = TPD end
  return c
end

local MODEL = {earliest = earliest, charge = charge, soonest = soonest,
  delay = function() return math.huge end, tcap = tcap}

-- The tokens that must be free to admit `tokens`: a batch request's own plus the
-- interactive reserve (:s rsv), capped at what the smallest token capacity holds beside
-- the request, so a batch request up to the whole capacity still goes (batch_need in
-- _queue.py).
local function q_need(tokens, batch, now)
  local rsv = sum('rsv')
  if not batch or rsv <= 0 then return tokens end
  return tokens + math.max(0, math.floor(math.min(rsv, MODEL.tcap(now) - tokens)))
end

local function q_batch(ticket)
  return redis.call('ZSCORE', P .. ':qb', ticket) ~= false
end

-- Backfill: when `ticket` (not the head) could pass `head`: nil never (off, a batch
-- ticket behind an interactive head, or the head's turn would move past its turn when
-- first passed plus `bound`), else the time it fits (now: at once). The head's first
-- turn is kept in :s bfh/bfa (its FIFO time; see WaitQueue.fifo_time in _queue.py).
local function q_pass(ticket, tokens, now, head, bound)
  if not bound or bound <= 0 or not head then return nil end
  if redis.call('ZSCORE', P .. ':qb', ticket) and not redis.call('ZSCORE', P .. ':qb', head) then
    return nil
  end
  local behind = num(redis.call('HGET', P .. ':qt', head))
  local at = MODEL.earliest(q_need(behind, q_batch(head), now), now)
  if redis.call('HGET', S, 'bfh') ~= head then redis.call('HSET', S, 'bfh', head, 'bfa', fmt(at)) end
  if at + MODEL.delay(tokens, now, behind) > num(redis.call('HGET', S, 'bfa')) + bound then
    return nil
  end
  return MODEL.earliest(q_need(tokens, q_batch(ticket), now), now)
end

-- The queue is served here, in order, in one round trip: each waiter admitted finds
-- its admission noted under :res when it wakes, so a waiter that crashed cannot stall
-- the queue (its charge ages out). Returns the earliest time of the first waiter that
-- does not fit (nil: queue empty); with `notify` (room or head changed) it is woken to
-- recompute its wait.
admit_waiting = function(now, notify)
  local served = false
  while true do
    local h = q_head()
    if not h then return nil end
    local c = num(redis.call('HGET', P .. ':qt', h))
    local at = MODEL.earliest(q_need(c, q_batch(h), now), now)
    if at > now then
      if notify or served then wake(h) end
      return at
    end
    q_served(h, c)
    drop_ticket(h)
    local b, adm, admr, sure = MODEL.charge(h, c, now)
    redis.call('HSET', P .. ':res', h, table.concat({fmt(now), b, adm, admr, c, sure}, '|'))
    redis.call('ZADD', P .. ':rest', now, h)
    wake(h)
    served = true
  end
end

-- An admission made on this ticket's behalf, taken out of :res:
-- {at, bucket, adm, admr, tokens, sure}.
local function take_result(ticket)
  local r = redis.call('HGET', P .. ':res', ticket)
  if not r then return nil end
  redis.call('HDEL', P .. ':res', ticket)
  redis.call('ZREM', P .. ':rest', ticket)
  local out = {}
  for part in string.gmatch(r, '[^|]+') do out[#out + 1] = part end
  return out
end
