-- decide.lua: one customer's whole decision, atomically, in one round trip.
--
-- KEYS[1]  the customer's settings hash (fields v = version, m = JSON)
-- KEYS[2]  the customer's state hash (one field per limit name)
-- KEYS[3]  the lease record to create when admitted (only used when ARGV[5] ~= '')
-- ARGV[1]  mode: 'd' decide (consume when every limit admits), 'p' peek (read only)
-- ARGV[2]  the settings version the caller resolved its plan with ('' = no settings)
-- ARGV[3]  now in integer microseconds, or '' for the server's TIME
-- ARGV[4]  the cost charged to every limit, or '' when per-limit amounts follow the limits
-- ARGV[5]  lease token ('' = no lease)
-- ARGV[6]  the lease's slot time-to-live in microseconds ('' = each limit's lease_ttl)
-- ARGV[7]  the lease record's time-to-live in microseconds (kept for twice that)
-- ARGV[8.. ] five per limit: kind, name, a, b, c
--          token bucket 't': a = interval_us, b = capacity
--          rolling window 'r': a = quota, b = window_us, c = granularity_us
--          concurrency 'c': a = max_in_flight, b = lease_ttl_us
--          then, when ARGV[4] == '', one amount per limit
-- Reply:   {0, version, json}  the stored settings differ from ARGV[2]: resolve again
--          {1, now, allowed, state_1, ..., state_n}  with state_i the limit's state
--          before the decision (after eviction in mode 'd'; raw in mode 'p'), nil when
--          empty. A rolling window's state is sent whole when the caller needs to walk
--          its buckets, else only its head "total,first,last,last_count" (bucket
--          start times in microseconds).
--
-- The arithmetic is quotaguard.core's, operation for operation, in IEEE doubles.

local function f(x) return string.format('%.17g', x) end

local version = redis.call('HGET', KEYS[1], 'v') or ''
if version ~= ARGV[2] then
  return {0, version, redis.call('HGET', KEYS[1], 'm')}
end

local now
if ARGV[3] == '' then
  local t = redis.call('TIME')
  now = tonumber(t[1]) * 1000000 + tonumber(t[2])
else
  now = tonumber(ARGV[3])
