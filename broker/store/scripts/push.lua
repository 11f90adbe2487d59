-- push: store new jobs of one queue and enqueue or schedule each of them, atomically: see
-- push_queue() in lib_push.lua (KEYS, ARGV, returns and guarantees). In split mode the jids
-- were claimed before (claim.lua): a job refused here gives its claim back after the call.
local results = push_queue(KEYS, ARGV)
if split then
  local claims = cjson.decode(ARGV[9])[1]
  for i, result in ipairs(results) do
    local owner = claims[i]
    if result ~= 1 and not names_live(owner) then
      index_swap(KEYS[4], ARGV[10 + 7 * (i - 1)], ARGV[2], owner or '')  -- the claim given back
    end
  end
end
return results
