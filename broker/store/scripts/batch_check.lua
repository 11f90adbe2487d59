-- batch_check: look at one batch atomically (`hopper check`), and with repair mend it.
-- KEYS: 1 batches:due zset, 2 batches:expiry zset
-- ARGV: 1 bid, 2 '1' to repair, 3 when to purge a record found without an expiry (unix seconds)
-- Returns a list of problems ({kind, detail} flattened), empty when sound. Checks: a record has
-- its expiry entry; its counts are whole and ordered (0 <= pending, ran, failed <= total); a
-- callback that may fire now is marked due; a due entry belongs to a record that may push it.
-- Repair: the expiry entry is made (at ARGV[3]), the due entry made or dropped; counts are
-- only reported (they cannot be recomputed from what is stored).
local bid, repair = ARGV[1], ARGV[2] == '1'
local b = batch_record(KEYS[1], bid)
local s = batch_read(b)
local found = {}
local function problem(kind, detail)
  found[#found + 1] = kind
  found[#found + 1] = detail
end
for _, kind in ipairs({'complete', 'success'}) do
  local due = redis.call('ZSCORE', KEYS[1], kind .. ' ' .. bid)
  local may = s and batch_next(s) == kind
  local defined = s and (kind == 'complete' and s.has_c or kind == 'success' and s.has_s)
  local st = s and (kind == 'complete' and s.cst or s.sst)
  if due and not (defined and st == '') then
    problem('batch due entry stale', kind)
    if repair then redis.call('ZREM', KEYS[1], kind .. ' ' .. bid) end
  elseif may and not due then
    problem('batch callback not marked due', kind)
    if repair then redis.call('ZADD', KEYS[1], 0, kind .. ' ' .. bid) end
  end
end
if not s then return found end
if not redis.call('ZSCORE', KEYS[2], bid) then
  problem('batch without expiry', '')
  if repair then redis.call('ZADD', KEYS[2], ARGV[3], bid) end
end
local failed = tonumber(redis.call('HGET', b, 'failed') or 0)
if s.pending < 0 or s.ran < 0 or failed < 0 or s.pending > s.total or s.ran > s.total
    or failed > s.total then
  problem('batch counts', 'total ' .. s.total .. ' pending ' .. s.pending .. ' ran ' .. s.ran
    .. ' failed ' .. failed)
end
return found
