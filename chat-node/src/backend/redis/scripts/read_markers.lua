-- Every read marker of a room (zset KEYS[1]) as user, seq, user, seq, ... (at most 1000 users).
return redis.call('ZRANGE', KEYS[1], 0, 999, 'WITHSCORES')
