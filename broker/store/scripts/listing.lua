-- listing: one page of a sorted set after a cursor, with the records; read-only (JOB LIST).
-- KEYS: 1 the zset, 2 jobs hash
-- ARGV: 1 order ('asc': lowest score first, 'desc': highest first), 2 cursor score as Redis
--       wrote it ('' = from the start), 3 cursor jid, 4 N
-- Returns {jid1, score1, payload1 or false, jid2, ...}: the first N entries that come after
-- (score, jid) in that order; entries of one score are in byte order of their jids, as Redis
-- keeps them. The cursor need not be in the set any more: its place is found by binary search
-- among the entries of its score (O(log n) reads), so a page costs the same wherever it is.
local key, order, score, jid = KEYS[1], ARGV[1], ARGV[2], ARGV[3]
local wanted = tonumber(ARGV[4])
local split  -- ascending rank of the first entry after the cursor ('asc') or at/after it
if score == '' then
  split = order == 'asc' and 0 or redis.call('ZCARD', key)
else
  local lo = redis.call('ZCOUNT', key, '-inf', '(' .. score)
  local hi = lo + redis.call('ZCOUNT', key, score, score)
  while lo < hi do
    local mid = math.floor((lo + hi) / 2)
    local member = redis.call('ZRANGE', key, mid, mid)[1]
    if bytes_before(member, jid) or (order == 'asc' and member == jid) then
      lo = mid + 1
    else
      hi = mid
    end
  end
  split = lo
end
local flat
if order == 'asc' then
  flat = redis.call('ZRANGE', key, split, split + wanted - 1, 'WITHSCORES')
else
  if split == 0 then return {} end
  flat = redis.call('ZRANGE', key, math.max(0, split - wanted), split - 1, 'WITHSCORES')
end
local found = {}
local first, last, step = 1, #flat - 1, 2
if order ~= 'asc' then first, last, step = #flat - 1, 1, -2 end
for i = first, last, step do
  found[#found + 1] = flat[i]
  found[#found + 1] = flat[i + 1]
  found[#found + 1] = redis.call('HGET', KEYS[2], flat[i])
end
return found
