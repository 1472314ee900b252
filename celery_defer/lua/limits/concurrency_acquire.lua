-- Take a concurrency slot, or queue fairly (FIFO) for one.
-- KEYS[1] holders  zset: holder -> lease expiry (ms)
-- KEYS[2] waiters  zset: holder -> first arrival (ms)
-- KEYS[3] seen     zset: holder -> last seen (ms), to prune waiters that went away
-- KEYS[4] avg      string: EWMA of run durations (ms), read only here
-- ARGV: holder, limit, lease_ms, waiter_ttl_ms
-- Returns {acquired 0|1, rank among waiters, avg run ms or nil}.
local now = redis_now_ms()
local holder = ARGV[1]
local limit = tonumber(ARGV[2])
local lease_ms = tonumber(ARGV[3])
local waiter_ttl_ms = tonumber(ARGV[4])

-- Scores go out as strings: Lua would print large numbers with 14 digits only.
local function fmt(x) return string.format('%.3f', x) end

-- Never shorten a TTL: another caller may hold a longer lease on the same key.
local function extend_ttl(key, ttl_ms)
  local ttl = math.ceil(ttl_ms)
  if redis.call('PTTL', key) < ttl then redis.call('PEXPIRE', key, ttl) end
end

redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', fmt(now))
local stale = redis.call('ZRANGEBYSCORE', KEYS[3], '-inf', fmt(now - waiter_ttl_ms))
for _, w in ipairs(stale) do
  redis.call('ZREM', KEYS[2], w)
  redis.call('ZREM', KEYS[3], w)
end
local avg = redis.call('GET', KEYS[4])

local function hold()
  redis.call('ZADD', KEYS[1], fmt(now + lease_ms), holder)
  extend_ttl(KEYS[1], lease_ms)
  redis.call('ZREM', KEYS[2], holder)
  redis.call('ZREM', KEYS[3], holder)
  return {1, 0, avg}
end

if redis.call('ZSCORE', KEYS[1], holder) then return hold() end
local free = limit - redis.call('ZCARD', KEYS[1])
if free > 0 then
  -- A newcomer queues behind every live waiter.
  local rank = redis.call('ZRANK', KEYS[2], holder) or redis.call('ZCARD', KEYS[2])
  if rank < free then return hold() end
end

redis.call('ZADD', KEYS[2], 'NX', fmt(now), holder)
redis.call('ZADD', KEYS[3], fmt(now), holder)
extend_ttl(KEYS[2], waiter_ttl_ms)
extend_ttl(KEYS[3], waiter_ttl_ms)
return {0, redis.call('ZRANK', KEYS[2], holder), avg}
