-- Take the singleton lock of a key in mode cancel, without ever sharing it.
-- KEYS[1] string: holder, expiring with its lease
-- KEYS[2] string: the holder already asked to stop, so it is asked once
-- ARGV: holder, lease_ms
-- Returns {1, '', 0} when the caller holds the lock now (it was free or its own);
-- else {0, the live holder, 1 the first time that holder is to be asked to stop}.
local other = redis.call('GET', KEYS[1])
if not other or other == ARGV[1] then
  redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2])
  return {1, '', 0}
end
if redis.call('GET', KEYS[2]) == other then
  return {0, other, 0}
end
redis.call('SET', KEYS[2], other, 'PX', ARGV[2])
return {0, other, 1}
