-- Commands over many values, pasted into the outbox scripts (--#include outbox/in_pieces).
-- unpack() puts every value it returns on Lua's C stack, which holds ~8000: so a
-- command takes 4000 values at the most (even, so field-value pairs stay together).
local function call_in_pieces(command, key, values, first)
  for at = first, #values, 4000 do
    redis.call(command, key, unpack(values, at, math.min(at + 3999, #values)))
  end
end
