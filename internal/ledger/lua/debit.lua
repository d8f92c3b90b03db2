-- debit.lua brings a live call's debited total up to the total of block
-- ARGV[1], once per block (SPEC §5, §7, §8).
-- KEYS: 1 project, 2 thresholds, 3 call, 4 live, 5 ledger
-- ARGV: 1 block index, 2 block total, 3 now_ms, 4 maxlen, 5 call key
-- Returns {status, applied, balance, debited, exhausted, settled, crossings, overlimit}.
if redis.call('EXISTS', KEYS[1]) == 0 then return {'noproject'} end
local c = redis.call('HMGET', KEYS[3], 'next_block', 'debited', 'settled', 'exhausted', 'answered', 'cis')
if not c[1] then return {'nocall'} end
local bal = tonumber(redis.call('HGET', KEYS[1], 'balance'))
local nb, debited, idx = tonumber(c[1]), tonumber(c[2]), tonumber(ARGV[1])
local ex = 0
if c[4] == '1' then ex = 1 end
if c[3] == '1' then return {'settled', 0, bal, debited, ex, 1, '', 0} end
if idx < nb then
  return {'replay', 0, bal, debited, ex, 0, redis.call('HGET', KEYS[3], 'x:' .. idx) or '', 0}
end
local total = tonumber(ARGV[2])
local amount = math.max(total - debited, 0)
local p = redis.call('HMGET', KEYS[1], 'policy', 'credit')
local credit = tonumber(p[2]) or 0
if amount > 0 and p[1] == 'hangup' and bal - amount < -credit then
  -- refused: the call stays at this block, marked exhausted (applied the
  -- first time only); a retry after a top-up may still cover it.
  if ex == 1 then return {'exhausted', 0, bal, debited, 1, 0, '', 0} end
  redis.call('HSET', KEYS[3], 'exhausted', 1)
  return {'exhausted', 1, bal, debited, 1, 0, '', 0}
end
if ex == 1 then redis.call('HDEL', KEYS[3], 'exhausted') end
local new, cross = bal, ''
if amount > 0 then
  new = redis.call('HINCRBY', KEYS[1], 'balance', -amount)
  debited = redis.call('HINCRBY', KEYS[3], 'debited', amount)
  entry(KEYS[5], ARGV[4], ARGV[3], 'debit', -amount, new, ARGV[5], idx, '')
  cross = thresholds(KEYS[1], KEYS[2], bal, new)
end
local due = tonumber(c[5]) + due_at(total + 1, c[6])
redis.call('HSET', KEYS[3], 'next_block', int(idx + 1), 'next_due', int(due))
if cross ~= '' then redis.call('HSET', KEYS[3], 'x:' .. idx, cross) end
redis.call('ZADD', KEYS[4], int(due), ARGV[5])
local over = 0
if new < -credit then over = 1 end
return {'ok', 1, new, debited, 0, 0, cross, over}
