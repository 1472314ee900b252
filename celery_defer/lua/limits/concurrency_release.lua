-- Give a concurrency slot back (or leave the queue or line), record the run
-- time, and hand free slots to the head of the line.
-- KEYS[1] holders, KEYS[2] waiters, KEYS[3] seen (zsets), KEYS[4] avg (string, ms),
-- KEYS[5] line (list), KEYS[6] parked (hash), KEYS[7] handed (zset), as in
-- concurrency_acquire.lua
-- ARGV: holder, run_ms ('' when unknown), ewma alpha, avg_ttl_ms, limit, lease_ms
-- Returns {run id, message, ...}: the parked runs handed a slot, which the caller
-- sends; the slot is theirs for lease_ms, so no newcomer takes it meanwhile.
--#include limits/hand_over
local now = redis_now_ms()
local limit = tonumber(ARGV[5])
local lease_ms = tonumber(ARGV[6])
redis.call('ZREM', KEYS[1], ARGV[1])
redis.call('ZREM', KEYS[2], ARGV[1])
redis.call('ZREM', KEYS[3], ARGV[1])
redis.call('ZREM', KEYS[7], ARGV[1])
if redis.call('HDEL', KEYS[6], ARGV[1]) == 1 then
  redis.call('LREM', KEYS[5], 0, ARGV[1])
end
if ARGV[2] ~= '' then
  local run_ms = tonumber(ARGV[2])
  local alpha = tonumber(ARGV[3])
  local old = redis.call('GET', KEYS[4])
  local avg = run_ms
  if old then avg = alpha * run_ms + (1 - alpha) * tonumber(old) end
  redis.call('SET', KEYS[4], string.format('%.3f', avg), 'PX', ARGV[4])
end
local sent = {}
if limit < 1 then return sent end
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', string.format('%.3f', now))
hand_over(KEYS[1], KEYS[5], KEYS[6], KEYS[7], limit, now, lease_ms, sent)
return sent
