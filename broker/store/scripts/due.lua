-- due: make one queue's due index entry exact for one of its sorted sets (after the reaper has
-- failed what expired), atomically.
-- KEYS: 1 the zset, 2 its due index
-- ARGV: 1 queue name
refresh_due(KEYS[2], KEYS[1], ARGV[1])
return 1
