-- Sliding-window log: count a hit if fewer than `limit` fell in the last period.
-- KEYS[1] zset: hit token -> time (ms)
-- ARGV: limit, period_ms, token (unique per hit)
-- Returns 1 when counted, 0 when over the limit (not counted).
pcall(redis.replicate_commands) -- Redis 6.2: allow writes after TIME
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + tonumber(t[2]) / 1000
local limit = tonumber(ARGV[1])
local period_ms = tonumber(ARGV[2])

redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', string.format('%.3f', now - period_ms))
if redis.call('ZCARD', KEYS[1]) >= limit then return 0 end
redis.call('ZADD', KEYS[1], string.format('%.3f', now), ARGV[3])
redis.call('PEXPIRE', KEYS[1], math.ceil(period_ms))
return 1
