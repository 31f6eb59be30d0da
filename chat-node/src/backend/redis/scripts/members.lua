-- The users of member set KEYS[1]: everyone present, and for a moment users whose node died without a
-- goodbye, until the presence sweep (expire_presence.lua) removes them and announces each leave (as
-- join.lua lists them).
return redis.call('SMEMBERS', KEYS[1])
