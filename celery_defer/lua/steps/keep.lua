-- Keep a completed step: its result and the defers its fn made, in one atomic call,
-- so a worker killed the next instant leaves both or neither. First result wins.
-- Once the outbox holds defers the attempt is leased in the attempts zset: if the
-- worker dies, a recovery pass finalizes the run (acks_late off) or the redelivered
-- attempt skips the step and goes on (acks_late on).
-- KEYS[1] steps hash, KEYS[2] outbox hash (defer id -> "seq|record"), KEYS[3] attempts zset (of the run's shard)
-- ARGV[1] run id, ARGV[2] hashed step id, ARGV[3] result text, ARGV[4] steps ttl s,
-- ARGV[5] outbox ttl s, ARGV[6] lease ms, ARGV[7..] defer id, record pairs
-- Returns {1 when this call kept it else 0, the kept result text, 1 when leased else 0}.
local stored = redis.call('HGET', KEYS[1], ARGV[2])
if stored then
  return {0, stored, 0}
end
redis.call('HSET', KEYS[1], ARGV[2], ARGV[3])
redis.call('EXPIRE', KEYS[1], tonumber(ARGV[4]))
for i = 7, #ARGV, 2 do
  local seq = redis.call('HLEN', KEYS[2]) + 1
  redis.call('HSETNX', KEYS[2], ARGV[i], seq .. '|' .. ARGV[i + 1])
end
if redis.call('EXISTS', KEYS[2]) == 0 then
  return {1, ARGV[3], 0}
end
redis.call('EXPIRE', KEYS[2], tonumber(ARGV[5]))
local now_ms = math.floor(redis_now_ms())
redis.call('ZADD', KEYS[3], now_ms + tonumber(ARGV[6]), ARGV[1])
return {1, ARGV[3], 1}