end
local per_limit = ARGV[4] == ''
local n
if per_limit then n = (#ARGV - 7) / 6 else n = (#ARGV - 7) / 5 end
local names = {}
for i = 1, n do names[i] = ARGV[8 + (i - 1) * 5 + 1] end
local raw = {}
if n > 0 then raw = redis.call('HMGET', KEYS[2], unpack(names)) end
if ARGV[1] == 'p' then
  local reply = {1, now, 1}
  for i = 1, n do reply[3 + i] = raw[i] end
  return reply
end

local token = ARGV[5]
local slot_ttl = tonumber(ARGV[6])
local record_ttl = tonumber(ARGV[7])
local EPSILON = 1e-9

-- rolling window state: "total,first,last,last_count,step;" .. body, where first and
-- last are bucket start times (microseconds) and body holds every bucket but the last,
-- oldest first, each "count;" (the next bucket starts step later) or "count:delta;".
local function rw_head(s)
  local sep = string.find(s, ';', 1, true)
  local a, b, c, d, e = string.match(string.sub(s, 1, sep - 1),
    '^([^,]+),([^,]+),([^,]+),([^,]+),([^,]+)$')
  return {tonumber(a), tonumber(b), tonumber(c), tonumber(d), string.sub(s, sep + 1), tonumber(e)}
end

local function rw_encode(st)
  return f(st[1]) .. ',' .. f(st[2]) .. ',' .. f(st[3]) .. ',' .. f(st[4]) .. ',' .. f(st[6])
    .. ';' .. st[5]
end

local function rw_evict(st, now, window, g)
  if st == nil then return nil end
  local oldest = now - math.fmod(now, g) - window
  if st[2] >= oldest then return st end
  local total, start, body, pos, step = st[1], st[2], st[5], 1, st[6]
  local len = string.len(body)
  while pos <= len do
    if start >= oldest then break end
    local stop = string.find(body, ';', pos, true)
    local entry = string.sub(body, pos, stop - 1)
    local colon = string.find(entry, ':', 1, true)
    local count, delta
    if colon then
      count = tonumber(string.sub(entry, 1, colon - 1))
      delta = tonumber(string.sub(entry, colon + 1))
    else
      count = tonumber(entry)
      delta = step
    end
    total = total - count
    start = start + delta
    pos = stop + 1
  end
  if pos > len and st[3] < oldest then return nil end
  return {total, start, st[3], st[4], string.sub(body, pos), step}
end

local function rw_add(st, now, g, amount)
  local current = now - math.fmod(now, g)
  if st == nil then return {amount, current, current, amount, '', g} end
  if st[3] == current then
    return {st[1] + amount, st[2], st[3], st[4] + amount, st[5], st[6]}
  end
  local delta = current - st[3]
  local entry = f(st[4])
  if delta ~= st[6] then entry = entry .. ':' .. f(delta) end
  return {st[1] + amount, st[2], current, amount, st[5] .. entry .. ';', st[6]}
end

local function rw_drop(start, window, g)
  local stop = start + window
  return stop - math.fmod(stop, g) + g
end

local function c_evict(s, now)
  local kept = {}
  if s then
    for id, exp in string.gmatch(s, '([^,;]+),([^;]+);') do
      local e = tonumber(exp)
      if e > now then kept[#kept + 1] = {id, e} end
    end
  end
  return kept
end

local function c_encode(slots)
  if #slots == 0 then return nil end
  local parts = {}
  for i = 1, #slots do parts[i] = slots[i][1] .. ',' .. f(slots[i][2]) .. ';' end
  return table.concat(parts)
end

local allowed = true
local expiry = now
local news = {}
local reply = {1, now, 1}
local needs_walk = {}
for i = 1, n do
  local base = 8 + (i - 1) * 5
  local kind = ARGV[base]
  local cost
  if per_limit then cost = tonumber(ARGV[7 + 5 * n + i]) else cost = tonumber(ARGV[4]) end
  if kind == 't' then
    local interval = tonumber(ARGV[base + 2])
    local capacity = tonumber(ARGV[base + 3])
    local tat = raw[i] and tonumber(raw[i]) or nil
    local backlog = 0.0
    if tat ~= nil and tat > now then backlog = tat - now end
    local needed = backlog + cost * interval
    if needed > capacity * interval then
      allowed = false
      if now + backlog > expiry then expiry = now + backlog end
    elseif needed <= 0 then
      news[i] = false
    else
      local new_tat = now + math.floor(needed)
      if new_tat > now then news[i] = f(new_tat) else news[i] = false end
      if new_tat > expiry then expiry = new_tat end
    end
    reply[3 + i] = raw[i]
  elseif kind == 'r' then
    local quota = tonumber(ARGV[base + 2])
    local window = tonumber(ARGV[base + 3])
    local g = tonumber(ARGV[base + 4])
    local st = nil
    if raw[i] then st = rw_evict(rw_head(raw[i]), now, window, g) end
    local total = 0
    if st ~= nil then total = st[1] end
    if total + cost > quota then
      allowed = false
      if st ~= nil and rw_drop(st[3], window, g) > expiry then
        expiry = rw_drop(st[3], window, g)
      end
    else
      local after = st
      if cost > 0 then after = rw_add(st, now, g, cost) end
      if after ~= nil then
        news[i] = rw_encode(after)
        local until_ = rw_drop(after[3], window, g)
        if until_ > expiry then expiry = until_ end
        needs_walk[i] = math.floor(quota - after[1] + EPSILON) <= 0
      else
        news[i] = false
      end
    end
    if st == nil then
      reply[3 + i] = false
    else
      reply[3 + i] = st
    end
  else
    local max_in_flight = tonumber(ARGV[base + 2])
    local slots = c_evict(raw[i], now)
    reply[3 + i] = c_encode(slots) or false
    if #slots >= max_in_flight then
      allowed = false
    elseif token ~= '' then
      slots[#slots + 1] = {token, now + (slot_ttl or tonumber(ARGV[base + 3]))}
    end
    for j = 1, #slots do
      if slots[j][2] > expiry then expiry = slots[j][2] end
    end
    news[i] = c_encode(slots) or false
  end
end

for i = 1, n do
  local st = reply[3 + i]
  if type(st) == 'table' then
    if (not allowed) or needs_walk[i] then
      reply[3 + i] = rw_encode(st)
    else
      reply[3 + i] = f(st[1]) .. ',' .. f(st[2]) .. ',' .. f(st[3]) .. ',' .. f(st[4])
    end
  end
end

if not allowed then
  reply[3] = 0
  return reply
end

local present = 0
local sets = {}
for i = 1, n do
  if news[i] then
    sets[#sets + 1] = names[i]
    sets[#sets + 1] = news[i]
    present = present + 1
  elseif raw[i] then
    redis.call('HDEL', KEYS[2], names[i])
  end
end
if #sets > 0 then redis.call('HSET', KEYS[2], unpack(sets)) end
local ttl = math.ceil((expiry - now) / 1000)
if redis.call('HLEN', KEYS[2]) > present then
  local current = redis.call('PTTL', KEYS[2])
  if current > ttl then ttl = current end
end
if ttl < 1 then ttl = 1 end
if present > 0 then redis.call('PEXPIRE', KEYS[2], ttl) end
if token ~= '' then
  redis.call('SET', KEYS[3], f(now + 2 * record_ttl) .. ',' .. f(now),
    'PX', math.ceil(2 * record_ttl / 1000))
end
return reply
