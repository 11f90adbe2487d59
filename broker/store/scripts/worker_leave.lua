-- worker_leave: a worker connection closed, or (ARGV[2] non-empty) the worker stopped beating.
-- KEYS: 1 worker hash, 2 workers zset, 3 holding zset, 4 the worker's held set
-- ARGV: 1 wid, 2 beat cutoff ('' = a connection closed)
-- A worker record is deleted when its last connection closes, or when its last beat is older
-- than the cutoff. A worker that goes while it may still hold jobs (its held set is not empty)
-- enters holding with its last beat: worker_ttl after it, the jobs it still holds are failed
-- (the lost-worker pass). Returns 1 when the record was deleted, else 0.
local beat = redis.call('ZSCORE', KEYS[2], ARGV[1])
if ARGV[2] ~= '' then
  if not beat or tonumber(beat) > tonumber(ARGV[2]) then return 0 end
elseif redis.call('HINCRBY', KEYS[1], 'connections', -1) > 0 then
  return 0
end
redis.call('DEL', KEYS[1])
redis.call('ZREM', KEYS[2], ARGV[1])
if beat and redis.call('EXISTS', KEYS[4]) == 1 then
  redis.call('ZADD', KEYS[3], beat, ARGV[1])
end
return 1
