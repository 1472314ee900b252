-- A booked run begins: leave the bookings, and take its actual start.
-- KEYS[1] zset: booked runs -> start time (ms); KEYS[2] string: theoretical
-- arrival time of actual starts (ms), as in throttle_take.lua; KEYS[3] hash:
-- late booked runs -> the actual start kept for them (ms)
-- ARGV: limit, period_ms, burst, holder (run id), slots_ttl_ms
-- A run delivered on time begins at once. Runs delivered late (behind a backlog
-- in the broker's queue) arrive bunched, and not always in the order they were
-- booked: a late run keeps, before its own, the next starts the pace allows for
-- every run booked before it that has not begun yet, so late runs start in the
-- order they first asked and the pace holds for actual starts too.
-- Returns {ms the caller waits before it starts (0: at once), its start (ms)
-- when a run kept a start before it has not begun yet, else ''}: with a start,
-- the caller then waits its turn (throttle_turn.lua) for such runs, a while,
-- and stays among the kept starts meanwhile, so that runs behind it wait too.
local now = redis_now_ms()
local interval = tonumber(ARGV[2]) / tonumber(ARGV[1])
local burst = tonumber(ARGV[3])
local holder = ARGV[4]

-- Whether a run kept a start before ``start`` has not begun yet: then the
-- caller's own start is kept too, until its turn comes.
local function behind_kept(start)
  for _, at in ipairs(redis.call('HVALS', KEYS[3])) do
    if tonumber(at) < start - 0.001 then
      local text = string.format('%.3f', start)
      redis.call('HSET', KEYS[3], holder, text)
      redis.call('PEXPIRE', KEYS[3], tonumber(ARGV[5]))
      return text
    end
  end
  return ''
end

local kept = redis.call('HGET', KEYS[3], holder)
if kept then
  redis.call('HDEL', KEYS[3], holder)
  redis.call('ZREM', KEYS[1], holder)
  return {math.max(0, math.ceil(tonumber(kept) - now - 0.001)), behind_kept(tonumber(kept))}
end

local tat = tonumber(redis.call('GET', KEYS[2]) or '0')
if tat < now then tat = now end
local mine = redis.call('ZSCORE', KEYS[1], holder)
redis.call('ZREM', KEYS[1], holder)
if mine then
  for _, before in ipairs(redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', '(' .. mine)) do
    tat = tat + interval
    redis.call('HSET', KEYS[3], before, string.format('%.3f', tat - burst * interval))
    redis.call('ZREM', KEYS[1], before)
  end
  if redis.call('EXISTS', KEYS[3]) == 1 then redis.call('PEXPIRE', KEYS[3], tonumber(ARGV[5])) end
end
local new_tat = tat + interval
redis.call('SET', KEYS[2], string.format('%.3f', new_tat), 'PX', math.max(1, math.ceil(new_tat - now)))
local start = new_tat - burst * interval
local wait = start - now
if wait > 0.001 then return {math.ceil(wait - 0.001), behind_kept(start)} end
return {0, behind_kept(now)}
