-- A run in flight whose time came: return the message to send it again, or
-- false when it needs none (it finished, or a live claim or a retry holds it).
-- KEYS[1] claim key, KEYS[2] done key, KEYS[3] inflight zset, KEYS[4] resend key
-- ARGV[1] run id
if redis.call('EXISTS', KEYS[2]) == 1 then
  redis.call('ZREM', KEYS[3], ARGV[1])
  redis.call('DEL', KEYS[4])
  return false
end
if redis.call('EXISTS', KEYS[1]) == 1 then
  return false -- held: its holder renews the claim, or its retry is still due
end
local message = redis.call('GET', KEYS[4])
if not message then
  redis.call('ZREM', KEYS[3], ARGV[1])
  return false
end
return message
