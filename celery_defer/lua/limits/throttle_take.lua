-- GCRA with reservation: allow a start now, or reserve the next free start time.
-- KEYS[1] string: theoretical arrival time (ms)
-- ARGV: limit, period_ms, burst, reserve ('1': a caller that must wait books its
--       start time, so N waiters get N distinct, increasing times; '0': nothing is
--       recorded for a caller that must wait)
-- Returns 0 when allowed now (and recorded), else the ms until the caller's start.
local now = redis_now_ms()
local interval = tonumber(ARGV[2]) / tonumber(ARGV[1])
local burst = tonumber(ARGV[3])

local tat = tonumber(redis.call('GET', KEYS[1]) or '0')
if tat < now then tat = now end
local new_tat = tat + interval
local wait = new_tat - burst * interval - now
-- Stored times carry 3 decimals; ignore what is below that.
local must_wait = wait > 0.001
if must_wait and ARGV[4] ~= '1' then return math.ceil(wait - 0.001) end
redis.call('SET', KEYS[1], string.format('%.3f', new_tat), 'PX', math.max(1, math.ceil(new_tat - now)))
if must_wait then return math.ceil(wait - 0.001) end
return 0
