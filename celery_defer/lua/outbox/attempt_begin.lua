-- An attempt of a parent run begins: return the defer ids earlier attempts
-- recorded and, when there are some, lease the attempt in the attempts zset so
-- a recovery pass can tell when the worker running it died.
-- KEYS[1] outbox hash, KEYS[2] attempts zset (of the run's shard); ARGV[1] run id, ARGV[2] lease ms
local ids = redis.call('HKEYS', KEYS[1])
if #ids > 0 then
  local now_ms = math.floor(redis_now_ms())
  redis.call('ZADD', KEYS[2], now_ms + tonumber(ARGV[2]), ARGV[1])
end
return ids
