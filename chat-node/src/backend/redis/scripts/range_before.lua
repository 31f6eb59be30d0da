-- Up to ARGV[2] entries before sequence ARGV[1] ('max': from the newest), newest first, as a flat list
-- id, frame, ...; ARGV[3] = '1' stops at the visible mark as in range_after.lua.
-- KEYS: [1] log stream, [2] its visible mark
local top = '+'
if ARGV[1] ~= 'max' then top = '(' .. ARGV[1] .. '-1' end
if ARGV[3] == '1' then
  local upto = tonumber(redis.call('GET', KEYS[2]) or '0')
  if upto == 0 then return {} end
  if ARGV[1] == 'max' or upto < tonumber(ARGV[1]) then top = upto .. '-1' end
end
local r = redis.call('XREVRANGE', KEYS[1], top, '-', 'COUNT', ARGV[2])
local out = {}
for _, e in ipairs(r) do out[#out + 1] = e[1]; out[#out + 1] = e[2][2] end
return out
