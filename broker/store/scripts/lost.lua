-- lost: forget a worker that was silent since `cutoff` once every job it held was dealt with.
-- KEYS: 1 holding zset, 2 the worker's held set
-- ARGV: 1 wid, 2 cutoff (unix seconds), then `queue:jid` entries to drop from the held set
-- Returns 1 when the worker is forgotten; 0 when it was heard from since, or still has entries.
if #ARGV > 2 then redis.call('SREM', KEYS[2], unpack(ARGV, 3)) end
local heard = redis.call('ZSCORE', KEYS[1], ARGV[1])
if heard and tonumber(heard) > tonumber(ARGV[2]) then return 0 end
if redis.call('SCARD', KEYS[2]) > 0 then return 0 end
redis.call('ZREM', KEYS[1], ARGV[1])
return 1
