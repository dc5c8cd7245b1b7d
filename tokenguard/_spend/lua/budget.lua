-- One budget shared by every process on this Redis: hold, settle, release, read.
-- Each call is one decision, atomic, on Redis TIME. Money is whole pico-dollars kept as
-- decimal strings and added with HINCRBY (exact in 64 bits): a Lua number would print a
-- large amount in exponent form. Comparisons read them as doubles (exact to the
-- pico-dollar below 9,007 USD, to a nano-dollar below 9 million).
--
-- KEYS[1]  the budget's prefix, "{tokenguard:budget:<key>}"
-- ARGV     op, now ("" = Redis TIME), per ("day" | "month" | seconds), lease (s),
--          cap tokens, cap requests, cap pico (-1: none), hold id, tokens, pico
local base = KEYS[1]
local op, per, lease = ARGV[1], ARGV[3], tonumber(ARGV[4])
local K_CONF, K_HOLDS, K_HOLD = base .. ':conf', base .. ':holds', base .. ':hold'
local K_RES, K_LATE, K_LATEZ = base .. ':res', base .. ':late', base .. ':latez'
local K_LOG, K_LOGV = base .. ':log', base .. ':logv'
local DAY = 86400

local now
if ARGV[2] ~= '' then
  now = tonumber(ARGV[2])
else
  local t = redis.call('TIME')
  now = tonumber(t[1]) + tonumber(t[2]) / 1e6
end

local function neg(s)
  if string.sub(s, 1, 1) == '-' then return string.sub(s, 2) end
  if s == '0' then return s end
  return '-' .. s
end

-- Calendar months in UTC (days <-> civil date, proleptic Gregorian).
local function civil(z)
  z = z + 719468
  local era = math.floor(z / 146097)
  local doe = z - era * 146097
  local yoe = math.floor((doe - math.floor(doe / 1460) + math.floor(doe / 36524)
    - math.floor(doe / 146096)) / 365)
  local doy = doe - (365 * yoe + math.floor(yoe / 4) - math.floor(yoe / 100))
  local mp = math.floor((5 * doy + 2) / 153)
  local m = mp < 10 and mp + 3 or mp - 9
  local y = yoe + era * 400
  if m <= 2 then y = y + 1 end
  return y, m
end

local function days_from_civil(y, m)
  if m <= 2 then y = y - 1 end
  local era = math.floor(y / 400)
  local yoe = y - era * 400
  local mp = m > 2 and m - 3 or m + 9
  local doy = math.floor((153 * mp + 2) / 5)
  return era * 146097 + yoe * 365 + math.floor(yoe / 4) - math.floor(yoe / 100) + doy - 719468
end

-- The usage key of the period `now` is in, and when that period ends (nil: rolling).
local function period(p)
  if p == 'day' then
    local d = math.floor(now / DAY)
    return base .. ':u:d' .. d, (d + 1) * DAY
  elseif p == 'month' then
    local y, m = civil(math.floor(now / DAY))
    local ny, nm = y, m + 1
    if nm > 12 then ny, nm = y + 1, 1 end
    return base .. string.format(':u:m%04d%02d', y, m), days_from_civil(ny, nm) * DAY
  end
  return base .. ':u:roll', nil
end

local function split(v)
  local a, b = string.match(v, '^(%-?%d+) (%-?%d+)$')
  return a, b
end

local ukey, ends = period(per)
local window = tonumber(per)

-- Add to the usage of now's period (a rolling window also logs it, to age it out).
local seq = 0
local function charge(tokens, requests, pico, entry)
  redis.call('HINCRBY', ukey, 'tokens', tokens)
  redis.call('HINCRBY', ukey, 'requests', requests)
  redis.call('HINCRBY', ukey, 'pico', pico)
  if ends then
    redis.call('EXPIREAT', ukey, math.ceil(ends) + DAY)
  else
    seq = seq + 1
    local id = entry .. ':' .. seq .. ':' .. now
    redis.call('ZADD', K_LOG, now, id)
    redis.call('HSET', K_LOGV, id, tokens .. ' ' .. requests .. ' ' .. pico)
    for _, k in ipairs({ukey, K_LOG, K_LOGV}) do
      redis.call('EXPIRE', k, math.ceil(window) + DAY)
    end
  end
end

local function reserved(sign, v)
  local tokens, pico = split(v)
  if sign < 0 then tokens, pico = neg(tokens), neg(pico) end
  redis.call('HINCRBY', K_RES, 'tokens', tokens)
  redis.call('HINCRBY', K_RES, 'requests', sign)
  redis.call('HINCRBY', K_RES, 'pico', pico)
end

