-- A run given a concurrency slot after another run that has not begun yet:
-- is its turn to begin here?
-- KEYS[1] handed zset: run id -> when it was given its slot (ms), as in
-- concurrency_acquire.lua, the caller among them
-- ARGV: holder (run id), its hand-over time (ms, from concurrency_acquire.lua),
--       patience_ms, poll_ms
-- A run given a slot before the caller that has not begun (or, waiting its own
-- turn, begun) yet is waited for, until patience_ms after it was given its
-- slot: its message may be a moment behind (another pool process, the broker's
-- order); one that does not come by then has gone away, and no run waits for it
-- any longer (it leaves the handed runs). When the caller's turn comes it
-- leaves the handed runs.
-- Returns the ms to wait before asking again (0: the caller's turn).
local now = redis_now_ms()
local mine = tonumber(ARGV[2])
local patience = tonumber(ARGV[3])
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', string.format('%.3f', now - patience))
local first = redis.call('ZRANGE', KEYS[1], 0, 0, 'WITHSCORES')
if first[1] and first[1] ~= ARGV[1] and tonumber(first[2]) < mine - 0.0005 then
  return math.max(1, math.min(tonumber(ARGV[4]), math.ceil(tonumber(first[2]) + patience - now)))
end
redis.call('ZREM', KEYS[1], ARGV[1])
return 0
