-- repoint: make the jid index name the queue that holds a job, when the queue it names holds
-- none (hopper check --repair), atomically.
-- KEYS: 1 jid index, 2 jobs hash of the queue the index names, 3 jobs hash of the holder
-- ARGV: 1 jid, 2 the queue the index names, 3 the holder
-- Returns 1 when repointed, 0 when the state was not that one (nothing changes).
local jid = ARGV[1]
if redis.call('HGET', KEYS[1], jid) ~= ARGV[2] then return 0 end
if redis.call('HEXISTS', KEYS[2], jid) == 1 or redis.call('HEXISTS', KEYS[3], jid) == 0 then
  return 0
end
redis.call('HSET', KEYS[1], jid, ARGV[3])
return 1
