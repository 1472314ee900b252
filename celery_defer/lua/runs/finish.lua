-- End a deferred run's attempt.
-- KEYS[1] claim key, KEYS[2] done key, KEYS[3] inflight zset, KEYS[4] resend key
-- ARGV[1] holder token, ARGV[2] outcome ('' when the run will retry), ARGV[3] done ttl s,
-- ARGV[4] run id
if ARGV[2] ~= '' then
  redis.call('SET', KEYS[2], ARGV[2], 'EX', tonumber(ARGV[3]))
  redis.call('ZREM', KEYS[3], ARGV[4])
  redis.call('DEL', KEYS[4])
end
if redis.call('GET', KEYS[1]) == ARGV[1] then
  redis.call('DEL', KEYS[1])
end
return 1
