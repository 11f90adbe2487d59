-- final_check: one kept final record and its purge time, checked and (when asked) repaired
-- atomically (hopper check).
-- KEYS: 1 final hash, 2 finished zset, 3 due:finished
-- ARGV: 1 queue name, 2 jid, 3 '1' to repair, 4 now (unix seconds)
-- Returns the problems: {'final without purge time', ''} (it is purged at the next pass) or
-- {'purge time without final', ''} (the entry is dropped).
local queue, jid, fix = ARGV[1], ARGV[2], ARGV[3] == '1'
local kept = redis.call('HEXISTS', KEYS[1], jid) == 1
local purge = redis.call('ZSCORE', KEYS[2], jid)
if kept and not purge then
  if fix then
    redis.call('ZADD', KEYS[2], ARGV[4], jid)
    redis.call('ZADD', KEYS[3], 'LT', ARGV[4], queue)
  end
  return {{'final without purge time', ''}}
elseif purge and not kept then
  if fix then redis.call('ZREM', KEYS[2], jid) end
  return {{'purge time without final', ''}}
end
return {}
