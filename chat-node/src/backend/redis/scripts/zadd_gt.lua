-- Moves member ARGV[2] of zset KEYS[1] up to score ARGV[1], never down; 1 if it changed.
return redis.call('ZADD', KEYS[1], 'GT', 'CH', ARGV[1], ARGV[2])
