-- push: store new jobs of one queue and enqueue or schedule each of them, atomically: see
-- push_queue() in lib_push.lua (KEYS, ARGV, returns and guarantees).
return push_queue(KEYS, ARGV)
