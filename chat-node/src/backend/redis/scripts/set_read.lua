-- Moves user ARGV[2]'s read marker in zset KEYS[1] up to ARGV[1], never past the room's newest sequence
-- (KEYS[2]; with ARGV[4] = '1' the visible mark KEYS[3]) and never down; keeps the ARGV[3] most
-- advanced markers and the zset for ARGV[5] seconds. Returns the stored sequence if it moved, else 0.
local last = tonumber(redis.call('GET', KEYS[2]) or '0')
if ARGV[4] == '1' then last = math.min(last, tonumber(redis.call('GET', KEYS[3]) or '0')) end
local seq = math.min(tonumber(ARGV[1]), last)
if seq <= 0 then return 0 end
if redis.call('ZADD', KEYS[1], 'GT', 'CH', seq, ARGV[2]) == 0 then return 0 end
local n = redis.call('ZCARD', KEYS[1])
local cap = tonumber(ARGV[3])
if n > cap then redis.call('ZREMRANGEBYRANK', KEYS[1], 0, n - cap - 1) end
redis.call('EXPIRE', KEYS[1], ARGV[5])
return seq
