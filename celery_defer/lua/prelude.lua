-- Prepended to every script by celery_defer.redis_io: the one clock of the library.
-- Every host reads time from Redis, so leases and waits agree across workers.
-- Writes after TIME need effects replication before Redis 5 (a no-op since).
pcall(redis.replicate_commands)
-- Redis TIME as the server gives it: {seconds, microseconds} (strings).
local function redis_time()
  return redis.call('TIME')
end
local function redis_now_ms()
  local t = redis_time()
  return tonumber(t[1]) * 1000 + tonumber(t[2]) / 1000
end
