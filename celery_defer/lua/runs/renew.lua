-- Extend the lease of a deferred run's claim while its handler runs.
-- KEYS[1] claim key; ARGV[1] holder token, ARGV[2] lease ms. Returns 1 if still held.
if redis.call('GET', KEYS[1]) == ARGV[1] then
  redis.call('PEXPIRE', KEYS[1], tonumber(ARGV[2]))
  return 1
end
return 0
