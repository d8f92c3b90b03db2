-- topup.lua applies a top-up or adjustment once per reference.
-- KEYS: 1 project, 2 thresholds, 3 refs, 4 ledger
-- ARGV: 1 seconds (signed), 2 reference, 3 kind, 4 now_ms, 5 maxlen
-- Returns {status, balance, record}; record = "kind seconds id at balance|crossings".
if redis.call('EXISTS', KEYS[1]) == 0 then return {'noproject'} end
local prev = redis.call('HGET', KEYS[3], ARGV[2])
if prev then
  return {'replay', tonumber(redis.call('HGET', KEYS[1], 'balance')), prev}
end
local old = tonumber(redis.call('HGET', KEYS[1], 'balance'))
local new = redis.call('HINCRBY', KEYS[1], 'balance', ARGV[1])
local id = entry(KEYS[4], ARGV[5], ARGV[4], ARGV[3], tonumber(ARGV[1]), new, '', -1, ARGV[2])
local cross = thresholds(KEYS[1], KEYS[2], old, new)
local rec = ARGV[3] .. ' ' .. ARGV[1] .. ' ' .. id .. ' ' .. ARGV[4] .. ' ' .. int(new) .. '|' .. cross
redis.call('HSET', KEYS[3], ARGV[2], rec)
return {'ok', new, rec}
