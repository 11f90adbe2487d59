-- drain: take up to N waiting jobs off a queue and delete them (QUEUE REMOVE), atomically.
-- KEYS: 1 queue list, 2 jobs hash, 3 paused flag
-- ARGV: 1 N
-- Returns the jids deleted; once the queue is empty its paused flag goes too.
local jids = redis.call('RPOP', KEYS[1], ARGV[1])
if not jids then jids = {} end
for _, jid in ipairs(jids) do redis.call('HDEL', KEYS[2], jid) end
if redis.call('LLEN', KEYS[1]) == 0 then redis.call('DEL', KEYS[3]) end
return jids
