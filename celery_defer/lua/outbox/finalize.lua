-- Finalize a parent run whose attempt never returned (revoked, terminated, killed):
-- what was recorded by earlier attempts becomes due for dispatch.
-- KEYS[1] outbox hash, KEYS[2] finalized zset, KEYS[3] attempts zset (both of the run's shard)
-- ARGV[1] run id, ARGV[2] grace ms
redis.call('ZREM', KEYS[3], ARGV[1])
local records = redis.call('HVALS', KEYS[1])
if #records == 0 then
  return {}
end
local now_ms = math.floor(redis_now_ms())
redis.call('ZADD', KEYS[2], 'NX', now_ms + tonumber(ARGV[2]), ARGV[1])
return records
