-- workflow: settle the ends of dependencies marked in wf:due (see lib_workflows.lua), each in
-- its dependant's queue, atomically per entry (one Redis; split mode: settle.lua).
-- KEYS: 1 wf:due zset, 2 jid index, 3 awaited zset
-- ARGV: 1 now (unix seconds), 2 finished jobs kept per queue at most, 3 finished channel,
--       4 most entries to take
-- Returns how many entries it took. Guarantees: the script selects and removes the entries
-- itself, so each is settled once whatever the number of brokers (wf_end() in
-- lib_batches.lua: a dependant whose policy fails ends cancelled, one whose dependencies are
-- all met is released).
local taken = redis.call('ZRANGE', KEYS[1], 0, tonumber(ARGV[4]) - 1)
if #taken == 0 then return 0 end
redis.call('ZREM', KEYS[1], unpack(taken))
for _, entry in ipairs(taken) do
  wf_end(KEYS[2], KEYS[3], ARGV[3], ARGV[2], cjson.decode(entry), ARGV[1])
end
return #taken
