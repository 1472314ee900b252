-- Note a line with parked runs in the index recovery passes go through.
-- KEYS[1] index zset: "<limit>:<lease ms>:<guard key>" -> when a run last parked (ms)
-- ARGV: member, ttl_ms (of the index, extended, never shortened)
-- Idempotent, and apart from the guard's own script: it touches only the index.
redis.call('ZADD', KEYS[1], math.floor(redis_now_ms()), ARGV[1])
if redis.call('PTTL', KEYS[1]) < tonumber(ARGV[2]) then
  redis.call('PEXPIRE', KEYS[1], tonumber(ARGV[2]))
end
return 1
