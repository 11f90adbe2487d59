-- worker_signal: an operator asks a worker to go quiet or terminate (the dashboard); the
-- worker hears it in the reply to its next BEAT.
-- KEYS: 1 worker hash
-- ARGV: 1 requested state (quiet or terminate)
-- States only move running -> quiet -> terminate; the heartbeat is left as it was. Returns the
-- state after the request, or false when the worker is not registered.
if redis.call('EXISTS', KEYS[1]) == 0 then return false end
local rank = {running = 0, quiet = 1, terminate = 2}
local state = redis.call('HGET', KEYS[1], 'state') or 'running'
if rank[ARGV[1]] and rank[ARGV[1]] > (rank[state] or 0) then
  state = ARGV[1]
  redis.call('HSET', KEYS[1], 'state', state)
end
return state
