-- Give back a claim of a key, if this holder still has it (its run was dropped).
-- KEYS[1] string: holder; ARGV: holder ('' never matches)
if ARGV[1] == '' or redis.call('GET', KEYS[1]) ~= ARGV[1] then return 0 end
redis.call('DEL', KEYS[1])
return 1
