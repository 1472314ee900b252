-- Hand a deferred run's claim over to its next attempt before that attempt is sent.
-- KEYS[1] claim key; ARGV[1] holder token, ARGV[2] next attempt, ARGV[3] ttl ms
if redis.call('GET', KEYS[1]) == ARGV[1] then
  redis.call('SET', KEYS[1], 'retry:' .. ARGV[2], 'PX', tonumber(ARGV[3]))
  return 1
end
return 0
