-- Extend the lease of a running attempt. KEYS[1] attempts zset (of the run's shard)
-- ARGV[1] run id, ARGV[2] lease ms. Returns 1 while the attempt is still leased.
if not redis.call('ZSCORE', KEYS[1], ARGV[1]) then
  return 0
end
local now_ms = math.floor(redis_now_ms())
redis.call('ZADD', KEYS[1], now_ms + tonumber(ARGV[2]), ARGV[1])
return 1
