-- Restart a line whose head was lost (recovery): slots are free, runs parked.
-- KEYS[1] holders (zset), KEYS[5] line (list), KEYS[6] parked (hash), KEYS[7]
-- handed (zset), as in concurrency_acquire.lua (KEYS[2..4] unused, passed for
-- one key layout)
-- ARGV: limit, lease_ms
-- A parked run neither in the line nor holding a slot lost its hand-over (the
-- worker that should have sent it died, or the send failed, and the slot's
-- lease ran out): it goes back to the head of the line. Then free slots are
-- handed to the head of the line, as a release does.
-- Returns {runs still parked, run id, message, ...}: those to send.
--#include limits/hand_over
local now = redis_now_ms()
local limit = tonumber(ARGV[1])
local lease_ms = tonumber(ARGV[2])
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', string.format('%.3f', now))
local in_line = {}
for _, id in ipairs(redis.call('LRANGE', KEYS[5], 0, -1)) do in_line[id] = true end
for _, id in ipairs(redis.call('HKEYS', KEYS[6])) do
  if not in_line[id] and not redis.call('ZSCORE', KEYS[1], id) then
    redis.call('LPUSH', KEYS[5], id)
  end
end
local reply = {0}
hand_over(KEYS[1], KEYS[5], KEYS[6], KEYS[7], limit, now, lease_ms, reply)
reply[1] = redis.call('HLEN', KEYS[6])
return reply
