-- A waiter gives up its place (timeout, cancellation, error). ARGV[8]: ticket.
-- If it was admitted while it slept and never learned of it, the charge is refunded.
local ticket = ARGV[8]
local now = now_s()
expire(now)
local r = take_result(ticket)
if r then
  remove_charge(ticket, tonumber(r[5]), tonumber(r[2]))
  admit_waiting(now, true)
else
  local head = q_head()
  drop_ticket(ticket)
  if head == ticket then admit_waiting(now, true) end
end
touch()
return 1
