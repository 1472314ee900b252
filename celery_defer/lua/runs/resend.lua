-- A run in flight whose time came: return the message to send it again, or
-- false when it needs none (it finished, or a live claim or a retry holds it).
-- KEYS[1] claim key, KEYS[2] inflight zset, KEYS[3] resend key,
-- KEYS[4] done bucket of the previous generation, KEYS[5] of the current one
-- ARGV[1] run id, ARGV[2] the run's done marker, ARGV[3] the generation of KEYS[5],
-- ARGV[4] done ttl s
-- Returns {'generation', g} when KEYS[4..5] are not the buckets of now (call again for g).
--#include runs/done_markers
local generation = done_generation(tonumber(ARGV[4]))
if generation ~= tonumber(ARGV[3]) then
  return {'generation', tostring(generation)}
end
if done_lookup(KEYS[5], ARGV[2]) or done_lookup(KEYS[4], ARGV[2]) then
  redis.call('ZREM', KEYS[2], ARGV[1])
  redis.call('DEL', KEYS[3])
  return false
end
if redis.call('EXISTS', KEYS[1]) == 1 then
  return false -- held: its holder renews the claim, or its retry is still due
end
local message = redis.call('GET', KEYS[3])
if not message then
  redis.call('ZREM', KEYS[2], ARGV[1])
  return false
end
return message
