-- A waiter gives up its place (timeout, cancellation, error). ARGV[8]: ticket.
local ticket = ARGV[8]
local head = redis.call('ZRANGE', P .. ':q', 0, 0)[1]
drop_ticket(ticket)
if head == ticket then wake_head() end
return 1
