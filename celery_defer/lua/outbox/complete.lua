-- The records ARGV[2..] (defer ids) of run ARGV[1] were published: forget them.
-- A record that came in since the run's records were read stays, and so does the
-- run in the finalized index: a recovery pass sends it. Once nothing is left the
-- run leaves both indexes.
-- KEYS[1] outbox hash, KEYS[2] finalized zset, KEYS[3] attempts zset (both of the run's shard)
-- Returns how many records are left.
-- In pieces: unpack() puts every value on Lua's C stack, which holds ~8000.
for at = 2, #ARGV, 4000 do
  redis.call('HDEL', KEYS[1], unpack(ARGV, at, math.min(at + 3999, #ARGV)))
end
local left = redis.call('HLEN', KEYS[1])
if left == 0 then
  redis.call('ZREM', KEYS[2], ARGV[1])
  redis.call('ZREM', KEYS[3], ARGV[1])
end
return left
