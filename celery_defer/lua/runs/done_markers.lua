-- Done markers, pasted into the run scripts (--#include runs/done_markers).
-- A bucket is a string of fixed-width entries: a run's marker (20 hex digits,
-- 80 bits of a hash of its run id) then its outcome code (one letter, never a
-- hex digit). One bucket key per generation of the done ttl: markers go into
-- the current one and are looked up in it and the one before; a generation's
-- key expires once two generations have begun since it did, so a marker is
-- kept at least the done ttl and at most twice it.
local DONE_ENTRY = 21

-- The generation now: Redis time in whole done ttls (now_ms: Redis time already read, if any).
local function done_generation(ttl_s, now_ms)
  return math.floor((now_ms or redis_now_ms()) / 1000 / ttl_s)
end

-- The outcome code of marker in bucket, or nil.
local function done_lookup(bucket, marker)
  local entries = redis.call('GET', bucket)
  if not entries then
    return nil
  end
  local from = 1
  while true do
    local at = string.find(entries, marker, from, true)
    if not at then
      return nil
    end
    if at % DONE_ENTRY == 1 then
      return string.sub(entries, at + DONE_ENTRY - 1, at + DONE_ENTRY - 1)
    end
    from = at + 1
  end
end

-- Add marker with its outcome code to bucket of generation, unless it is there.
local function done_write(bucket, marker, code, generation, ttl_s)
  if done_lookup(bucket, marker) then
    return
  end
  redis.call('APPEND', bucket, marker .. code)
  redis.call('PEXPIREAT', bucket, math.floor((generation + 2) * ttl_s * 1000))
end
