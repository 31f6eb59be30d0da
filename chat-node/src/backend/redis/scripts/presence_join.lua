-- Marks user ARGV[4] present in a room through node ARGV[1] until ARGV[3] (ms), after dropping entries
-- that expired before ARGV[2] (now); 1 if the user was present nowhere before.
-- KEYS: [1] the user's presence zset in the room (node -> expiry), [2] the room's member set
-- ARGV: [5] TTL of the presence zset and the member set, ms (refreshed while anyone is present)
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', ARGV[2])
local had = redis.call('ZCARD', KEYS[1])
redis.call('ZADD', KEYS[1], ARGV[3], ARGV[1])
redis.call('PEXPIRE', KEYS[1], ARGV[5])
redis.call('SADD', KEYS[2], ARGV[4])
redis.call('PEXPIRE', KEYS[2], ARGV[5])
if had == 0 then return 1 end
return 0
