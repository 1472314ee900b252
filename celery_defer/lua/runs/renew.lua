-- Extend the lease of a deferred run's claim while its handler runs.
-- KEYS[1] claim key, KEYS[2] inflight zset; ARGV[1] holder token, ARGV[2] lease ms,
-- ARGV[3] run id. Returns 1 if still held.
if redis.call('GET', KEYS[1]) == ARGV[1] then
  redis.call('PEXPIRE', KEYS[1], tonumber(ARGV[2]))
  redis.call('ZADD', KEYS[2], 'XX', math.floor(redis_now_ms()) + tonumber(ARGV[2]), ARGV[3])
  return 1
end
return 0
