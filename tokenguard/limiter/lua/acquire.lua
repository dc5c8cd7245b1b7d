-- One admission decision. ARGV[8]: "start" | "poll" | "last" (a poll that leaves the
-- queue when it does not admit: the caller's deadline has come), ARGV[9]: ticket, ARGV[10]: tokens,
-- ARGV[11]: "1" to report the soonest a waiting ticket could go (MODEL.soonest).
-- Returns {status, now, a, b, c, d, e}: 1 admitted (now = when, a = day bucket, b/c =
-- admission marks, d = sure mark; it may have been made while the ticket slept, see
-- admit_waiting),
-- 2 head waiting (a = its earliest time), 0 queued behind others (b = when the head
-- may go, for the one right behind it, else -1), 3 lost its place (lease expired);
-- waiting (2 or 0) with ARGV[11]: c, d, e = the soonest, the limit binding it, when
-- that limit is whole again. Every reply ends with the number of processes seen on the
-- key within a window and a lease (see now_s).
local mode, ticket, tokens, estimate = ARGV[8], ARGV[9], tonumber(ARGV[10]), ARGV[11] == '1'
local now = now_s()
expire(now)
purge(now)
-- Serve whoever's time has come, even if that waiter is not here to ask.
local head_at = admit_waiting(now, false)
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
      admit_waiting(now, true)
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
  if head == ticket then admit_waiting(now, true) end
end
touch()
result[#result + 1] = redis.call('ZCOUNT', P .. ':pr', now - W - LEASE, '+inf')
return result
