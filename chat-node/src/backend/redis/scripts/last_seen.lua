-- For each user in ARGV[2..]: the count of live online entries (after ARGV[1], now ms) and the last-seen
-- time ('' if never), as a flat list. A user's online key is KEYS[1] .. user .. KEYS[2], their last-seen
-- key KEYS[1] .. user .. KEYS[3].
local out = {}
for i, u in ipairs(ARGV) do
  if i > 1 then
    local online = redis.call('ZCOUNT', KEYS[1] .. u .. KEYS[2], '(' .. ARGV[1], '+inf')
    local seen = redis.call('GET', KEYS[1] .. u .. KEYS[3])
    out[#out + 1] = online
    out[#out + 1] = seen or ''
  end
end
return out
