-- open.lua creates a call record with the project's current tariff and puts
-- it in the live set scored by the due time of block 0. An existing record
-- (live or settled) is returned unchanged.
-- KEYS: 1 project, 2 call, 3 live
-- ARGV: 1 node, 2 channel, 3 answered_ms, 4 call key (node/channel)
if redis.call('EXISTS', KEYS[2]) == 1 then
  return {'exists', redis.call('HGETALL', KEYS[2])}
end
if redis.call('EXISTS', KEYS[1]) == 0 then return {'noproject'} end
local due = snapshot(KEYS[1], KEYS[2], ARGV[1], ARGV[2], ARGV[3])
redis.call('ZADD', KEYS[3], int(due), ARGV[4])
return {'ok', redis.call('HGETALL', KEYS[2])}
