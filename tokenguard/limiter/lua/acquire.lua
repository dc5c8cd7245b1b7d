-- One admission decision. ARGV[8]: "start" | "poll" | "last" (a poll that leaves the
-- queue when it does not admit: the caller's deadline has come), ARGV[9]: the batch
-- share, ARGV[10]: backfill seconds (see q_pass; 0: off), ARGV[11]: the interactive
-- reserve in tokens (see q_need; 0: none), then per ticket ARGV[12..15]:
-- ticket, tokens, "1" to report the soonest a waiting ticket could go (MODEL.soonest),
-- "1" for a batch ticket (see q_head). "last" takes any number of tickets (four values
-- each: the waiters of one process whose deadlines came together, see
-- RedisBackend._last), decides them in queue order, as many "last" calls in a row would,
-- and returns one reply per ticket in the order given.
-- A reply is {status, now, a, b, c, d, e}: 1 admitted (now = when, a = day bucket, b/c =
-- admission marks, d = sure mark; it may have been made while the ticket slept, see
-- admit_waiting),
-- 2 head waiting (a = its earliest time), 0 queued behind others (b = when the head
-- may go, for the one right behind it, else -1), 3 lost its place (lease expired);
-- waiting (2 or 0) with the soonest flag: c, d, e = the soonest, the limit binding it,
-- when that limit is whole again. Every reply ends with the number of processes seen on
-- the key within a window and a lease (see now_s).
local mode, backfill = ARGV[8], tonumber(ARGV[10])
redis.call('HSET', S, 'bsh', ARGV[9], 'rsv', ARGV[11])
local now = now_s()
expire(now)
purge(now)
-- Serve whoever's time has come, even if that waiter is not here to ask.
local head_at = admit_waiting(now, false)

-- A waiter that is not the head: it passes the head (backfill) or keeps its place.
local function behind(ticket, tokens, line, head, admit)
  local pass = q_pass(ticket, tokens, now, head, backfill)
  if pass and pass <= now then
    drop_ticket(ticket)
    return admit()
  end
  local result = {0, fmt(now), '-1', '-1'}
  -- Next after the head (second in its line, or first in the other line).
  local rank = redis.call('ZRANK', line, ticket)
  if head_at and rank == (q_first(line) == head and 1 or 0) then result[4] = fmt(head_at) end
  -- One that may pass the head looks again when it fits, if sooner.
  local hint = tonumber(result[4])
  if pass and pass < math.huge and (hint < 0 or pass < hint) then result[4] = fmt(pass) end
  return result
end

local function decide(ticket, tokens, estimate, line)
  local need = q_need(tokens, line == P .. ':qb', now)
  local function admit()
    local b, adm, admr, sure = charge(ticket, tokens, now)
    return {1, fmt(now), b, adm, admr, sure}
  end
  local result
  if mode == 'start' then
    if q_size() == 0 and earliest(need, now) <= now then
      result = admit()
    else
      local seq = incr(S, 'seq', 1)
      redis.call('ZADD', line, seq, ticket)
      redis.call('ZADD', P .. ':ql', now + LEASE, ticket)
      redis.call('HSET', P .. ':qt', ticket, tokens)
    end
  elseif not redis.call('ZSCORE', line, ticket) then
    local r = take_result(ticket)
    if r then
      result = {1, r[1], tonumber(r[2]), tonumber(r[3]), tonumber(r[4]), tonumber(r[6])}
    else
      result = {3, fmt(now)}
    end
  else
    redis.call('ZADD', P .. ':ql', now + LEASE, ticket)
  end
  if not result then
    local head = q_head()
    if head == ticket then
      local at = earliest(need, now)
      if at <= now then
        q_served(ticket, tokens)
        drop_ticket(ticket)
        result = admit()
        head_at = admit_waiting(now, true)
      else
        result = {2, fmt(now), fmt(at), '-1'}
      end
    else
      result = behind(ticket, tokens, line, head, admit)
    end
    -- Only a waiter's reply carries its soonest (a ticket that became head on arrival,
    -- passing batch waiters, may be admitted here).
    if estimate and result[1] ~= 1 then
      local at, name, resets = MODEL.soonest(tokens, now)
      result[5], result[6], result[7] = fmt(at), name, fmt(resets)
    end
  end
  if mode == 'last' and result[1] ~= 1 and result[1] ~= 3 then
    local head = q_head()
    drop_ticket(ticket)
    if head == ticket then head_at = admit_waiting(now, true) end
  end
  return result
end

local function line_of(i)
  return P .. (ARGV[i + 3] == '1' and ':qb' or ':q')
end
local function decide_at(i)
  return decide(ARGV[i], tonumber(ARGV[i + 1]), ARGV[i + 2] == '1', line_of(i))
end
local replies = {}
if mode == 'last' and #ARGV > 16 then
  -- Queue order: a ticket decided (and gone) may let the ones behind it in. Interactive
  -- tickets first, then batch ones, each line in its own order.
  local order = {}
  for i = 12, #ARGV - 1, 4 do
    local rank = redis.call('ZRANK', line_of(i), ARGV[i])
    local class = ARGV[i + 3] == '1' and 1 or 0
    order[#order + 1] = {class, rank and rank or -1, i}
  end
  table.sort(order, function(x, y)
    if x[1] ~= y[1] then return x[1] < y[1] end
    return x[2] < y[2]
  end)
  for _, o in ipairs(order) do
    replies[(o[3] - 8) / 4] = decide_at(o[3])
  end
else
  replies[1] = decide_at(12)
end
touch()
local peers = redis.call('ZCOUNT', P .. ':pr', now - W - LEASE, '+inf')
for _, r in ipairs(replies) do r[#r + 1] = peers end
if mode == 'last' then return replies end
return replies[1]
