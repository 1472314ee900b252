-- Claim a deferred run before its handler starts.
-- KEYS[1] claim key, KEYS[2] done key; ARGV[1] holder token, ARGV[2] lease ms
-- Returns {'done', outcome} for a run that already finalized, {'busy', pttl} when
-- another live holder has it, {'ok'} when this holder now has it.
local outcome = redis.call('GET', KEYS[2])
if outcome then
  return {'done', outcome}
end
local holder = redis.call('GET', KEYS[1])
if holder and holder ~= ARGV[1] then
  return {'busy', tostring(redis.call('PTTL', KEYS[1]))}
end
redis.call('SET', KEYS[1], ARGV[1], 'PX', tonumber(ARGV[2]))
return {'ok'}
