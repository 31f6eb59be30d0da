-- A join in one round trip: marks user ARGV[4] present in the room through node ARGV[1] until ARGV[3]
-- (after dropping the user's entries that expired before ARGV[2]), then reads what `joined` and the
-- start of a recovery need (the members as members.lua lists them, the first chunk as range_after.lua).
-- KEYS: [1] the user's presence zset in the room, [2] the room's member set, [3] sequence counter,
--       [4] log stream, [5] the log's visible mark, [6] read markers
-- ARGV: [1] node, [2] now ms, [3] presence expiry ms, [4] user, [5] TTL of presence and member set ms,
--       [6] '1' when reads stop at the visible mark, [7] read markers returned at most,
--       [8] recover after this sequence ('' for none), [9] messages of the first recovery chunk,
--       [10] '1' to list the members ('0': count only), [11] most members listed (in a bigger room,
--       that many and the count), [12] the highest sequence this node has seen published in the room
--       (0: none): confirmed, so shown even above a visible mark that has not caught up yet
-- Returns {first (1 if the user was present nowhere before), oldest kept seq, newest seq,
--          recovery start ('' for none), {members...}, {user, seq, ...}, {id, frame, ...},
--          number of members}
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', ARGV[2])
local had = redis.call('ZCARD', KEYS[1])
redis.call('ZADD', KEYS[1], ARGV[3], ARGV[1])
redis.call('PEXPIRE', KEYS[1], ARGV[5])
redis.call('SADD', KEYS[2], ARGV[4])
redis.call('PEXPIRE', KEYS[2], ARGV[5])

local counter = tonumber(redis.call('GET', KEYS[3]) or '0')
local last = counter
local visible = last
if ARGV[6] == '1' then
  visible = math.max(tonumber(redis.call('GET', KEYS[5]) or '0'), tonumber(ARGV[12]))
  last = math.min(last, visible)
end
local first = 0
local head = redis.call('XRANGE', KEYS[4], '-', '+', 'COUNT', 1)
if #head > 0 then first = tonumber(string.match(head[1][1], '^(%d+)')) end

-- The member set lists everyone present, and for a moment also users whose node died without a
-- goodbye: the presence sweep (expire_presence.lua) takes them out and announces each leave, so a list
-- read here is never contradicted without a `presence` leave following. Listing the set without looking
-- at every member's presence keeps a join's cost in the size of its answer.
local members = {}
local total = redis.call('SCARD', KEYS[2])
if ARGV[10] == '1' and total <= tonumber(ARGV[11]) then
  members = redis.call('SMEMBERS', KEYS[2])
elseif ARGV[10] == '1' then
  -- A bigger room: ARGV[11] users from a bounded scan of the set (a join costs the same in a room
  -- of any size), and the count.
  local cursor = '0'
  repeat
    local r = redis.call('SSCAN', KEYS[2], cursor, 'COUNT', 256)
    cursor = r[1]
    for _, u in ipairs(r[2]) do
      if #members < tonumber(ARGV[11]) then members[#members + 1] = u end
    end
  until cursor == '0' or #members >= tonumber(ARGV[11])
end

local read = redis.call('ZRANGE', KEYS[6], 0, tonumber(ARGV[7]) - 1, 'REV', 'WITHSCORES')

local since = ARGV[8]
local history = {}
if since ~= '' then
  -- A `since` above the sequence counter is from before the room expired and started again. One
  -- above the visible mark (and above what this node has seen published) only is a store behind on
  -- confirmations (a failover's new master, whose mark had not caught up yet): nothing to recover yet,
  -- and starting over would repeat everything.
  if tonumber(since) > counter then since = '0' end
  if ARGV[6] ~= '1' or visible > tonumber(since) then
    local top = '+'
    if ARGV[6] == '1' then top = visible .. '-1' end
    local r = redis.call('XRANGE', KEYS[4], '(' .. since .. '-1', top, 'COUNT', ARGV[9])
    for _, e in ipairs(r) do history[#history + 1] = e[1]; history[#history + 1] = e[2][2] end
  end
end
return {had == 0 and 1 or 0, first, last, since, members, read, history, total}
