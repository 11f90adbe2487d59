-- push: store new jobs of one queue and enqueue or schedule each of them, atomically: see
-- push_queue() in lib_push.lua (KEYS, ARGV, returns and guarantees). In split mode the jids
-- were claimed before (claim.lua): a job refused here gives its claim back after the call,
-- if the claim step made one and no other push stored a job of that jid here meanwhile.
local results = push_queue(KEYS, ARGV)
if split then
  local claimed = cjson.decode(ARGV[9])
  for i, result in ipairs(results) do
    local owner, jid = claimed[1][i], ARGV[10 + 7 * (i - 1)]
    if result ~= 1 and claimed[2][i] == 1 and not names_live(owner)
      and not live_here(KEYS[1], KEYS[7], jid) then
      index_swap(KEYS[4], jid, ARGV[2], owner or '')  -- the claim given back
    end
  end
end
return results
