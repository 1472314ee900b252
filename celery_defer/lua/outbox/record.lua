-- Record one attempt's defers of a parent run; first payload per defer id wins.
-- KEYS[1] outbox hash (defer id -> "seq|record"), KEYS[2] finalized zset, KEYS[3] attempts zset
-- (both of the run's shard)
-- ARGV[1] run id, ARGV[2] outbox ttl s, ARGV[3] "1" when the run finalizes now,
-- ARGV[4] grace ms before recovery may dispatch, ARGV[5] ms the attempt stays
-- leased when the run goes on (until its next attempt, about to be sent, begins),
-- ARGV[6..] defer id, record pairs.
-- Returns, when the run finalizes, every record of the run, or only their count
-- when they are exactly the ones this call added (the caller has them already);
-- else nothing.
local outbox = KEYS[1]
local added = 0
for i = 6, #ARGV, 2 do
  local seq = redis.call('HLEN', outbox) + 1
  added = added + redis.call('HSETNX', outbox, ARGV[i], seq .. '|' .. ARGV[i + 1])
end
local has_records = redis.call('EXISTS', outbox) == 1
if has_records then
  redis.call('EXPIRE', outbox, tonumber(ARGV[2]))
end
if ARGV[3] ~= '1' then
  -- The run goes on: if this worker dies before the next attempt is sent, the
  -- lease runs out and a recovery pass finalizes the run with what it recorded.
  if has_records then
    redis.call('ZADD', KEYS[3], math.floor(redis_now_ms()) + tonumber(ARGV[5]), ARGV[1])
  end
  return {}
end
redis.call('ZREM', KEYS[3], ARGV[1]) -- the last attempt is over
local total = redis.call('HLEN', outbox)
if total > 0 then
  redis.call('ZADD', KEYS[2], math.floor(redis_now_ms()) + tonumber(ARGV[4]), ARGV[1])
end
if total == added then
  return total
end
return redis.call('HVALS', outbox)
