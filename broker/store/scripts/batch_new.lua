-- batch_new: create a batch (BATCH NEW), atomically.
-- KEYS: 1 its record (hopper:g:{g}:batch:<bid>), 2 batches:expiry zset, 3 the parent's record
--       (KEYS[1] again for a batch without parent)
-- ARGV: 1 bid, 2 created_at (RFC3339), 3 expires at (unix seconds: uncommitted, it is purged
--       then), 4 seconds its record is kept once finished, 5 parent bid ('' none),
--       6 description ('' none), 7 complete callback job JSON ('' none), 8 success ('' none)
-- Returns 1 created, 0 the parent does not exist, -1 the bid is taken (nothing written).
-- Guarantees: the record and its expiry appear together; a child counts in its parent's
-- kids_c and kids_s (its stages not finished yet) from the same step on, so the parent's
-- callbacks wait for the child's.
if redis.call('EXISTS', KEYS[1]) == 1 then return -1 end
if ARGV[5] ~= '' and redis.call('EXISTS', KEYS[3]) == 0 then return 0 end
local fields = {'total', 0, 'pending', 0, 'ran', 0, 'failed', 0, 'kids_c', 0, 'kids_s', 0,
  'created_at', ARGV[2], 'keep', ARGV[4]}
local optional = {parent = ARGV[5], description = ARGV[6], complete = ARGV[7], success = ARGV[8]}
for name, value in pairs(optional) do
  if value ~= '' then
    fields[#fields + 1] = name
    fields[#fields + 1] = value
  end
end
redis.call('HSET', KEYS[1], unpack(fields))
redis.call('ZADD', KEYS[2], ARGV[3], ARGV[1])
if ARGV[5] ~= '' then
  redis.call('HINCRBY', KEYS[3], 'kids_c', 1)
  redis.call('HINCRBY', KEYS[3], 'kids_s', 1)
end
return 1
