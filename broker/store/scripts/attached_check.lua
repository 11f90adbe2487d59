-- attached_check: an entry kept beside a job in a per-jid hash (a finished job's note in final,
-- a reservation's holder in holders), checked and (when asked) repaired atomically (hopper
-- check).
-- KEYS: 1 the hash, 2 the sorted set its jobs must be in (finished, working)
-- ARGV: 1 jid, 2 '1' to repair, 3 the problem's name
-- Returns {{ARGV[3], ''}} for an entry whose job the set does not hold (the entry is dropped),
-- or nothing.
if redis.call('HEXISTS', KEYS[1], ARGV[1]) == 1 and not redis.call('ZSCORE', KEYS[2], ARGV[1]) then
  if ARGV[2] == '1' then redis.call('HDEL', KEYS[1], ARGV[1]) end
  return {{ARGV[3], ''}}
end
return {}
