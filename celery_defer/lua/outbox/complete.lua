-- The records ARGV[2..] (defer ids) of run ARGV[1] were published: forget them.
-- A record that came in since the run's records were read stays, and so does the
-- run in the finalized index: a recovery pass sends it. Once nothing is left the
-- run leaves both indexes.
-- KEYS[1] outbox hash, KEYS[2] finalized zset, KEYS[3] attempts zset (both of the run's shard)
-- Returns how many records are left.
--#include outbox/in_pieces
call_in_pieces('HDEL', KEYS[1], ARGV, 2)
local left = redis.call('HLEN', KEYS[1])
if left == 0 then
  redis.call('ZREM', KEYS[2], ARGV[1])
  redis.call('ZREM', KEYS[3], ARGV[1])
end
return left
