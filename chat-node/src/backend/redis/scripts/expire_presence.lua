-- Ends presence that expired without a goodbye (its node died): in room i, every user of member set
-- KEYS[i] with no presence entry alive after ARGV[1] (now, ms) leaves the set. Returns {i, user, ...}
-- for each user removed. The removal happens once, so exactly one node in the cluster announces each
-- such leave. A user's presence key in room i is ARGV[1 + i] .. user .. ARGV[#KEYS + 2].
local now = '(' .. ARGV[1]
local suffix = ARGV[#KEYS + 2]
local out = {}
for i, members in ipairs(KEYS) do
  local prefix = ARGV[i + 1]
  for _, u in ipairs(redis.call('SMEMBERS', members)) do
    local pres = prefix .. u .. suffix
    if redis.call('ZCOUNT', pres, now, '+inf') == 0 then
      redis.call('SREM', members, u)
      redis.call('DEL', pres)
      out[#out + 1] = i
      out[#out + 1] = u
    end
  end
end
return out
