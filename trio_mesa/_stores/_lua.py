"""`RedisStore`'s Lua scripts: each one read-modify-write, atomic on the server, on the
server's own clock (``redis.call('TIME')``), in integer microseconds. They translate
`_maths` line for line (same names), so `MemoryStore` and `RedisStore` answer alike.

Every key a script touches is passed in KEYS and carries the limiter's hash tag
(``{trio-mesa:<name>}``), so Redis Cluster keeps one limiter's keys in one slot. Numbers
are written with ``string.format('%d')``: Redis would render a Lua number as ``%.14g``
and lose the microseconds of a server time.
"""

from __future__ import annotations

__all__ = [
    "BREAKER_CLAIM",
    "BREAKER_RECORD",
    "BREAKER_STATUS",
    "BUDGET_RESERVE",
    "BUDGET_SETTLE",
    "BUDGET_TOTALS",
    "RATE_HOLD_OFF",
    "RATE_RESERVE",
    "RATE_SETTLE",
    "SCRIPTS",
]

_PRELUDE = """
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000000 + tonumber(t[2])
local function s(x) return string.format('%d', x) end
"""

# KEYS: rate hash (tat1..tatK: one per bucket, epoch), hold-off key (its TTL is the
# hold-off). ARGV: confirm epoch (-1: a plain reservation), K, (interval, burst) per
# bucket, then K weights per reservation.
# Returns {reserved (0: a confirmation that goes ahead), epoch, hold-off ms left, offsets...}
RATE_RESERVE = (
    _PRELUDE
    + """
local confirm = tonumber(ARGV[1])
local k = tonumber(ARGV[2])
local epoch = tonumber(redis.call('HGET', KEYS[1], 'epoch')) or 0
local left = redis.call('PTTL', KEYS[2])
if left < 0 then left = 0 end
if confirm >= 0 and (confirm == epoch or left == 0) then
  return {0, epoch, left}
end
local gate = now + left * 1000
local intervals, bursts, levels = {}, {}, {}
for d = 1, k do
  intervals[d] = tonumber(ARGV[1 + 2 * d])
  bursts[d] = tonumber(ARGV[2 + 2 * d])
  local tat = tonumber(redis.call('HGET', KEYS[1], 'tat' .. d))
  levels[d] = now
  if tat then levels[d] = math.max(tat, now) end
end
local out = {1, epoch, left}
local i = 3 + 2 * k
while i <= #ARGV do
  local start = math.max(now, gate)
  for d = 1, k do
    local w = tonumber(ARGV[i + d - 1])
    local own = math.max(now, levels[d] - (bursts[d] - math.min(w, bursts[d])) * intervals[d])
    if d == 1 then own = math.max(own, gate) end
    levels[d] = math.max(levels[d], own) + w * intervals[d]
    start = math.max(start, own)
  end
  out[#out + 1] = start - now
  i = i + k
end
local debt = 0
for d = 1, k do
  redis.call('HSET', KEYS[1], 'tat' .. d, s(levels[d]))
  debt = math.max(debt, levels[d] - now)
end
redis.call('PEXPIRE', KEYS[1], math.ceil(debt / 1000) + 60000)
return out
"""
)

# KEYS: rate hash, hold-off key. ARGV: the first bucket's interval and burst, hold-off ms.
# Returns {moved (0/1), ms left, epoch}.
RATE_HOLD_OFF = (
    _PRELUDE
    + """
local interval = tonumber(ARGV[1])
local burst = tonumber(ARGV[2])
local ms = tonumber(ARGV[3])
local left = redis.call('PTTL', KEYS[2])
if left < 0 then left = 0 end
local epoch = tonumber(redis.call('HGET', KEYS[1], 'epoch')) or 0
if ms <= left then
  return {0, left, epoch}
end
redis.call('SET', KEYS[2], '1', 'PX', ms)
epoch = epoch + 1
local tat = tonumber(redis.call('HGET', KEYS[1], 'tat1'))
local level = now
if tat then level = math.max(tat, now) end
level = math.max(level, now + ms * 1000 + (burst - 1) * interval)
redis.call('HSET', KEYS[1], 'tat1', s(level), 'epoch', s(epoch))
redis.call('PEXPIRE', KEYS[1], math.max(redis.call('PTTL', KEYS[1]),
  math.ceil((level - now) / 1000) + 60000))
return {1, ms, epoch}
"""
)

