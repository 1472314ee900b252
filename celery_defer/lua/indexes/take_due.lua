-- Take up to ARGV[1] members of an index zset whose time (ms) has come, pushing
-- each one's time ARGV[2] ms ahead so that no other recovery pass takes it
-- meanwhile (if this one dies, it is due again then).
-- KEYS[1] the index zset of one shard (finalized runs, leased attempts, runs in flight).
-- Returns the members taken.
local now_ms = math.floor(redis_now_ms())
local due = redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', now_ms, 'LIMIT', 0, tonumber(ARGV[1]))
for _, member in ipairs(due) do
  redis.call('ZADD', KEYS[1], now_ms + tonumber(ARGV[2]), member)
end
return due
