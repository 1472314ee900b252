-- Sliding-window log: count a hit if fewer than `limit` fell in the last period.
-- KEYS[1] zset: hit token -> time (ms)
-- ARGV: limit, period_ms, token (unique per hit)
-- Returns 1 when counted, 0 when over the limit (not counted).
local now = redis_now_ms()
local limit = tonumber(ARGV[1])
local period_ms = tonumber(ARGV[2])

redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', string.format('%.3f', now - period_ms))
if redis.call('ZCARD', KEYS[1]) >= limit then return 0 end
redis.call('ZADD', KEYS[1], string.format('%.3f', now), ARGV[3])
redis.call('PEXPIRE', KEYS[1], math.ceil(period_ms))
return 1
