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
--#include outbox/in_pieces
local outbox = KEYS[1]
local added = 0 -- records this call added
local total -- records in the outbox once it has
if redis.call('EXISTS', outbox) == 0 then
  -- Nothing recorded yet (most runs): one HSET of the records, each id's first kept.
  local fields, seen = {}, {}
  for i = 6, #ARGV, 2 do
    if not seen[ARGV[i]] then
      seen[ARGV[i]] = true
      added = added + 1
      fields[2 * added - 1] = ARGV[i]
      fields[2 * added] = added .. '|' .. ARGV[i + 1]
    end
  end
  call_in_pieces('HSET', outbox, fields, 1)
  total = added
else
  total = redis.call('HLEN', outbox)
  for i = 6, #ARGV, 2 do
    local new = redis.call('HSETNX', outbox, ARGV[i], (total + 1) .. '|' .. ARGV[i + 1])
    total = total + new
    added = added + new
  end
end
local has_records = total > 0
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
if has_records then
  redis.call('ZADD', KEYS[2], math.floor(redis_now_ms()) + tonumber(ARGV[4]), ARGV[1])
end
if total == added then
  return total
end
return redis.call('HVALS', outbox)
