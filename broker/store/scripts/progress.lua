-- progress: record what a job says of itself (TRACK SET, JOB LOG), and extend its reservation
-- (TRACK SET reserve_until), atomically.
-- KEYS: 1 jobs hash, 2 progress hash, 3 working zset
-- ARGV: 1 jid, 2 now (RFC3339), 3 percent ('' = unchanged), 4 desc as a JSON string ('' =
--       unchanged), 5 a log line as a JSON string ('' = none), 6 log lines kept at most,
--       7 reserve until (unix seconds, '' = unchanged; never shortens the reservation),
--       8 queue name
-- Returns 1, or 0 for a job the queue does not hold (nothing is recorded). Events: progress.
-- An extended reservation keeps, in the job's progress (`reserved`, never shown), the expiry
-- FETCH gave it and the one it has now: the history's run_seconds count from the FETCH
-- (reservation() in lib.lua).
local jid = ARGV[1]
if redis.call('HEXISTS', KEYS[1], jid) == 0 then return 0 end
local text = redis.call('HGET', KEYS[2], jid)
local progress = text and cjson.decode(text) or {}
progress.updated_at = ARGV[2]
if ARGV[3] ~= '' then progress.percent = tonumber(ARGV[3]) end
if ARGV[4] ~= '' then progress.desc = cjson.decode(ARGV[4]) end
if ARGV[5] ~= '' then
  local log = progress.log or {}
  log[#log + 1] = cjson.decode(ARGV[5])
  local most = tonumber(ARGV[6])
  while #log > most do table.remove(log, 1) end
  progress.log = #log > 0 and log or nil
end
local reserved = progress.reserved  -- kept for the history, never shown: reservation()
progress.reserved = nil
local encoded = cjson.encode(progress)
if listening() then
  local payload = redis.call('HGET', KEYS[1], jid)
  publish({event('progress', jid, ARGV[8], payload, clock(), ',"progress":' .. encoded)})
end
if ARGV[7] ~= '' then
  local expiry = redis.call('ZSCORE', KEYS[3], jid)
  if expiry and tonumber(ARGV[7]) > tonumber(expiry) then
    local fetched = type(reserved) == 'table' and tonumber(reserved[2]) == tonumber(expiry)
      and reserved[1] or expiry
    reserved = {fetched, ARGV[7]}  -- as text: cjson would round them to 14 digits
    redis.call('ZADD', KEYS[3], 'XX', ARGV[7], jid)
  end
end
if reserved then
  progress.reserved = reserved
  encoded = cjson.encode(progress)
end
redis.call('HSET', KEYS[2], jid, encoded)
return 1
