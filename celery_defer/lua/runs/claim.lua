-- Claim a deferred run before its handler starts.
-- KEYS[1] claim key, KEYS[2] done key, KEYS[3] inflight zset, KEYS[4] resend key
-- ARGV[1] holder token, ARGV[2] lease ms, ARGV[3] the attempt number of this message,
-- ARGV[4] run id, ARGV[5] the message that starts this attempt again (JSON),
-- ARGV[6] its ttl s
-- The claim holds a live holder's token, or 'retry:<n>' while the run waits for
-- its attempt n: only a message of attempt n or later may take it then, so a
-- stray copy of an earlier attempt cannot start a second chain of retries.
-- A claimed run is in flight until it finishes: if its claim lapses first (its
-- worker died), a recovery pass sends the kept message again.
-- Returns {'done', outcome} for a run that already finalized, {'busy', pttl} when
-- someone else has it, {'ok'} when this holder now has it.
local outcome = redis.call('GET', KEYS[2])
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
redis.call('ZADD', KEYS[3], math.floor(redis_now_ms()) + tonumber(ARGV[2]), ARGV[4])
redis.call('SET', KEYS[4], ARGV[5], 'EX', tonumber(ARGV[6]))
return {'ok'}
