-- Forget a line in the index of lines with parked runs, unless it parked again.
-- KEYS[1] index zset: "<limit>:<lease ms>:<guard key>" -> when a run last parked (ms)
-- ARGV: member, the score it had when the caller found its line empty
-- Touches only the index (never a guard's keys): it may live on its own shard.
local score = redis.call('ZSCORE', KEYS[1], ARGV[1])
if score and tonumber(score) == tonumber(ARGV[2]) then
  redis.call('ZREM', KEYS[1], ARGV[1])
  return 1
end
return 0
