-- Restart a line whose head was lost (recovery): slots are free, runs parked.
-- KEYS[1] holders (zset), KEYS[5] line (list), KEYS[6] parked (hash), as in
-- concurrency_acquire.lua (KEYS[2..4] unused, passed for one key layout)
-- ARGV: limit, lease_ms
-- A parked run neither in the line nor holding a slot lost its hand-over (the
-- worker that should have sent it died, or the send failed, and the slot's
-- lease ran out): it goes back to the head of the line. Then free slots are
-- handed to the head of the line, as a release does.
-- Returns {runs still parked, run id, message, ...}: those to send.
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
while limit - redis.call('ZCARD', KEYS[1]) > 0 do
  local head = redis.call('LPOP', KEYS[5])
  if not head then break end
  local message = redis.call('HGET', KEYS[6], head)
  if message then
    redis.call('ZADD', KEYS[1], string.format('%.3f', now + lease_ms), head)
    if redis.call('PTTL', KEYS[1]) < lease_ms then redis.call('PEXPIRE', KEYS[1], lease_ms) end
    table.insert(reply, head)
    table.insert(reply, message)
  end
end
reply[1] = redis.call('HLEN', KEYS[6])
return reply
