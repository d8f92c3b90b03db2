-- common.lua is prepended to every script that changes a balance.
-- All numbers written to Redis go through int() so that large values are
-- never printed in Lua's %.14g exponent form.

local function int(x) return string.format('%d', x) end

-- due_at is the talk time in ms at which the whole-second talk count reaches
-- s: tariff.Tariff.dueAt in Go (a Go test checks both agree).
local function due_at(s, cis)
  if cis == '1' then return (s - 1) * 1000 + 1 end
  return s * 1000
end

-- entry appends one line to the project's ledger stream and returns its id.
local function entry(stream, maxlen, at, kind, secs, bal, call, block, ref)
  local a = {'XADD', stream, 'MAXLEN', '~', maxlen, '*',
    'at', at, 'kind', kind, 'seconds', int(secs), 'balance', int(bal)}
  if call ~= '' then a[#a + 1] = 'call'; a[#a + 1] = call end
  if block >= 0 then a[#a + 1] = 'block'; a[#a + 1] = int(block) end
  if ref ~= '' then a[#a + 1] = 'ref'; a[#a + 1] = ref end
  return redis.call(unpack(a))
end

-- thresholds decides the alerts of a balance change old -> new (SPEC §7):
-- T fires when the balance goes from >= T*60 to < T*60 and T is armed
-- (field a:T absent); firing disarms it and increments g:T. A rise to
-- >= T*60 re-arms it. Returns "T balance generation" triples joined by
-- spaces, or ''.
local function thresholds(pkey, tkey, old, new)
  local spec = redis.call('HGET', pkey, 'thresholds') or ''
  local out = {}
  for t in string.gmatch(spec, '[^ ]+') do
    local lim = tonumber(t) * 60
    if new >= lim then
      if new > old then redis.call('HDEL', tkey, 'a:' .. t) end
    elseif old >= lim and redis.call('HGET', tkey, 'a:' .. t) ~= '0' then
      redis.call('HSET', tkey, 'a:' .. t, '0')
      local g = redis.call('HINCRBY', tkey, 'g:' .. t, 1)
      out[#out + 1] = t .. ' ' .. int(new) .. ' ' .. int(g)
    end
  end
  return table.concat(out, ' ')
end

-- snapshot creates a call record with the project's current tariff.
local function snapshot(pkey, ckey, node, channel, answered)
  local t = redis.call('HMGET', pkey, 'free', 'min', 'inc', 'cis')
  local s0 = math.max(tonumber(t[1]) or 0, 1)
  local due = tonumber(answered) + due_at(s0, t[4])
  redis.call('HSET', ckey, 'node', node, 'channel', channel, 'answered', answered,
    'free', t[1], 'min', t[2], 'inc', t[3], 'cis', t[4],
    'debited', 0, 'next_block', 0, 'next_due', int(due), 'settled', 0)
  return due
end
