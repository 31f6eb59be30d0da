-- Ends the presence of user ARGV[3] in a room through node ARGV[1] (dropping entries expired before
-- ARGV[2], now); 1 if the user is now present nowhere.
-- KEYS: [1] the user's presence zset in the room, [2] the room's member set
redis.call('ZREM', KEYS[1], ARGV[1])
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', ARGV[2])
if redis.call('ZCARD', KEYS[1]) == 0 then
  redis.call('SREM', KEYS[2], ARGV[3])
  redis.call('DEL', KEYS[1])
  return 1
end
return 0
