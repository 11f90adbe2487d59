-- history_page: one page of a queue's archived jobs, newest first (read only).
-- KEYS: the ended:<state>[:<jobtype>] zsets to read (one per state asked for)
-- ARGV: 1 most entries per zset, 2 until (newest end, '+inf' none), 3 since ('-inf' none),
--       4 the cursor's score ('' = from the start), 5 the cursor's jid
-- Returns, per zset in KEYS order, {jid, score, jid, score, ...}: the entries after the cursor
-- in the order (score, jid) both descending (the order the caller merges pages in, and the
-- order of a zset's ranks read in REV). Work per zset: a few O(log n) reads and the page's,
-- however many entries share the cursor's score (a binary search among them when the
-- cursor's own entry left the zset).
local most = tonumber(ARGV[1])
-- The REV rank of the first entry of `key` after (score, jid) in that order.
local function after_cursor(key, score, jid)
  local own = redis.call('ZSCORE', key, jid)
  if own and tonumber(own) == tonumber(score) then return redis.call('ZREVRANK', key, jid) + 1 end
  local lo = redis.call('ZCOUNT', key, '(' .. score, '+inf')  -- the first entry of that score
  local hi = lo + redis.call('ZCOUNT', key, score, score)  -- past its last (jids descending)
  while lo < hi do
    local mid = math.floor((lo + hi) / 2)
    if bytes_before(redis.call('ZRANGE', key, mid, mid, 'REV')[1], jid) then hi = mid else lo = mid + 1 end
  end
  return lo
end
local pages = {}
for i, key in ipairs(KEYS) do
  local first = redis.call('ZCOUNT', key, '(' .. ARGV[2], '+inf')  -- newer than until
  if ARGV[4] ~= '' then first = math.max(first, after_cursor(key, ARGV[4], ARGV[5])) end
  local stop = math.min(first + most, redis.call('ZCOUNT', key, ARGV[3], '+inf'))  -- since
  pages[i] = stop > first and redis.call('ZRANGE', key, first, stop - 1, 'REV', 'WITHSCORES') or {}
end
return pages
