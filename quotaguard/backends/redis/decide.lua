-- decide.lua: one customer's whole decision, atomically, in one round trip.
--
-- KEYS[1]  the customer's settings hash (fields v = version, m = JSON)
-- KEYS[2]  the customer's state string (every limit's state, see "State" below)
-- KEYS[3]  the lease record to create when admitted (only with a lease, ARGV[6])
-- ARGV[1]  mode: 'd' decide (consume when every limit admits), 'p' peek (read only)
-- ARGV[2]  the settings version the caller resolved its plan with ('' = no settings)
-- ARGV[3]  now in integer microseconds, or '' for the server's TIME
-- ARGV[4]  the cost charged to every limit, or one amount per limit, space-separated
-- ARGV[5]  the plan: a MessagePack array of five items per limit: kind, name, a, b, c
--          token bucket 't': a = interval_us, b = capacity
--          rolling window 'r': a = quota, b = window_us, c = granularity_us
--          concurrency 'c': a = max_in_flight, b = lease_ttl_us
-- ARGV[6]  lease token (absent or '' = no lease)
-- ARGV[7]  the lease's slot time-to-live in microseconds ('' = each limit's lease_ttl)
-- ARGV[8]  the lease record's time-to-live in microseconds (kept for twice that)
-- Reply:   {0, version, json}  the stored settings differ from ARGV[2]: resolve again
--          {1, now, allowed, state_1, ..., state_n}  with state_i the limit's state
--          before the decision (after eviction in mode 'd'; raw in mode 'p'), nil when
--          empty: a token bucket's tat (integer), or {tat, carry}; a rolling window's buckets as a flat
--          array {total, start_1, count_1, ...} (quotaguard.core's Ring.buckets()), or, when the
--          caller need not walk them, only {total, first, 0, last, last_count} or
--          {total, last, last_count}; a concurrency limit's "lease,expiry;" text.
--          Numbers that are not whole are sent as '%.17g' strings.
--
-- State: one string of sections, one per limit name, kept for names outside the plan
-- too: byte #name, name|meaning, uint32le #state, state (see state.lua; a state whose
-- meaning differs from the plan's limit is converted first). A token bucket's state is
-- its tat (double), then its carry (double) when not 0; a rolling window's is a head of five doubles (total, first start, last
-- start, last count, step) then every bucket but the last, oldest first, each a varint
-- x = count * 4 + flags (flags 2: x carries no count, a double follows; flags 1: the
-- next bucket starts a zigzag varint delta later instead of step); a concurrency limit's is
-- "lease,expiry;" per slot held.
--
-- The arithmetic is quotaguard.core's, operation for operation, in IEEE doubles.

-- While the customer's slot migrates between cluster nodes, the caller reads the
-- settings itself and sends KEYS[1] = KEYS[2] (one key, served wherever the state is)
-- and no KEYS[3] (it writes the lease record itself): see migration.py.
if KEYS[1] ~= KEYS[2] then
  local version = redis.call('HGET', KEYS[1], 'v') or ''
  if version ~= ARGV[2] then
    return {0, version, redis.call('HGET', KEYS[1], 'm')}
  end
end

local now = clock(ARGV[3])

local plan = cmsgpack.unpack(ARGV[5])
local kinds, names, pa, pb, pc, in_plan = {}, {}, {}, {}, {}, {}
local n = #plan / 5
for i = 1, n do
  local base = 5 * i - 5
  local name = plan[base + 2]
  kinds[i], names[i], pa[i], pb[i], pc[i] =
    plan[base + 1], name, plan[base + 3], plan[base + 4], plan[base + 5]
  in_plan[slot(name)] = true
end

-- the stored sections, each as its limit now reads it (converted when its meaning
-- differs: see state.lua)
local blob = redis.call('GET', KEYS[2])
local stored, extras, fulls = read_sections(blob, in_plan)
local sections = {}
local converted = false
for i = 1, n do
  local name = slot(names[i])
  sections[i] = convert(fulls[name], stored[name], names[i], kinds[i], pa[i], pb[i], pc[i], now)
  if stored[name] and fulls[name] ~= names[i] then converted = true end
end

-- a number for the reply: whole numbers as integers, others exactly as text
local function out(x)
  if x == floor(x) then return x end
  return string.format('%.17g', x)
end

-- a token bucket's state for the reply: tat, or {tat, carry}
local function tb_out(s)
  local tat, carry = tb_read(s)
  if carry == 0 then return out(tat) end
  return {out(tat), out(carry)}
end

-- rolling window state table: {total, first, last, last_count, body, step}
local function rw_read(s)
  local total, first, last, lc, step = unpack_('<ddddd', s)
  return {total, first, last, lc, sub(s, 41), step}
end

local function rw_pack(st)
  return pack('<ddddd', st[1], st[2], st[3], st[4], st[6]) .. st[5]
end

