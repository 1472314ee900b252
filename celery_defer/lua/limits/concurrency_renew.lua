-- Extend a live concurrency lease.
-- KEYS[1] holders zset: holder -> lease expiry (ms)
-- ARGV: holder, lease_ms
-- Returns 1 when renewed, 0 when the lease was already lost.
local now = redis_now_ms()
local lease_ms = tonumber(ARGV[2])

local expiry = redis.call('ZSCORE', KEYS[1], ARGV[1])
if not expiry then return 0 end
if tonumber(expiry) <= now then
  redis.call('ZREM', KEYS[1], ARGV[1])
  return 0
end
redis.call('ZADD', KEYS[1], 'XX', string.format('%.3f', now + lease_ms), ARGV[1])
if redis.call('PTTL', KEYS[1]) < lease_ms then
  redis.call('PEXPIRE', KEYS[1], math.ceil(lease_ms))
end
return 1
