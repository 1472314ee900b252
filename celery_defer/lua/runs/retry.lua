-- Hand a deferred run's claim over to its next attempt before that attempt is sent.
-- KEYS[1] claim key, KEYS[2] inflight zset, KEYS[3] resend key
-- ARGV[1] holder token, ARGV[2] next attempt, ARGV[3] ttl ms, ARGV[4] run id,
-- ARGV[5] the message of the next attempt (JSON, '' to keep the one kept), ARGV[6] its ttl s
-- Until the ttl runs out the run stays in flight: if the next attempt has not
-- claimed it by then, a recovery pass sends that message.
if redis.call('GET', KEYS[1]) == ARGV[1] then
  redis.call('SET', KEYS[1], 'retry:' .. ARGV[2], 'PX', tonumber(ARGV[3]))
  redis.call('ZADD', KEYS[2], math.floor(redis_now_ms()) + tonumber(ARGV[3]), ARGV[4])
  if ARGV[5] ~= '' then
    redis.call('SET', KEYS[3], ARGV[5], 'EX', tonumber(ARGV[6]))
  end
  return 1
end
return 0
