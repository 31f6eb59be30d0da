-- {oldest kept sequence, newest sequence} of a room; with ARGV[1] = '1' the newest is capped at the
-- visible mark.
-- KEYS: [1] sequence counter, [2] log stream, [3] the log's visible mark
local last = tonumber(redis.call('GET', KEYS[1]) or '0')
if ARGV[1] == '1' then last = math.min(last, tonumber(redis.call('GET', KEYS[3]) or '0')) end
local first = 0
local r = redis.call('XRANGE', KEYS[2], '-', '+', 'COUNT', 1)
if #r > 0 then first = tonumber(string.match(r[1][1], '^(%d+)')) end
return {first, last}
