-- history_purge: delete the oldest archived jobs of one queue that ended in one state.
-- KEYS: 1 history hash, 2 ended:<state> zset, 3 history:count hash, 4 due:ended:<state>
-- ARGV: 1 queue name, 2 state, 3 bound: only entries that ended at or before it, 4 most to
--       delete, 5 '' (by age) or the most entries of this state every queue together may keep:
--       then only as many as the count is over it, 6 split mode: the count of this state as
--       the caller read it (the count lives with the global keys)
-- Returns how many it deleted. Guarantees: an entry leaves the hash, both its indexes and the
-- count in one step, and the queue's due entry is made exact, so brokers running the loop at
-- once never delete more than the rules say (the count is read here, not by the caller).
local queue, state, most = ARGV[1], ARGV[2], tonumber(ARGV[4])
if ARGV[5] ~= '' then
  local count = split and ARGV[6] or redis.call('HGET', KEYS[3], state)
  local over = tonumber(count or 0) - tonumber(ARGV[5])
  most = math.min(most, over)
end
local gone = {}
if most > 0 then
  gone = redis.call('ZRANGE', KEYS[2], '-inf', ARGV[3], 'BYSCORE', 'LIMIT', 0, most)
end
if #gone > 0 then
  local h = {history = KEYS[1], ended = string.sub(KEYS[2], 1, -(#state + 1)), count = KEYS[3]}
  unindex(h, gone, redis.call('HMGET', KEYS[1], unpack(gone)), state)
  redis.call('HDEL', KEYS[1], unpack(gone))
end
refresh_due(KEYS[4], KEYS[2], queue)
return #gone
