-- queue_check: a queue's entries in the due index and the list of queues, checked and (when
-- asked) repaired atomically (hopper check).
-- KEYS: 1 queue list, 2 queues set, 3-7 working, scheduled, retries, dead, finished,
--       8-12 due:working, due:scheduled, due:retries, due:dead, due:finished, 13 prioritized
-- ARGV: 1 queue name, 2 '1' to repair
-- Returns the problems: {'not listed', ''} for waiting jobs in a queue INFO does not list,
-- {'not due', <set>} for a set whose earliest entry is earlier than the queue's due time.
local queue, fix = ARGV[1], ARGV[2] == '1'
local names = {'working', 'scheduled', 'retries', 'dead', 'finished'}
local problems = {}
local waiting = redis.call('LLEN', KEYS[1]) + redis.call('ZCARD', KEYS[13])
if waiting > 0 and redis.call('SISMEMBER', KEYS[2], queue) == 0 then
  problems[#problems + 1] = {'not listed', ''}
  if fix then redis.call('SADD', KEYS[2], queue) end
end
for i = 3, 7 do
  local first = redis.call('ZRANGE', KEYS[i], 0, 0, 'WITHSCORES')
  if first[1] then
    local due = redis.call('ZSCORE', KEYS[i + 5], queue)
    if not due or tonumber(due) > tonumber(first[2]) then
      problems[#problems + 1] = {'not due', names[i - 2]}
      if fix then redis.call('ZADD', KEYS[i + 5], 'LT', first[2], queue) end
    end
  end
end
return problems
