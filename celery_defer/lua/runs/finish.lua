-- End a deferred run's attempt.
-- KEYS[1] claim key, KEYS[2] inflight zset, KEYS[3] resend key,
-- KEYS[4] done bucket of the previous generation, KEYS[5] of the current one
-- ARGV[1] holder token, ARGV[2] outcome code ('' when the run will retry), ARGV[3] run id,
-- ARGV[4] the run's done marker, ARGV[5] the generation of KEYS[5], ARGV[6] done ttl s
-- Returns 1, or {'generation', g} when KEYS[4..5] are not the buckets of now
-- (nothing was changed: call again for g).
--#include runs/done_markers
if ARGV[2] ~= '' then
  local ttl_s = tonumber(ARGV[6])
  local generation = done_generation(ttl_s)
  if generation ~= tonumber(ARGV[5]) then
    return {'generation', tostring(generation)}
  end
  if not done_lookup(KEYS[4], ARGV[4]) then
    done_write(KEYS[5], ARGV[4], ARGV[2], generation, ttl_s)
  end
  redis.call('ZREM', KEYS[2], ARGV[3])
  redis.call('DEL', KEYS[3])
end
if redis.call('GET', KEYS[1]) == ARGV[1] then
  redis.call('DEL', KEYS[1])
end
return 1