# KEYS: rate hash. ARGV: K, then (interval, delta) per bucket.
RATE_SETTLE = (
    _PRELUDE
    + """
local k = tonumber(ARGV[1])
local debt = 0
for d = 1, k do
  local interval, delta = tonumber(ARGV[2 * d]), tonumber(ARGV[2 * d + 1])
  local tat = tonumber(redis.call('HGET', KEYS[1], 'tat' .. d))
  local level = now
  if tat then level = math.max(tat, now) end
  level = level + delta * interval
  redis.call('HSET', KEYS[1], 'tat' .. d, s(level))
  debt = math.max(debt, level - now)
end
redis.call('PEXPIRE', KEYS[1], math.max(redis.call('PTTL', KEYS[1]),
  math.ceil(debt / 1000) + 60000))
return debt
"""
)

# Breakers. KEYS: hash (state, openings, reason, in_flight, probe_ok, probe_failed, seq),
# open key (its TTL is the open spell), zset of the window's calls, zset of its failures.
# ARGV[1..6]: failure_rate, min_calls, window_us, reset_after_ms, probes, window text.
# A status is {state, ms left, openings, reason, calls, failed, opened, closed}.
_BREAKER = (
    _PRELUDE
    + """
local B, O, C, F = KEYS[1], KEYS[2], KEYS[3], KEYS[4]
local failure_rate = tonumber(ARGV[1])
local min_calls = tonumber(ARGV[2])
local window = tonumber(ARGV[3])
local reset_ms = tonumber(ARGV[4])
local probes = tonumber(ARGV[5])
local window_text = ARGV[6]
local function get(field)
  return tonumber(redis.call('HGET', B, field)) or 0
end
local function status(opened, closed)
  local state = redis.call('HGET', B, 'state') or 'closed'
  local left = 0
  if state == 'open' then
    left = redis.call('PTTL', O)
    if left < 0 then left = 0 end
    if left == 0 then state = 'half_open' end
  end
  local horizon = '(' .. s(now - window)
  return {
    state, left, get('openings'), redis.call('HGET', B, 'reason') or '',
    redis.call('ZCOUNT', C, horizon, '+inf'), redis.call('ZCOUNT', F, horizon, '+inf'),
    opened, closed
  }
end
local function touch()
  local ttl = math.ceil(window / 1000) + reset_ms + 3600000
  for _, k in ipairs({B, C, F}) do redis.call('PEXPIRE', k, ttl) end
end
local function open(reason)
  redis.call('HSET', B, 'state', 'open', 'reason', reason)
  redis.call('HINCRBY', B, 'openings', 1)
  if reset_ms > 0 then redis.call('SET', O, '1', 'PX', reset_ms) else redis.call('DEL', O) end
  redis.call('DEL', C, F)
end
"""
)

# ARGV[7]: n attempts. Returns {admitted, probes, status...}.
BREAKER_CLAIM = (
    _BREAKER
    + """
local n = tonumber(ARGV[7])
local state = redis.call('HGET', B, 'state') or 'closed'
if state == 'closed' then
  local out = {n, 0}
  for _, v in ipairs(status(0, 0)) do out[#out + 1] = v end
  return out
end
if state == 'open' then
  if redis.call('PTTL', O) > 0 then
    local out = {0, 0}
    for _, v in ipairs(status(0, 0)) do out[#out + 1] = v end
    return out
  end
  redis.call('HSET', B, 'state', 'half_open', 'probe_ok', '0', 'probe_failed', '0')
end
local free = math.max(0, probes - (get('in_flight') + get('probe_ok') + get('probe_failed')))
local k = math.min(free, n)
redis.call('HINCRBY', B, 'in_flight', k)
touch()
local out = {k, k}
for _, v in ipairs(status(0, 0)) do out[#out + 1] = v end
return out
"""
)

