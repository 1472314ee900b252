-- Claim a deferred run before its handler starts.
-- KEYS[1] claim key, KEYS[2] done key
-- ARGV[1] holder token, ARGV[2] lease ms, ARGV[3] the attempt number of this message
-- The claim holds a live holder's token, or 'retry:<n>' while the run waits for
-- its attempt n: only a message of attempt n or later may take it then, so a
-- stray copy of an earlier attempt cannot start a second chain of retries.
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
return {'ok'}
