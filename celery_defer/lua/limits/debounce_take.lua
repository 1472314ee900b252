-- Decide what a debounced event does when it checks back.
-- KEYS[1] hash: event, payload, first (ms), last (ms)
-- ARGV: event_id, period_ms, timeout_ms ('' for none)
-- Returns {'run', payload, 0} (state deleted), {'wait', nil, ms} or {'superseded', nil, 0}.
local now = redis_now_ms()
local period_ms = tonumber(ARGV[2])
local timeout_ms = tonumber(ARGV[3])

local state = redis.call('HMGET', KEYS[1], 'event', 'payload', 'first', 'last')
if state[1] ~= ARGV[1] then return {'superseded', false, 0} end
local due = tonumber(state[4]) + period_ms
if timeout_ms then due = math.min(due, tonumber(state[3]) + timeout_ms) end
if due - now > 0.001 then return {'wait', false, math.ceil(due - now - 0.001)} end
redis.call('DEL', KEYS[1])
return {'run', state[2], 0}
