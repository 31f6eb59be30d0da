-- Stores one room message or direct message and (without --ack-replicas) publishes it, atomically, so
-- each room and inbox has one total order. See post.rs.
-- KEYS: [1] sequence counter, [2] log stream, [3] client-id record ("seq|id|ts", for resends)
-- ARGV: [1] channel, [2] message id, [3] frame tail, [4] stream cap, [5] client-id TTL s,
--       [6] '1' if a client id was given, [7] frame before seq, [8] TTL s of the counter and log,
--       [9] '1' to publish here (no replicas to wait for), [10] frame between seq and ts
-- Returns {1, "seq|id|ts"} when stored and published; {1, "seq|id|ts", "<seq> <frame>"} when stored
-- but left for the caller to publish after WAIT; {0, "seq|id|ts"} for a resend of a known client id.
-- The frame is ARGV[7] .. seq .. ARGV[10] .. ts .. ARGV[3]: the pieces come from protocol::MessageHead
-- and message_tail, so it is protocol::splice_message's frame (tests/frame_identity.rs proves it).
if ARGV[6] == '1' then
  local prev = redis.call('GET', KEYS[3])
  if prev then return {0, prev} end
end
local seq = redis.call('INCR', KEYS[1])
local t = redis.call('TIME')
local ts = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local frame = ARGV[7] .. seq .. ARGV[10] .. ts .. ARGV[3]
local ok = redis.pcall('XADD', KEYS[2], 'MAXLEN', ARGV[4], seq .. '-1', 'f', frame)
if type(ok) == 'table' and ok.err then
  -- The counter fell behind the stream (e.g. lost in a failover): continue after the stream.
  local last = redis.call('XREVRANGE', KEYS[2], '+', '-', 'COUNT', 1)
  seq = tonumber(string.match(last[1][1], '^(%d+)')) + 1
  redis.call('SET', KEYS[1], seq)
  frame = ARGV[7] .. seq .. ARGV[10] .. ts .. ARGV[3]
  redis.call('XADD', KEYS[2], 'MAXLEN', ARGV[4], seq .. '-1', 'f', frame)
end
redis.call('EXPIRE', KEYS[1], ARGV[8])
redis.call('EXPIRE', KEYS[2], ARGV[8])
local result = seq .. '|' .. ARGV[2] .. '|' .. ts
if ARGV[6] == '1' then redis.call('SET', KEYS[3], result, 'EX', ARGV[5]) end
if ARGV[9] == '1' then
  redis.call('PUBLISH', ARGV[1], seq .. ' ' .. frame)
  return {1, result}
end
return {1, result, seq .. ' ' .. frame}
