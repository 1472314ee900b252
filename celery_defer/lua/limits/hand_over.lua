-- Handing free slots to a concurrency line, pasted into concurrency_release and
-- concurrency_restart (--#include limits/hand_over).
-- While the key has fewer live holders than `limit`, the head of the line (a list
-- of run ids) takes a slot, held for it for `lease_ms`, and its kept message (the
-- parked hash) is appended to `sent` after its id, for the caller to publish. A
-- head with no kept message left the line already and is skipped.
local function hand_over(holders, line, parked, limit, now, lease_ms, sent)
  while limit - redis.call('ZCARD', holders) > 0 do
    local head = redis.call('LPOP', line)
    if not head then break end
    local message = redis.call('HGET', parked, head)
    if message then
      redis.call('ZADD', holders, string.format('%.3f', now + lease_ms), head)
      if redis.call('PTTL', holders) < lease_ms then redis.call('PEXPIRE', holders, lease_ms) end
      table.insert(sent, head)
      table.insert(sent, message)
    end
  end
  return sent
end
