-- Decide what a debounced event does when it checks back.
-- KEYS[1] hash: event, payload, first (ms), last (ms)
-- ARGV: event_id, period_ms, timeout_ms ('' for none)
-- Returns {'run', payload, 0} (state deleted), {'wait', nil, ms} or {'superseded', nil, 0}.
pcall(redis.replicate_commands) -- Redis 6.2: allow writes after TIME
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + tonumber(t[2]) / 1000
local period_ms = tonumber(ARGV[2])
local timeout_ms = tonumber(ARGV[3])

local state = redis.call('HMGET', KEYS[1], 'event', 'payload', 'first', 'last')
if state[1] ~= ARGV[1] then return {'superseded', false, 0} end
local due = tonumber(state[4]) + period_ms
if timeout_ms then due = math.min(due, tonumber(state[3]) + timeout_ms) end
if due - now > 0.001 then return {'wait', false, math.ceil(due - now - 0.001)} end
redis.call('DEL', KEYS[1])
return {'run', state[2], 0}
