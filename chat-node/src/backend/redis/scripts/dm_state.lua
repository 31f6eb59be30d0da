-- {newest direct-message sequence, sequence delivered up to, sequence counter} of a user; with
-- ARGV[1] = '1' the newest is capped at the inbox's visible mark.
-- KEYS: [1] dm sequence counter, [2] the user's delivery cursor, [3] the inbox's visible mark
local counter = tonumber(redis.call('GET', KEYS[1]) or '0')
local last = counter
if ARGV[1] == '1' then last = math.min(last, tonumber(redis.call('GET', KEYS[3]) or '0')) end
local cursor = tonumber(redis.call('GET', KEYS[2]) or '0')
return {last, cursor, counter}
