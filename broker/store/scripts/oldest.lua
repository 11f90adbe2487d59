-- oldest: the payload of the job that has waited longest in a queue (QUEUE LATENCY); read-only.
-- KEYS: 1 queue list, 2 jobs hash
-- Returns the payload, or false when the queue is empty.
local jid = redis.call('LINDEX', KEYS[1], -1)
if not jid then return false end
return redis.call('HGET', KEYS[2], jid)
