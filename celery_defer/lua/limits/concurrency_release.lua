-- Give a concurrency slot back (or leave the wait queue) and record the run time.
-- KEYS[1] holders, KEYS[2] waiters, KEYS[3] seen (zsets), KEYS[4] avg (string, ms)
-- ARGV: holder, run_ms ('' when unknown), ewma alpha, avg_ttl_ms
redis.call('ZREM', KEYS[1], ARGV[1])
redis.call('ZREM', KEYS[2], ARGV[1])
redis.call('ZREM', KEYS[3], ARGV[1])
if ARGV[2] ~= '' then
  local run_ms = tonumber(ARGV[2])
  local alpha = tonumber(ARGV[3])
  local old = redis.call('GET', KEYS[4])
  local avg = run_ms
  if old then avg = alpha * run_ms + (1 - alpha) * tonumber(old) end
  redis.call('SET', KEYS[4], string.format('%.3f', avg), 'PX', ARGV[4])
end
return 1