# ARGV[7...]: triples (kind: 'outage' | 'success' | 'neutral', probe: '0' | '1', reason).
BREAKER_RECORD = (
    _BREAKER
    + """
local opened, closed = 0, 0
for i = 7, #ARGV, 3 do
  local kind, probe, why = ARGV[i], ARGV[i + 1] == '1', ARGV[i + 2]
  local state = redis.call('HGET', B, 'state') or 'closed'
  if probe then
    redis.call('HSET', B, 'in_flight', s(math.max(0, get('in_flight') - 1)))
    if kind ~= 'neutral' and state == 'half_open' then
      if kind == 'success' then
        redis.call('HINCRBY', B, 'probe_ok', 1)
      else
        redis.call('HINCRBY', B, 'probe_failed', 1)
      end
      local ok, failed = get('probe_ok'), get('probe_failed')
      if kind == 'outage' and failed / probes >= failure_rate then
        if probes == 1 then
          open('a probe call failed; the last ' .. why)
        else
          open(s(failed) .. ' of ' .. s(probes) .. ' probe calls failed; the last ' .. why)
        end
        opened = 1
      elseif (probes - ok) / probes < failure_rate then
        redis.call('HSET', B, 'state', 'closed')
        redis.call('DEL', C, F)
        closed = 1
      end
    end
  elseif state == 'closed' and kind ~= 'neutral' then
    local seq = s(redis.call('HINCRBY', B, 'seq', 1))
    redis.call('ZADD', C, s(now), seq)
    if kind == 'outage' then redis.call('ZADD', F, s(now), seq) end
    local horizon = s(now - window)
    redis.call('ZREMRANGEBYSCORE', C, '-inf', horizon)
    redis.call('ZREMRANGEBYSCORE', F, '-inf', horizon)
    local calls, failed = redis.call('ZCARD', C), redis.call('ZCARD', F)
    if kind == 'outage' and calls >= min_calls and failed / calls >= failure_rate then
      open(s(failed) .. ' of ' .. s(calls) .. ' calls within ' .. window_text
        .. 's failed; the last ' .. why)
      opened = 1
    end
  end
end
touch()
return status(opened, closed)
"""
)

BREAKER_STATUS = _BREAKER + "\nreturn status(0, 0)\n"

# Budgets. KEYS: hash (spent_usd, spent_tokens, reserved_usd, reserved_tokens, settled).
_BUDGET = """
local B = KEYS[1]
local fields = {'spent_usd', 'spent_tokens', 'reserved_usd', 'reserved_tokens', 'settled'}
local function s(x) return string.format('%d', x) end
local function totals()
  local v = redis.call('HMGET', B, unpack(fields))
  local out = {}
  for i = 1, 5 do out[i] = tonumber(v[i]) or 0 end
  return out
end
local function store(t)
  redis.call('HSET', B, fields[1], s(t[1]), fields[2], s(t[2]), fields[3], s(t[3]),
    fields[4], s(t[4]), fields[5], s(t[5]))
end
local function fits(spent, reserved, amount, limit)
  return limit < 0 or spent + reserved + amount <= limit
end
"""

# ARGV: max micro-usd (-1: none), max tokens (-1: none), then (micro-usd, tokens) pairs.
# Returns {totals (5), granted (0/1) per pair...}.
BUDGET_RESERVE = (
    _BUDGET
    + """
local max_usd, max_tokens = tonumber(ARGV[1]), tonumber(ARGV[2])
local t = totals()
local granted = {}
for i = 3, #ARGV, 2 do
  local usd, tokens = tonumber(ARGV[i]), tonumber(ARGV[i + 1])
  if fits(t[1], t[3], usd, max_usd) and fits(t[2], t[4], tokens, max_tokens) then
    t[3] = t[3] + usd
    t[4] = t[4] + tokens
    granted[#granted + 1] = 1
  else
    granted[#granted + 1] = 0
  end
end
store(t)
for _, g in ipairs(granted) do t[#t + 1] = g end
return t
"""
)

# ARGV: quadruples (reserved usd, reserved tokens, actual usd, actual tokens).
BUDGET_SETTLE = (
    _BUDGET
    + """
local t = totals()
for i = 1, #ARGV, 4 do
  t[1] = t[1] + tonumber(ARGV[i + 2])
  t[2] = t[2] + tonumber(ARGV[i + 3])
  t[3] = math.max(0, t[3] - tonumber(ARGV[i]))
  t[4] = math.max(0, t[4] - tonumber(ARGV[i + 1]))
  t[5] = t[5] + 1
end
store(t)
return t
"""
)

BUDGET_TOTALS = _BUDGET + "\nreturn totals()\n"

SCRIPTS = (
    RATE_RESERVE,
    RATE_HOLD_OFF,
    RATE_SETTLE,
    BREAKER_CLAIM,
    BREAKER_RECORD,
    BREAKER_STATUS,
    BUDGET_RESERVE,
    BUDGET_SETTLE,
    BUDGET_TOTALS,
)