-- the flat bucket list quotaguard.core holds
local function rw_flat(st)
  local flat = {out(st[1])}
  local body, step, start, pos = st[5], st[6], st[2], 1
  local len = #body
  while pos <= len do
    local count, delta
    count, delta, pos = ring_entry(body, pos, step)
    flat[#flat + 1] = start
    flat[#flat + 1] = out(count)
    start = start + delta
  end
  flat[#flat + 1] = st[3]
  flat[#flat + 1] = out(st[4])
  return flat
end

local function rw_evict(st, now, window, g)
  local oldest = now - fmod(now, g) - window
  if st[2] >= oldest then return st end
  local total, start, body, pos, step = st[1], st[2], st[5], 1, st[6]
  local len = #body
  while pos <= len do
    if start >= oldest then break end
    local count, delta
    count, delta, pos = ring_entry(body, pos, step)
    total = total - count
    start = start + delta
  end
  if pos > len and st[3] < oldest then return nil end
  return {total, start, st[3], st[4], sub(body, pos), step}
end

local function rw_add(st, now, g, amount)
  local current = now - fmod(now, g)
  if st == nil then return {amount, current, current, amount, '', g} end
  if st[3] == current then
    return {st[1] + amount, st[2], st[3], st[4] + amount, st[5], st[6]}
  end
  return {st[1] + amount, st[2], current, amount, st[5] .. ring_put(st[4], current - st[3], st[6]), st[6]}
end

local function rw_drop(start, window, g)
  local stop = start + window
  return stop - fmod(stop, g) + g
end

if ARGV[1] == 'p' then
  local reply = {1, now, 1}
  for i = 1, n do
    local s = sections[i]
    if s == nil then
      reply[3 + i] = false
    elseif kinds[i] == 't' then
      reply[3 + i] = tb_out(s)
    elseif kinds[i] == 'r' then
      reply[3 + i] = rw_flat(rw_read(s))
    else
      reply[3 + i] = s
    end
  end
  return reply
end

local costs = {}
local m = 0
for x in string.gmatch(ARGV[4], '%S+') do
  m = m + 1
  costs[m] = tonumber(x)
end
if m == 1 then
  for i = 2, n do costs[i] = costs[1] end
end

local token = ARGV[6] or ''
local slot_ttl = tonumber(ARGV[7] or '')
local EPSILON = 1e-9

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
  for i = 1, #slots do parts[i] = slots[i][1] .. ',' .. string.format('%d', slots[i][2]) .. ';' end
  return table.concat(parts)
end

local allowed = true
local expiry = now
local news = {}
local reply = {1, now, 1}
local walk = {}
for i = 1, n do
  local kind = kinds[i]
  local cost = costs[i]
  local raw = sections[i]
  if kind == 't' then
    local interval, capacity = pa[i], pb[i]
    local tat, carry = nil, 0
    if raw then tat, carry = tb_read(raw) end
    local backlog = tb_backlog(tat, carry, now)
    local needed = backlog + cost * interval
    local burst = capacity * interval
    local room = burst + burst * TB_SLACK + TB_EPSILON * interval
    if room >= TB_MAX_BACKLOG then room = TB_MAX_BACKLOG end
    if needed > room then
      allowed = false
      if now + backlog > expiry then expiry = now + backlog end
    elseif needed <= 0 then
      news[i] = false
    else
      news[i] = tb_state(now, needed)
      if now + math.ceil(needed) > expiry then expiry = now + math.ceil(needed) end
    end
    if raw then reply[3 + i] = tb_out(raw) else reply[3 + i] = false end
  elseif kind == 'r' then
    local quota, window, g = pa[i], pb[i], pc[i]
    local st = nil
    if raw then st = rw_evict(rw_read(raw), now, window, g) end
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
        news[i] = rw_pack(after)
        local until_ = rw_drop(after[3], window, g)
        if until_ > expiry then expiry = until_ end
        walk[i] = floor(quota - after[1] + EPSILON) <= 0
      else
        news[i] = false
      end
    end
    reply[3 + i] = st or false
  else
    local slots = c_evict(raw, now)
    reply[3 + i] = c_encode(slots) or false
    if #slots >= pa[i] then
      allowed = false
    elseif token ~= '' then
      slots[#slots + 1] = {token, now + (slot_ttl or pb[i])}
    end
    for j = 1, #slots do
      if slots[j][2] > expiry then expiry = slots[j][2] end
    end
    news[i] = c_encode(slots) or false
  end
end

for i = 1, n do
  local st = reply[3 + i]
  if kinds[i] == 'r' and type(st) == 'table' then
    if (not allowed) or walk[i] then
      reply[3 + i] = rw_flat(st)
    elseif st[2] == st[3] then
      reply[3 + i] = {out(st[1]), st[3], out(st[4])}
    else
      reply[3 + i] = {out(st[1]), st[2], 0, st[3], out(st[4])}
    end
  end
end

if not allowed then
  reply[3] = 0
  if converted then  -- the first decision under a changed definition keeps its conversion
    store_sections(KEYS[2], names, sections, extras, expiry, now, blob)
  end
  return reply
end

store_sections(KEYS[2], names, news, extras, expiry, now, blob)
if token ~= '' and KEYS[3] then
  redis.call('SET', KEYS[3], string.format('%d', now + 2 * tonumber(ARGV[8])) .. ','
    .. string.format('%d', now), 'PX', millis(math.ceil(2 * tonumber(ARGV[8]) / 1000)))
end
return reply
