-- settle.lua sets a call's debited total to exactly its billed seconds,
-- removes it from the live set and stores its CDR (SPEC §5).
-- KEYS: 1 project, 2 thresholds, 3 call, 4 live, 5 ledger, 6 cdr hash, 7 recent zset
-- ARGV: 1 call key, 2 node, 3 channel, 4 answered_ms, 5 billed, 6 estimated (0|1),
--       7 now_ms, 8 maxlen, 9 ttl_ms, 10 cdr json, 11 ended_ms, 12 cdr max
-- Returns {status, applied, balance, delta, billed, crossings}.
if redis.call('EXISTS', KEYS[1]) == 0 then return {'noproject'} end
local bal = tonumber(redis.call('HGET', KEYS[1], 'balance'))
local c = redis.call('HMGET', KEYS[3], 'settled', 'estimated', 'corrected', 'debited', 'exhausted', 'xs')
local debited = tonumber(c[4])
local correction = false
if not debited then
  snapshot(KEYS[1], KEYS[3], ARGV[2], ARGV[3], ARGV[4])
  debited = 0
elseif c[1] == '1' then
  if c[2] == '1' and c[3] ~= '1' and ARGV[6] == '0' then
    correction = true
  else
    return {'replay', 0, bal, 0, debited, c[6] or ''}
  end
end
local billed = tonumber(ARGV[5])
-- an exhausted call was hung up at a block it could not pay: never bill
-- more than what was covered before.
if c[5] == '1' and billed > debited then billed = debited end
local delta = billed - debited
local new, cross = bal, ''
if delta ~= 0 then
  new = redis.call('HINCRBY', KEYS[1], 'balance', -delta)
  local kind = 'debit'
  if delta < 0 then kind = 'refund' end
  entry(KEYS[5], ARGV[8], ARGV[7], kind, -delta, new, ARGV[1], -1, '')
  cross = thresholds(KEYS[1], KEYS[2], bal, new)
end
redis.call('HSET', KEYS[3], 'debited', int(billed), 'settled', 1, 'estimated', ARGV[6],
  'ended', ARGV[11], 'xs', cross)
if correction then redis.call('HSET', KEYS[3], 'corrected', 1) end
redis.call('ZREM', KEYS[4], ARGV[1])
redis.call('PEXPIRE', KEYS[3], ARGV[9])
local cdr = string.gsub(ARGV[10], '"billed_seconds":%-?%d+', '"billed_seconds":' .. int(billed), 1)
redis.call('HSET', KEYS[6], ARGV[1], cdr)
redis.call('ZADD', KEYS[7], ARGV[11], ARGV[1])
local over = redis.call('ZCARD', KEYS[7]) - tonumber(ARGV[12])
if over > 0 then
  local old = redis.call('ZRANGE', KEYS[7], 0, over - 1)
  redis.call('HDEL', KEYS[6], unpack(old))
  redis.call('ZREMRANGEBYRANK', KEYS[7], 0, over - 1)
end
return {'ok', 1, new, delta, billed, cross}
