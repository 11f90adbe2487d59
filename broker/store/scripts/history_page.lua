-- history_page: one page of a queue's archived jobs, newest first (read only).
-- KEYS: the ended:<state>[:<jobtype>] zsets to read (one per state asked for)
-- ARGV: 1 most entries per zset, 2 until (newest end, '+inf' none), 3 since ('-inf' none),
--       4 the cursor's score ('' = from the start), 5 the cursor's jid
-- Returns, per zset in KEYS order, {jid, score, jid, score, ...}: the entries after the cursor
-- in the order (score, jid) both descending (the order the caller merges pages in). Work per
-- zset: one range read, and one more for entries sharing the cursor's score (bounded).
local TIES = 1000  -- entries sharing one score read at most (scores are µs apart per job)
local most = tonumber(ARGV[1])
local function below(a, b)  -- a sorts before b bytewise (as Redis sorts members)
  local n = math.min(#a, #b)
  for i = 1, n do
    local x, y = string.byte(a, i), string.byte(b, i)
    if x ~= y then return x < y end
  end
  return #a < #b
end
local pages = {}
for i, key in ipairs(KEYS) do
  local out, top = {}, ARGV[2]
  if ARGV[4] ~= '' then
    local ties = redis.call('ZRANGE', key, ARGV[4], ARGV[4], 'BYSCORE', 'REV', 'LIMIT', 0, TIES,
      'WITHSCORES')
    for t = 1, #ties, 2 do
      if #out < 2 * most and below(ties[t], ARGV[5]) then
        out[#out + 1] = ties[t]
        out[#out + 1] = ties[t + 1]
      end
    end
    top = '(' .. ARGV[4]
  end
  local need = most - #out / 2
  if need > 0 then
    local rest = redis.call('ZRANGE', key, top, ARGV[3], 'BYSCORE', 'REV', 'LIMIT', 0, need,
      'WITHSCORES')
    for _, v in ipairs(rest) do out[#out + 1] = v end
  end
  pages[i] = out
end
return pages
