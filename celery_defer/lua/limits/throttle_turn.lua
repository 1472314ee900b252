-- A booked run's start came: is it still behind a run booked before it?
-- KEYS[1] hash: runs -> the actual start kept for them (ms), as in
-- throttle_begin.lua, the caller among them
-- ARGV: holder (run id), start (ms, the caller's, from throttle_begin.lua),
--       patience_ms, poll_ms
-- A run kept a start before the caller's that has not begun (or, waiting its
-- own turn, started) yet is waited for, until patience_ms after its kept start:
-- its message may be a moment behind (another pool process, the broker's
-- order); one that does not come by then has gone away, and no run waits for
-- it any longer (its kept start is dropped, so that no later run asks about
-- it). When the caller's turn comes it leaves the kept starts.
-- Returns the ms to wait before asking again (0: the caller's turn).
local now = redis_now_ms()
local start = tonumber(ARGV[2])
local patience = tonumber(ARGV[3])
local until_ms = 0
local kept = redis.call('HGETALL', KEYS[1])
for i = 1, #kept, 2 do
  local at = tonumber(kept[i + 1])
  if at < start - 0.001 then
    if at + patience > now then
      until_ms = math.max(until_ms, at + patience)
    else
      redis.call('HDEL', KEYS[1], kept[i])
    end
  end
end
if until_ms == 0 then
  redis.call('HDEL', KEYS[1], ARGV[1])
  return 0
end
return math.max(1, math.min(tonumber(ARGV[4]), math.ceil(until_ms - now)))
