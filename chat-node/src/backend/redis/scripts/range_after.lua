-- Up to ARGV[2] entries after sequence ARGV[1], oldest first, as a flat list id, frame, id, frame, ...
-- With ARGV[3] = '1' (acks wait for replicas) nothing above the log's visible mark (KEYS[2], the highest
-- confirmed sequence) is shown, so no client sees a message a failover can take back and whose
-- sequence could then be reused.
-- KEYS: [1] log stream, [2] its visible mark
local top = '+'
if ARGV[3] == '1' then
  local upto = tonumber(redis.call('GET', KEYS[2]) or '0')
  if upto <= tonumber(ARGV[1]) then return {} end
  top = upto .. '-1'
end
local r = redis.call('XRANGE', KEYS[1], '(' .. ARGV[1] .. '-1', top, 'COUNT', ARGV[2])
local out = {}
for _, e in ipairs(r) do out[#out + 1] = e[1]; out[#out + 1] = e[2][2] end
return out
