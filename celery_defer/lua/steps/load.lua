-- An attempt's first step: read the run's kept steps and, when there are some, the
-- defer ids its outbox holds (an attempt re-entered after step.sleep or a wait is
-- not a retry, so nothing else told it). When the outbox holds defers the attempt
-- is leased in the attempts zset, as attempt_begin does, so a recovery pass can
-- finalize the run if its worker dies.
-- KEYS[1] steps hash, KEYS[2] outbox hash, KEYS[3] attempts zset (of the run's shard)
-- ARGV[1] run id, ARGV[2] lease ms
-- Returns {flat field/value list of the steps hash, defer ids of the outbox}.
local steps = redis.call('HGETALL', KEYS[1])
local ids = {}
if #steps > 0 then
  ids = redis.call('HKEYS', KEYS[2])
  if #ids > 0 then
    local now_ms = math.floor(redis_now_ms())
    redis.call('ZADD', KEYS[3], now_ms + tonumber(ARGV[2]), ARGV[1])
  end
end
return {steps, ids}
