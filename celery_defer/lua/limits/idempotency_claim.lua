-- Claim a key once for ttl_ms; the same holder may claim it again.
-- KEYS[1] string: holder
-- ARGV: holder ('' for anonymous claims, which never match), ttl_ms
-- Returns 1 when claimed (now or earlier by this holder), else 0.
if redis.call('SET', KEYS[1], ARGV[1], 'NX', 'PX', ARGV[2]) then return 1 end
if ARGV[1] ~= '' and redis.call('GET', KEYS[1]) == ARGV[1] then return 1 end
return 0
