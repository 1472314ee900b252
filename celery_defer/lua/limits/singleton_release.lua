-- Drop a singleton lock if still held by this holder (a canceller may own it now).
-- KEYS[1] string: holder; ARGV: holder
if redis.call('GET', KEYS[1]) ~= ARGV[1] then return 0 end
redis.call('DEL', KEYS[1])
return 1
