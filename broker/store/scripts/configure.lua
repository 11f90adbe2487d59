-- configure: set and clear settings of one queue (QUEUE SET, the file's [queues]), atomically.
-- KEYS: 1 meta hash (the queue's lane keys are named from it, see lanes_of() in lib_lanes.lua)
-- ARGV: pairs (setting, value; '' clears it), see broker/policy.py queue_setting()
-- Guarantees: the note jobtype_limits (FETCH looks at jobtypes) is there exactly while some
-- t:<jobtype>:<limit> setting is; when a lane limit (group_*, t:*) changes, every resting lane
-- is due at once, so the next FETCHes look at it under the new limits. Returns 1.
local lanes_changed = false
for i = 1, #ARGV, 2 do
  local name, value = ARGV[i], ARGV[i + 1]
  if value == '' then
    redis.call('HDEL', KEYS[1], name)
  else
    redis.call('HSET', KEYS[1], name, value)
  end
  local kind = string.sub(name, 1, 2)
  if kind == 't:' or string.sub(name, 1, 6) == 'group_' then lanes_changed = true end
end
if not lanes_changed then return 1 end
local typed = false
for _, name in ipairs(redis.call('HKEYS', KEYS[1])) do
  if string.sub(name, 1, 2) == 't:' then
    typed = true
    break
  end
end
if typed then
  redis.call('HSET', KEYS[1], 'jobtype_limits', 1)
else
  redis.call('HDEL', KEYS[1], 'jobtype_limits')
end
local resting = lanes_of(KEYS[1]).resting
redis.call('ZUNIONSTORE', resting, 1, resting, 'WEIGHTS', 0)
return 1
