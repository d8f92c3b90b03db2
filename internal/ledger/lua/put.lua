-- put.lua creates or updates a project's settings; never the balance.
-- KEYS: 1 project hash, 2 live zset
-- ARGV: 1 mode (put|ensure), 2 now_ms, 3 free, 4 min, 5 inc, 6 cis,
--       7 thresholds ("60 10 0"), 8 credit_limit_seconds, 9 on_exhausted
local created = 0
if redis.call('EXISTS', KEYS[1]) == 0 then
  created = 1
  redis.call('HSET', KEYS[1], 'balance', 0, 'created', ARGV[2])
end
if created == 1 or ARGV[1] == 'put' then
  redis.call('HSET', KEYS[1], 'free', ARGV[3], 'min', ARGV[4], 'inc', ARGV[5],
    'cis', ARGV[6], 'thresholds', ARGV[7], 'credit', ARGV[8], 'policy', ARGV[9])
end
return {created, redis.call('HGETALL', KEYS[1]), redis.call('ZCARD', KEYS[2])}
