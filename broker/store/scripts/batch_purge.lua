-- batch_purge: delete batch records whose time is up: uncommitted ones batch_ttl after
-- BATCH NEW, finished ones (both stages over) their keep seconds later, committed ones that
-- never finish batch_max_age after COMMIT. Atomically per batch.
-- KEYS: 1 batches:expiry zset, 2 batches:due zset
-- ARGV: 1 now (unix seconds), 2 most records to delete
-- Returns how many were deleted. Guarantees: a record goes only if this call took its entry out
-- of the expiry zset, at a time <= now. A child that goes before its complete stage finished
-- tells its parent as if it had (the parent's complete callback is not held back for ever);
-- it never succeeded, so the parent's success callback never fires. Its jobs still run, and
-- count towards nothing. Callbacks still marked due go with it.
local bids = redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', ARGV[1], 'LIMIT', 0, ARGV[2])
local k = {due = KEYS[2], expiry = KEYS[1]}
for _, bid in ipairs(bids) do
  redis.call('ZREM', KEYS[1], bid)
  local b = batch_record(KEYS[2], bid)
  local s = batch_read(b)
  redis.call('DEL', b, b .. ':told')
  redis.call('ZREM', KEYS[2], 'complete ' .. bid, 'success ' .. bid)
  if s and s.parent and not s.told_c then
    local p = batch_record(KEYS[2], s.parent)
    if redis.call('EXISTS', p) == 1 then
      redis.call('HINCRBY', p, 'kids_c', -1)
      batch_look(k, s.parent, tonumber(ARGV[1]))
    end
  end
end
return #bids
