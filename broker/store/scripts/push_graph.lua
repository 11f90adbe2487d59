-- push_graph: store a workflow whose jobs are in several queues (a PUSHB graph), all or
-- nothing, with push_queue() of lib_push.lua run for each queue's segment.
-- KEYS: each segment's push KEYS (see push_queue), one segment after the other
-- ARGV: 1 the number of segments S, then S pairs (number of KEYS, number of ARGV), then each
--       segment's push ARGV (ARGV[3] '': no claim; one Redis only, so ARGV[9] '')
-- Returns every segment's results, one per job, in order: all 1 (every job stored), or none
-- stored: the refused ones with their codes, the others 9 (refused with another job).
-- Guarantees: every job is checked against the store (and a dependency on any job of the
-- graph, whatever its queue, counts as known; a jid named in two queues is refused, 0, as
-- push_queue() refuses one named twice in one queue) before anything is written; then every
-- segment is written in the same step, so no job of the graph can run or be seen alone.
local count = tonumber(ARGV[1])
local segments, k, a, here = {}, 0, 1 + 2 * count, {}
for i = 1, count do
  local nkeys, nargs = tonumber(ARGV[2 * i]), tonumber(ARGV[2 * i + 1])
  local keys, args = {}, {}
  for j = 1, nkeys do keys[j] = KEYS[k + j] end
  for j = 1, nargs do args[j] = ARGV[a + j] end
  k, a = k + nkeys, a + nargs
  segments[i] = {keys, args}
  for j = 10, nargs, 7 do here[args[j]] = args[2] end  -- jid -> its queue
end
local results, refused, ending = {}, false, {}  -- ending: holders the replace pushes end
for pass = 1, 2 do  -- again once a replace push is found: a dependency on its holder fails
  local known, named = next(ending) ~= nil, {}
  refused = false
  for i, segment in ipairs(segments) do
    results[i] = push_queue(segment[1], segment[2], {here = here, phase = 'check', ending = ending})
    for j, result in ipairs(results[i]) do
      local jid = segment[2][10 + 7 * (j - 1)]
      if result == 1 and named[jid] then results[i][j] = 0 end  -- in an earlier queue's segment
      named[jid] = true
      if results[i][j] ~= 1 then refused = true end
    end
  end
  if known or next(ending) == nil then break end
end
if not refused then
  for i, segment in ipairs(segments) do
    results[i] = push_queue(segment[1], segment[2], {here = here, phase = 'write', ending = ending})
  end
end
local flat = {}
for _, found in ipairs(results) do
  for _, result in ipairs(found) do flat[#flat + 1] = (refused and result == 1) and 9 or result end
end
return flat
