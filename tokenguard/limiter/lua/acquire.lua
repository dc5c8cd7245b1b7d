-- One admission decision. ARGV[8]: "start" | "poll" | "last" (a poll that leaves the
-- queue when it does not admit: the caller's deadline has come), then per ticket
-- ARGV[9..11]: ticket, tokens, "1" to report the soonest a waiting ticket could go
-- (MODEL.soonest). "last" takes any number of tickets (a triple each: the waiters of
-- one process whose deadlines came together, see RedisBackend._last), decides them in
-- queue order, as many "last" calls in a row would, and returns one reply per ticket in
-- the order given.
-- A reply is {status, now, a, b, c, d, e}: 1 admitted (now = when, a = day bucket, b/c =
-- admission marks, d = sure mark; it may have been made while the ticket slept, see
-- admit_waiting),
-- 2 head waiting (a = its earliest time), 0 queued behind others (b = when the head
-- may go, for the one right behind it, else -1), 3 lost its place (lease expired);
-- waiting (2 or 0) with ARGV[11]: c, d, e = the soonest, the limit binding it, when
-- that limit is whole again. Every reply ends with the number of processes seen on the
-- key within a window and a lease (see now_s).
local mode = ARGV[8]
local now = now_s()
expire(now)
purge(now)
-- Serve whoever's time has come, even if that waiter is not here to ask.
local head_at = admit_waiting(now, false)
local function decide(ticket, tokens, estimate)
  local function admit()
    local b, adm, admr, sure = charge(ticket, tokens, now)
    return {1, fmt(now), b, adm, admr, sure}
  end
  local result
  if mode == 'start' then
    if redis.call('ZCARD', P .. ':q') == 0 and earliest(tokens, now) <= now then
      result = admit()
    else
      local seq = incr(S, 'seq', 1)
      redis.call('ZADD', P .. ':q', seq, ticket)
      redis.call('ZADD', P .. ':ql', now + LEASE, ticket)
      redis.call('HSET', P .. ':qt', ticket, tokens)
    end
  elseif not redis.call('ZSCORE', P .. ':q', ticket) then
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
    local rank = redis.call('ZRANK', P .. ':q', ticket)
    if rank == 0 then
      local at = earliest(tokens, now)
      if at <= now then
        drop_ticket(ticket)
        result = admit()
        head_at = admit_waiting(now, true)
      else
        result = {2, fmt(now), fmt(at), '-1'}
      end
    else
      result = {0, fmt(now), '-1', '-1'}
      if rank == 1 and head_at then result[4] = fmt(head_at) end
    end
    if estimate then
      local at, name, resets = MODEL.soonest(tokens, now)
      result[5], result[6], result[7] = fmt(at), name, fmt(resets)
    end
  end
  if mode == 'last' and result[1] ~= 1 and result[1] ~= 3 then
    local head = redis.call('ZRANGE', P .. ':q', 0, 0)[1]
    drop_ticket(ticket)
    if head == ticket then head_at = admit_waiting(now, true) end
  end
  return result
end
local replies = {}
if mode == 'last' and #ARGV > 13 then
  -- Queue order: a ticket decided (and gone) may let the ones behind it in.
  local order = {}
  for i = 9, #ARGV - 1, 3 do
    local rank = redis.call('ZRANK', P .. ':q', ARGV[i])
    order[#order + 1] = {rank and rank or -1, i}
  end
  table.sort(order, function(x, y) return x[1] < y[1] end)
  for _, o in ipairs(order) do
    local i = o[2]
    replies[(i - 6) / 3] = decide(ARGV[i], tonumber(ARGV[i + 1]), ARGV[i + 2] == '1')
  end
else
  replies[1] = decide(ARGV[9], tonumber(ARGV[10]), ARGV[11] == '1')
end
touch()
local peers = redis.call('ZCOUNT', P .. ':pr', now - W - LEASE, '+inf')
for _, r in ipairs(replies) do r[#r + 1] = peers end
if mode == 'last' then return replies end
return replies[1]
