-- Handing free slots to a concurrency line, pasted into concurrency_acquire,
-- concurrency_release and concurrency_restart (--#include limits/hand_over).
-- `handed` (a zset: run id -> when it was given its slot, ms) keeps the runs
-- given a slot that have not begun yet, in the order they were given one
-- (strictly increasing scores), for concurrency_turn.lua; entries go after
-- `lease_ms` unwritten, and are ignored `patience` ms after they were given.
local function mark_handed(handed, id, now, lease_ms)
  local at = now
  local last = redis.call('ZREVRANGE', handed, 0, 0, 'WITHSCORES')
  if last[2] and tonumber(last[2]) + 0.001 > at then at = tonumber(last[2]) + 0.001 end
  local text = string.format('%.3f', at)
  redis.call('ZADD', handed, text, id)
  if redis.call('PTTL', handed) < lease_ms then redis.call('PEXPIRE', handed, lease_ms) end
  return text
end

-- While the key has fewer live holders than `limit`, the head of the line (a list
-- of run ids) takes a slot, held for it for `lease_ms`, and its kept message (the
-- parked hash) is appended to `sent` after its id, for the caller to publish. A
-- head with no kept message left the line already and is skipped. When the head
-- is `stop_at` (the calling run itself, taken off the line) handing stops there.
-- Returns `sent`, and whether it stopped at `stop_at`.
local function hand_over(holders, line, parked, handed, limit, now, lease_ms, sent, stop_at)
  while limit - redis.call('ZCARD', holders) > 0 do
    local head = redis.call('LPOP', line)
    if not head then break end
    if head == stop_at then return sent, true end
    local message = redis.call('HGET', parked, head)
    if message then
      redis.call('ZADD', holders, string.format('%.3f', now + lease_ms), head)
      if redis.call('PTTL', holders) < lease_ms then redis.call('PEXPIRE', holders, lease_ms) end
      mark_handed(handed, head, now, lease_ms)
      table.insert(sent, head)
      table.insert(sent, message)
    end
  end
  return sent, false
end
