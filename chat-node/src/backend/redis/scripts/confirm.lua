-- After WAIT: publish only if the entry is on the master we are talking to now. WAIT sent on a
-- connection opened after a failover confirms nothing about writes made through the old one; the
-- read-back does. Raises the log's visible mark to the confirmed sequence.
-- KEYS: [1] log stream, [2] its visible mark
-- ARGV: [1] seq, [2] message id, [3] payload "<seq> <frame>" ('' for none), [4] channel, [5] TTL s of
--       the mark (the log's)
-- Returns 1 when the entry is there (and was published), 0 when this master does not have it.
local e = redis.call('XRANGE', KEYS[1], ARGV[1] .. '-1', ARGV[1] .. '-1')
if #e == 0 or string.find(e[1][2][2], '"id":"' .. ARGV[2] .. '"', 1, true) == nil then return 0 end
local visible = tonumber(redis.call('GET', KEYS[2]) or '0')
if tonumber(ARGV[1]) > visible then redis.call('SET', KEYS[2], ARGV[1], 'EX', ARGV[5]) end
if ARGV[3] ~= '' then redis.call('PUBLISH', ARGV[4], ARGV[3]) end
return 1
