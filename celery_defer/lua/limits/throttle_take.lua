-- GCRA: allow a start now, or say how long until one would be allowed.
-- KEYS[1] string: theoretical arrival time (ms)
-- ARGV: limit, period_ms, burst
-- Returns 0 when allowed (and recorded), else the ms to wait (nothing recorded).
local now = redis_now_ms()
local interval = tonumber(ARGV[2]) / tonumber(ARGV[1])
local burst = tonumber(ARGV[3])

local tat = tonumber(redis.call('GET', KEYS[1]) or '0')
if tat < now then tat = now end
local new_tat = tat + interval
local wait = new_tat - burst * interval - now
-- Stored times carry 3 decimals; ignore what is below that.
if wait > 0.001 then return math.ceil(wait - 0.001) end
redis.call('SET', KEYS[1], string.format('%.3f', new_tat), 'PX', math.max(1, math.ceil(new_tat - now)))
return 0
