-- worker_leave: a worker connection closed, or (ARGV[2] non-empty) the worker stopped beating.
-- KEYS: 1 worker hash, 2 workers zset
-- ARGV: 1 wid, 2 beat cutoff ('' = a connection closed)
-- A worker record is deleted when its last connection closes, or when its last beat is older
-- than the cutoff. Returns 1 when the record was deleted, else 0.
if ARGV[2] ~= '' then
  local beat = redis.call('ZSCORE', KEYS[2], ARGV[1])
  if not beat or tonumber(beat) > tonumber(ARGV[2]) then return 0 end
elseif redis.call('HINCRBY', KEYS[1], 'connections', -1) > 0 then
  return 0
end
redis.call('DEL', KEYS[1])
redis.call('ZREM', KEYS[2], ARGV[1])
return 1
