-- Take the singleton lock of a key.
-- KEYS[1] string: holder, expiring with its lease
-- ARGV: holder, lease_ms, mode ('skip' or 'cancel')
-- Returns {acquired 0|1, the other live holder or nil}.
local other = redis.call('GET', KEYS[1])
if other == ARGV[1] then other = false end
if other and ARGV[3] == 'skip' then return {0, other} end
redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2])
return {1, other}
