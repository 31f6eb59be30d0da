-- Deletes a record only while it holds the given value (releasing a lock that may have expired and
-- been taken by another node meanwhile must not free that node's lock).
-- KEYS[1] record   ARGV[1] expected value
if redis.call('GET', KEYS[1]) == ARGV[1] then
  return redis.call('DEL', KEYS[1])
end
return 0