-- Age out what no longer counts: a rolling window's old usage; holds past their lease
-- (their process died or hung: charged their estimate, and a settle that still comes
-- corrects it for a day); the records of those corrections after that day.
local function purge()
  if not ends and window then
    local old = redis.call('ZRANGEBYSCORE', K_LOG, '-inf', now - window)
    for _, id in ipairs(old) do
      local v = redis.call('HGET', K_LOGV, id)
      if v then
        local t, r, p = string.match(v, '^(%-?%d+) (%-?%d+) (%-?%d+)$')
        redis.call('HINCRBY', ukey, 'tokens', neg(t))
        redis.call('HINCRBY', ukey, 'requests', neg(r))
        redis.call('HINCRBY', ukey, 'pico', neg(p))
        redis.call('HDEL', K_LOGV, id)
      end
      redis.call('ZREM', K_LOG, id)
    end
  end
  local expired = redis.call('ZRANGEBYSCORE', K_HOLDS, '-inf', now)
  for _, id in ipairs(expired) do
    local v = redis.call('HGET', K_HOLD, id)
    if v then
      reserved(-1, v)
      local tokens, pico = split(v)
      charge(tokens, 1, pico, 'x' .. id)
      redis.call('HSET', K_LATE, id, v)
      redis.call('ZADD', K_LATEZ, now + DAY, id)
      redis.call('HDEL', K_HOLD, id)
    end
    redis.call('ZREM', K_HOLDS, id)
  end
  local gone = redis.call('ZRANGEBYSCORE', K_LATEZ, '-inf', now)
  for _, id in ipairs(gone) do
    redis.call('HDEL', K_LATE, id)
    redis.call('ZREM', K_LATEZ, id)
  end
end

local function num(x)
  return tonumber(x) or 0
end

local function totals(key)
  local v = redis.call('HMGET', key, 'tokens', 'requests', 'pico')
  return num(v[1]), num(v[2]), num(v[3]), v[3] or '0'
end

-- The state lives as long as the period's usage may still be read (a month), and at
-- least as long as a hold's lease and the day its late settle is awaited.
local function keep_state()
  local ttl = math.ceil(lease) + 2 * DAY
  if ends then
    ttl = math.max(ttl, math.ceil(ends - now) + DAY)
  elseif window then
    ttl = math.max(ttl, math.ceil(window) + DAY)
  end
  for _, k in ipairs({K_CONF, K_HOLDS, K_HOLD, K_RES, K_LATE, K_LATEZ}) do
    if redis.call('EXISTS', k) == 1 then redis.call('EXPIRE', k, ttl) end
  end
end

if op == 'read' then
  local conf = redis.call('HMGET', K_CONF, 'per', 'tokens', 'requests', 'pico', 'lease')
  if not conf[1] then return {0} end
  per, lease = conf[1], tonumber(conf[5])
  ukey, ends = period(per)
  window = tonumber(per)
  purge()
  local ut, ur, _, up = totals(ukey)
  local rt, rr, _, rp = totals(K_RES)
  local resets = -1
  if ends then
    resets = ends - now
  else
    local first = redis.call('ZRANGE', K_LOG, 0, 0, 'WITHSCORES')
    if first[2] then resets = tonumber(first[2]) + window - now end
  end
  return {1, per, conf[2], conf[3], conf[4], tostring(ut), tostring(ur), up,
    tostring(rt), tostring(rr), rp, tostring(resets)}
end

purge()
local id, tokens, pico = ARGV[8], ARGV[9], ARGV[10]

if op == 'hold' then
  redis.call('HSET', K_CONF, 'per', per, 'tokens', ARGV[5], 'requests', ARGV[6],
    'pico', ARGV[7], 'lease', ARGV[4])
  local ut, ur, upico = totals(ukey)
  local rt, rr, rpico = totals(K_RES)
  local cap_t, cap_r, cap_p = tonumber(ARGV[5]), tonumber(ARGV[6]), tonumber(ARGV[7])
  local result
  if cap_r >= 0 and ur + rr + 1 > cap_r then
    result = {0, 'requests', '1', tostring(math.max(cap_r - ur - rr, 0))}
  elseif cap_t >= 0 and ut + rt + tonumber(tokens) > cap_t then
    result = {0, 'tokens', tokens, tostring(math.max(cap_t - ut - rt, 0))}
  elseif cap_p >= 0 and upico + rpico + tonumber(pico) > cap_p then
    -- Left as a decimal string: a large amount must not print in exponent form.
    local left = string.format('%.0f', math.max(cap_p - upico - rpico, 0))
    result = {0, 'usd', pico, left}
  else
    local v = tokens .. ' ' .. pico
    redis.call('HSET', K_HOLD, id, v)
    redis.call('ZADD', K_HOLDS, now + lease, id)
    reserved(1, v)
    result = {1}
  end
  keep_state()
  return result
end

local v = redis.call('HGET', K_HOLD, id)
local late = redis.call('HGET', K_LATE, id)
if v then
  reserved(-1, v)
  redis.call('HDEL', K_HOLD, id)
  redis.call('ZREM', K_HOLDS, id)
elseif late then
  redis.call('HDEL', K_LATE, id)
  redis.call('ZREM', K_LATEZ, id)
end
local status = v and 1 or (late and 2 or 0)
if op == 'settle' then
  if v then
    charge(tokens, 1, pico, id)
  elseif late then
    -- Its lease ran out and its estimate was charged: charge the difference.
    local et, ep = split(late)
    charge(tokens, 0, pico, id)
    charge(neg(et), 0, neg(ep), id .. 'c')
  end
elseif op == 'release' and late then
  -- Charged its estimate when its lease ran out, and it never reached the server.
  local et, ep = split(late)
  charge(neg(et), -1, neg(ep), id .. 'r')
end
keep_state()
return {status}
