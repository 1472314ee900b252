-- Take a concurrency slot, or wait for one: parked in the key's line (with a
-- parcel) or in the polled FIFO queue (without one).
-- KEYS[1] holders  zset: holder -> lease expiry (ms)
-- KEYS[2] waiters  zset: holder -> first arrival (ms), the polled queue
-- KEYS[3] seen     zset: holder -> last seen (ms), to prune waiters that went away
-- KEYS[4] avg      string: EWMA of run durations (ms), read only here
-- KEYS[5] line     list: parked run ids, first come first
-- KEYS[6] parked   hash: parked run id -> the message that starts it (JSON)
-- KEYS[7] handed   zset: run id -> when it was given its slot (ms), not begun yet
-- ARGV: holder, limit, lease_ms, waiter_ttl_ms, parcel ('' = queue and poll),
--       park_ttl_ms, patience_ms (how long a run given a slot is waited for)
-- A parked run stays in KEYS[6] until it arrives holding the slot handed to it:
-- one that is in KEYS[6], neither in the line nor holding, lost its hand-over
-- (its slot's lease ran out first) and goes back to the head of the line.
-- A run given a slot (handed one in the line, or taking a free one) begins in
-- the order runs were given one: a caller that finds a run given a slot before
-- it, less than patience_ms ago, that has not begun (taken its slot here) yet
-- stays among the handed runs, so that runs behind it wait too, and waits its
-- turn (concurrency_turn.lua).
-- Returns {acquired 0|1, rank (waiters ahead), avg run ms or false, parked 0|1,
-- the caller's hand-over time (ms) when it waits its turn, else '',
-- run id, message, run id, message, ...}: the parked runs this call handed a
-- free slot to, which the caller sends.
--#include limits/hand_over
local now = redis_now_ms()
local holder = ARGV[1]
local limit = tonumber(ARGV[2])
local lease_ms = tonumber(ARGV[3])
local waiter_ttl_ms = tonumber(ARGV[4])
local parcel = ARGV[5]
local park_ttl_ms = tonumber(ARGV[6])
local patience_ms = tonumber(ARGV[7])

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

-- Whether a run given a slot before the caller has not begun yet: then the
-- caller's hand-over time, and it stays among the handed runs until its turn.
-- A caller more than patience_ms late for its own hand-over goes at once.
local function turn()
  local mine = redis.call('ZSCORE', KEYS[7], holder)
  redis.call('ZREMRANGEBYSCORE', KEYS[7], '-inf', fmt(now - patience_ms))
  local first = redis.call('ZRANGE', KEYS[7], 0, 0)[1]
  if not first or first == holder then
    if first then redis.call('ZREM', KEYS[7], holder) end
    return ''
  end
  if not mine then return mark_handed(KEYS[7], holder, now, lease_ms) end
  if tonumber(mine) <= now - patience_ms then return '' end
  return mine
end

local function hold()
  redis.call('ZADD', KEYS[1], fmt(now + lease_ms), holder)
  extend_ttl(KEYS[1], lease_ms)
  redis.call('ZREM', KEYS[2], holder)
  redis.call('ZREM', KEYS[3], holder)
  redis.call('HDEL', KEYS[6], holder)
  return {1, 0, avg, 0, turn()}
end

if redis.call('ZSCORE', KEYS[1], holder) then return hold() end

local reply = {0, 0, avg, 0, ''}
if redis.call('HEXISTS', KEYS[6], holder) == 1 and not redis.call('LPOS', KEYS[5], holder) then
  redis.call('LPUSH', KEYS[5], holder) -- its hand-over was lost: first in line again
end
-- Free slots go to the head of the line first (a holder's lease ran out).
local _, me = hand_over(KEYS[1], KEYS[5], KEYS[6], KEYS[7], limit, now, lease_ms, reply, holder)
local function answer(result)
  for i = 6, #reply do table.insert(result, reply[i]) end
  return result
end
if me then return answer(hold()) end

local free = limit - redis.call('ZCARD', KEYS[1])
if parcel ~= '' then
  if free > 0 and redis.call('LLEN', KEYS[5]) == 0 then return answer(hold()) end
  if redis.call('HEXISTS', KEYS[6], holder) == 0 then
    redis.call('RPUSH', KEYS[5], holder)
  end
  redis.call('HSET', KEYS[6], holder, parcel)
  extend_ttl(KEYS[5], park_ttl_ms)
  extend_ttl(KEYS[6], park_ttl_ms)
  reply[2] = redis.call('LPOS', KEYS[5], holder) or 0
  reply[4] = 1
  return reply
end

if free > 0 then
  -- A newcomer queues behind every live waiter.
  local rank = redis.call('ZRANK', KEYS[2], holder) or redis.call('ZCARD', KEYS[2])
  if rank < free then return answer(hold()) end
end

redis.call('ZADD', KEYS[2], 'NX', fmt(now), holder)
redis.call('ZADD', KEYS[3], fmt(now), holder)
extend_ttl(KEYS[2], waiter_ttl_ms)
extend_ttl(KEYS[3], waiter_ttl_ms)
reply[2] = redis.call('ZRANK', KEYS[2], holder)
return reply
