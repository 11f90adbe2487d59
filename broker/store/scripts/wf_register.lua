-- wf_register: split mode's step of a push of dependants (docs/cluster.md, Workflows), in the
-- slot of a queue holding some of their dependencies, before the dependants' own push script:
-- each live dependency names its dependant among its dependants (once), and each gets its
-- verdict, which the push script takes (wf_said, lib_workflows.lua).
-- KEYS: 1 the dependencies' queue's jobs hash
-- ARGV: 1 the dependants' queue, then triples: dependant jid, dependency jid, its index entry
--       as the claim step read it ('~<queue>' finished, '<queue>' live)
-- Returns per triple: 'u' unmet (registered), 'f' did not succeed (dead, or finished other than
-- done), 'm<result>' met (finished done; its result as raw JSON), '7' unknown (the index names
-- a live job this queue does not hold: a push on its way, or gone). A push refused after this
-- step leaves its registrations behind: their ends settle nothing (wf_unwait).
local base = wf_base(KEYS[1])
local queue = ARGV[1]
local answers = {}
for i = 2, #ARGV, 3 do
  local jid, dep, owner = ARGV[i], ARGV[i + 1], ARGV[i + 2]
  local answer
  if live_here(KEYS[1], base .. 'finished', dep) then
    if redis.call('ZSCORE', base .. 'dead', dep) then
      answer = 'f'
    else
      answer = 'u'
      local list = redis.call('HGET', base .. 'dependants', dep)
      local names = list and cjson.decode(list) or {}
      local named = false
      for j = 1, #names, 2 do
        if names[j] == queue and names[j + 1] == jid then named = true end
      end
      if not named then
        names[#names + 1] = queue
        names[#names + 1] = jid
        redis.call('HSET', base .. 'dependants', dep, cjson.encode(names))
      end
    end
  elseif redis.call('ZSCORE', base .. 'finished', dep) or string.sub(owner, 1, 1) == '~' then
    local text = redis.call('HGET', base .. 'final', dep)
    if not text or string.find(text, '^{"state":"done"') then
      answer = 'm' .. wf_result(base, dep)
    else
      answer = 'f'
    end
  else
    answer = '7'
  end
  answers[#answers + 1] = answer
end
return answers
