-- A booked run begins: leave the bookings, and take the next actual start.
-- KEYS[1] zset: booked runs -> start time (ms); KEYS[2] string: theoretical
-- arrival time of actual starts (ms), as in throttle_take.lua
-- ARGV: limit, period_ms, burst, holder (run id)
-- A run delivered on time begins at once. Runs delivered late (behind a backlog
-- in the broker's queue) arrive bunched: each gets the next start the pace
-- allows, in the order they arrive, so the pace holds for actual starts too.
-- Returns the ms the caller waits before it starts (0: at once); always recorded.
local now = redis_now_ms()
local interval = tonumber(ARGV[2]) / tonumber(ARGV[1])
local burst = tonumber(ARGV[3])
redis.call('ZREM', KEYS[1], ARGV[4])
local tat = tonumber(redis.call('GET', KEYS[2]) or '0')
if tat < now then tat = now end
local new_tat = tat + interval
redis.call('SET', KEYS[2], string.format('%.3f', new_tat), 'PX', math.max(1, math.ceil(new_tat - now)))
local wait = new_tat - burst * interval - now
if wait > 0.001 then return math.ceil(wait - 0.001) end
return 0
