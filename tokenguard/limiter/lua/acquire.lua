-- One admission decision. ARGV[8]: "start" | "poll", ARGV[9]: ticket, ARGV[10]: tokens,
-- ARGV[11]: "1" to estimate the wait of a new ticket's queue position.
-- Returns {status, now, a, b, c}: 1 admitted (a = day bucket, b/c = admission marks),
-- 2 head waiting (a = earliest time), 0 queued behind others (a = when it would go,
-- if estimated), 3 lost its place.
local mode, ticket, tokens, estimate = ARGV[8], ARGV[9], tonumber(ARGV[10]), ARGV[11] == '1'
local now = now_s()
expire(now)
purge(now)
local function admit()
  local b = add_charge(ticket, tokens, now)
  local adm = incr(S, 'adm', tokens)
  local admr = incr(S, 'admr', 1)
  note_admission(now, adm, admr)
  return {1, fmt(now), b, adm, admr}
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
  result = {3, fmt(now)}
else
  redis.call('ZADD', P .. ':ql', now + LEASE, ticket)
end
if not result then
  local head = redis.call('ZRANGE', P .. ':q', 0, 0)[1]
  if head ~= ticket then
    result = {0, fmt(now)}
    if mode == 'start' and estimate then
      local ids = redis.call('ZRANGE', P .. ':q', 0, -1)
      local costs = {}
      for _, v in ipairs(chunked('HMGET', P .. ':qt', ids)) do costs[#costs + 1] = num(v) end
      result[3] = fmt(simulate(costs, now))
    end
  else
    local at = earliest(tokens, now)
    if at <= now then
      drop_ticket(ticket)
      result = admit()
      wake_head()
    else
      result = {2, fmt(now), fmt(at)}
    end
  end
end
touch()
return result
