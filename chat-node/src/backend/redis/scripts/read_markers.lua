-- Every read marker of a room (zset KEYS[1]) as user, seq, user, seq, ...: the ARGV[1] most advanced
-- (set_read.lua keeps no more).
return redis.call('ZRANGE', KEYS[1], 0, tonumber(ARGV[1]) - 1, 'REV', 'WITHSCORES')
