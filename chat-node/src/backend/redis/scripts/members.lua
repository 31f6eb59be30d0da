-- The users of member set KEYS[1] with a presence entry alive after ARGV[3] (now, ms). Users whose
-- entries all expired are left in the set for expire_presence.lua, which removes them and has their
-- leave announced (removing them here would lose that `presence` event). A user's presence key is
-- ARGV[1] .. user .. ARGV[2].
local out = {}
for _, u in ipairs(redis.call('SMEMBERS', KEYS[1])) do
  if redis.call('ZCOUNT', ARGV[1] .. u .. ARGV[2], '(' .. ARGV[3], '+inf') > 0 then
    out[#out + 1] = u
  end
end
return out
