-- Takes the members due by a time off a due list, atomically: each member goes to one caller only.
-- KEYS[1] due list (sorted set: member -> due time in ms)   ARGV[1] now (ms)   ARGV[2] most to take
local due = redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', ARGV[1], 'LIMIT', 0, tonumber(ARGV[2]))
if #due > 0 then
  redis.call('ZREM', KEYS[1], unpack(due))
end
return due
