-- Adds to a counter that lives a window from its first add, unless the sum would pass the cap.
-- KEYS[1] counter   ARGV[1] delta (may be negative)   ARGV[2] cap   ARGV[3] window (ms)
-- Returns 1 when added, 0 when the cap refused it. The counter never goes below 0.
local delta = tonumber(ARGV[1])
local value = tonumber(redis.call('GET', KEYS[1]) or '0')
if delta > 0 and value + delta > tonumber(ARGV[2]) then
  return 0
end
local next = value + delta
if next < 0 then
  next = 0
end
if redis.call('EXISTS', KEYS[1]) == 1 then
  redis.call('SET', KEYS[1], next, 'KEEPTTL')
else
  redis.call('SET', KEYS[1], next, 'PX', ARGV[3])
end
return 1
