-- GCRA, with reservation: allow a start now, or book the waiter's start time.
-- KEYS[1] string: theoretical arrival time of bookings (ms)
-- KEYS[2] zset: booked runs -> their start time (ms), until they begin
-- KEYS[3] string: theoretical arrival time of actual starts (ms), see throttle_begin.lua
-- ARGV: limit, period_ms, burst, reserve ('1' books, '0' records nothing for a
--       caller that must wait), holder (run id), grace_ms (a booking not begun
--       this long after its time is given up: its run went away)
-- A newcomer starts at once only when the pace allows it and no booked run is
-- still to begin: a booked run delivered late (a backlog in the broker's queue)
-- keeps its place, and the newcomer is booked (and requeued) behind it.
-- Returns 0 when allowed now (and recorded), else the ms until the caller's start.
local now = redis_now_ms()
local interval = tonumber(ARGV[2]) / tonumber(ARGV[1])
local burst = tonumber(ARGV[3])
local reserve = ARGV[4] == '1'

local function gcra(key)
  local tat = tonumber(redis.call('GET', key) or '0')
  if tat < now then tat = now end
  return tat + interval, tat + interval - burst * interval - now
end
local function store(key, tat)
  redis.call('SET', key, string.format('%.3f', tat), 'PX', math.max(1, math.ceil(tat - now)))
end

local new_tat, wait = gcra(KEYS[1])
if not reserve then
  -- Stored times carry 3 decimals; ignore what is below that.
  if wait > 0.001 then return math.ceil(wait - 0.001) end
  store(KEYS[1], new_tat)
  return 0
end

redis.call('ZREMRANGEBYSCORE', KEYS[2], '-inf', now - tonumber(ARGV[6]))
local began_tat, began_wait = gcra(KEYS[3])
if wait <= 0.001 and began_wait <= 0.001 and redis.call('ZCARD', KEYS[2]) == 0 then
  store(KEYS[1], new_tat)
  store(KEYS[3], began_tat)
  return 0
end
wait = math.max(math.ceil(wait - 0.001), 1)
store(KEYS[1], new_tat)
redis.call('ZADD', KEYS[2], string.format('%.3f', now + wait), ARGV[5])
local ttl = math.ceil(wait + tonumber(ARGV[6]))
if redis.call('PTTL', KEYS[2]) < ttl then redis.call('PEXPIRE', KEYS[2], ttl) end
return wait
