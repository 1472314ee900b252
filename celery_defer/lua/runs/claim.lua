-- Claim a deferred run before its handler starts.
-- KEYS[1] claim key, KEYS[2] inflight zset, KEYS[3] resend key,
-- KEYS[4] done bucket of the previous generation, KEYS[5] of the current one
-- ARGV[1] holder token, ARGV[2] lease ms, ARGV[3] the attempt number of this message,
-- ARGV[4] run id, ARGV[5] the message that starts this attempt again (JSON),
-- ARGV[6] its ttl s, ARGV[7] the run's done marker, ARGV[8] the generation of
-- KEYS[5], ARGV[9] done ttl s (the length of a generation)
-- The claim holds a live holder's token, or 'retry:<n>' while the run waits for
-- its attempt n: only a message of attempt n or later may take it then, so a
-- stray copy of an earlier attempt cannot start a second chain of retries.
-- A claimed run is in flight until it finishes: if its claim lapses first (its
-- worker died), a recovery pass sends the kept message again.
-- Returns {'done', outcome code} for a run that already finalized, {'busy', pttl}
-- when someone else has it, {'ok', seconds, microseconds} (Redis TIME) when this
-- holder now has it, and
-- {'generation', g} when KEYS[4..5] are not the buckets of now (call again for g).
--#include runs/done_markers
local time = redis_time()  -- read once: the generation, the lease, and the reply
local now_ms = tonumber(time[1]) * 1000 + tonumber(time[2]) / 1000
local generation = done_generation(tonumber(ARGV[9]), now_ms)
if generation ~= tonumber(ARGV[8]) then
  return {'generation', tostring(generation)}
end
local outcome = done_lookup(KEYS[5], ARGV[7]) or done_lookup(KEYS[4], ARGV[7])
if outcome then
  return {'done', outcome}
end
local holder = redis.call('GET', KEYS[1])
if holder and holder ~= ARGV[1] then
  local next_attempt = string.match(holder, '^retry:(%d+)$')
  if not (next_attempt and tonumber(ARGV[3]) >= tonumber(next_attempt)) then
    return {'busy', tostring(redis.call('PTTL', KEYS[1]))}
  end
end
redis.call('SET', KEYS[1], ARGV[1], 'PX', tonumber(ARGV[2]))
redis.call('ZADD', KEYS[2], math.floor(now_ms) + tonumber(ARGV[2]), ARGV[4])
redis.call('SET', KEYS[3], ARGV[5], 'EX', tonumber(ARGV[6]))
return {'ok', time[1], time[2]}
