-- A step.sleep: the first call stores its wake-up time (Redis time), every call
-- returns how long is left, so a sleep that already passed never sleeps again.
-- KEYS[1] steps hash; ARGV[1] hashed step id, ARGV[2] duration ms, ARGV[3] steps ttl s
-- Returns the ms left until the wake-up time (0 or less: awake).
local now_ms = math.floor(redis_now_ms())
local stored = redis.call('HGET', KEYS[1], ARGV[1])
local wake_ms
if stored and string.sub(stored, 1, 2) == 'w:' then
  wake_ms = tonumber(string.sub(stored, 3))
elseif stored then
  return 0
else
  wake_ms = now_ms + tonumber(ARGV[2])
  redis.call('HSET', KEYS[1], ARGV[1], 'w:' .. wake_ms)
  redis.call('EXPIRE', KEYS[1], tonumber(ARGV[3]))
end
return wake_ms - now_ms
