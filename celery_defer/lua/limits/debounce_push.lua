-- Make an event the latest of its debounce key.
-- KEYS[1] hash: event, payload, order, first (ms), last (ms)
-- ARGV: event_id, payload, period_ms, timeout_ms ('' for none), grace_ms, order
-- An event whose order (when it was deferred) is below the stored one arrived
-- late: it does not replace the latest, and checks back at once (superseded).
-- Returns the ms from now at which the event should check back.
local now = redis_now_ms()
local period_ms = tonumber(ARGV[3])
local timeout_ms = tonumber(ARGV[4])

local order = tonumber(ARGV[6])
local stored_order = tonumber(redis.call('HGET', KEYS[1], 'order') or '')
if stored_order and order < stored_order then
  return 0
end
local first = tonumber(redis.call('HGET', KEYS[1], 'first') or '') or now
local wait = period_ms
if timeout_ms then wait = math.min(wait, first + timeout_ms - now) end
if wait < 0 then wait = 0 end
redis.call('HSET', KEYS[1], 'event', ARGV[1], 'payload', ARGV[2], 'order', ARGV[6],
  'first', string.format('%.3f', first), 'last', string.format('%.3f', now))
-- The grace keeps the state for a check-back that arrives late.
redis.call('PEXPIRE', KEYS[1], math.ceil(wait + tonumber(ARGV[5])))
return math.ceil(wait)
