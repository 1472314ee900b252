-- Take up to ARGV[1] finalized runs whose dispatch is overdue, pushing each one's
-- due time ARGV[2] ms ahead so that no other recovery pass takes it meanwhile.
-- KEYS[1] finalized zset. Returns the run ids taken.
local now_ms = math.floor(redis_now_ms())
local due = redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', now_ms, 'LIMIT', 0, tonumber(ARGV[1]))
for _, run_id in ipairs(due) do
  redis.call('ZADD', KEYS[1], now_ms + tonumber(ARGV[2]), run_id)
end
return due
