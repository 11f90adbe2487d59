-- final_check: a note kept for a finished job, checked and (when asked) repaired atomically
-- (hopper check).
-- KEYS: 1 final hash, 2 finished zset
-- ARGV: 1 jid, 2 '1' to repair
-- Returns {{'note without job', ''}} for a note of a job the finished set does not hold (the
-- note is dropped), or nothing.
if redis.call('HEXISTS', KEYS[1], ARGV[1]) == 1 and not redis.call('ZSCORE', KEYS[2], ARGV[1]) then
  if ARGV[2] == '1' then redis.call('HDEL', KEYS[1], ARGV[1]) end
  return {{'note without job', ''}}
end
return {}
