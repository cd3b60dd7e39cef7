-- decide.lua: one customer's whole decision, atomically, in one round trip.
--
-- Reads:   KEYS[1] the settings hash (field v), KEYS[2] the state string (state.lua).
-- Writes:  KEYS[2] when admitted (or when a section changed meaning), KEYS[3] the lease
--          record when admitted with a lease.
--
-- KEYS[1]  the customer's settings hash (fields v = version, m = JSON)
-- KEYS[2]  the customer's state string (every limit's state, see state.lua)
-- KEYS[3]  the lease record to create when admitted (only with a lease, ARGV[6])
-- ARGV[1]  mode: 'd' decide (consume when every limit admits), 'p' peek (read only)
-- ARGV[2]  the settings version the caller resolved its plan with ('' = no settings)
-- ARGV[3]  now in integer microseconds, or '' for the server's TIME
-- ARGV[4]  the cost charged to every limit, or one amount per limit, space-separated
-- ARGV[5]  the plan: a MessagePack array of five items per limit: kind, name|meaning, a, b, c
--          token bucket 't': a = interval_us, b = capacity
--          rolling window 'r': a = quota, b = window_us, c = granularity_us
--          concurrency 'c': a = max_in_flight, b = lease_ttl_us
--          (one argument decoded in C: cheaper than as many arguments as items)
-- ARGV[6]  lease token (absent or '' = no lease)
-- ARGV[7]  the lease's slot time-to-live in microseconds ('' = each limit's lease_ttl)
-- ARGV[8]  the lease record's time-to-live in microseconds (kept for twice that)
-- Reply:   {0, version, json}  the stored settings differ from ARGV[2]: resolve again
--          {1, now, allowed, state_1, ..., state_n}  with state_i the limit's state
--          before the decision (after eviction in mode 'd'; raw in mode 'p'), false when
--          empty: a token bucket's tat (integer), or {tat, carry}; a rolling window's
--          buckets as a flat array {total, start_1, count_1, ...} (quotaguard.core's
--          Ring.buckets()), or, when the caller need not walk them, only
--          {total, first, 0, last, last_count} or {total, last, last_count}; a
--          concurrency limit's "lease,expiry;" text. Numbers that are not whole are sent
--          as '%.17g' strings.
--
-- The arithmetic is quotaguard.core's, operation for operation, in IEEE doubles. Every
-- limit is checked first; only when all admit are the rings changed. A refusal walks
-- the refused window's buckets for the reply (at most window / g of them); everything
-- else costs the same whatever the number of buckets.

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
local n = #plan / 5
local st = read_state(KEYS[2], now)

-- every limit's state as it reads it now (converted when its meaning changed)
local names, states = {}, {}
local converted = false
for i = 1, n do
  local at = 5 * i - 5
  local kind, name = plan[at + 1], plan[at + 2]
  local changed
  names[i] = name
  states[i], changed = limit_state(st, name, kind, plan[at + 3], plan[at + 4], plan[at + 5], now)
  converted = converted or changed
end

-- a token bucket's state for the reply: tat, or {tat, carry}
local function tb_out(s)
  local tat, carry = tb_read(s)
  if carry == 0 then return out(tat) end
  return {out(tat), out(carry)}
end

if ARGV[1] == 'p' then
  local reply = {1, now, 1}
  for i = 1, n do
    local state, kind = states[i], plan[5 * i - 4]
    if state == nil then
      reply[3 + i] = false
    elseif kind == 't' then
      reply[3 + i] = tb_out(state)
    elseif kind == 'r' then
      reply[3 + i] = ring_flat(state)
    else
      reply[3 + i] = state
    end
  end
  return reply
end

local shared_cost = tonumber(ARGV[4])  -- nil when one amount per limit
local costs
if not shared_cost then
  costs = {}
  for x in string.gmatch(ARGV[4], '%S+') do costs[#costs + 1] = tonumber(x) end
end
local token = ARGV[6] or ''
local slot_ttl = tonumber(ARGV[7] or '')
local EPSILON = 1e-9

-- a concurrency limit's live slots {token, expiry} at `now`
local function slots_live(s)
  local live = {}
  if s then
    for id, expiry in string.gmatch(s, '([^,;]+),([^;]+);') do
      local e = tonumber(expiry)
      if e > now then live[#live + 1] = {id, e} end
    end
  end
  return live
end

local function slots_text(live)
  if #live == 0 then return false end
  local parts = {}
  for j = 1, #live do parts[j] = live[j][1] .. ',' .. string.format('%d', live[j][2]) .. ';' end
  return table.concat(parts)
end

-- check every limit; the rings are changed only once all admit
local allowed = true
local expiry = now
local news, windows = {}, {}
local reply = {1, now, 1}
for i = 1, n do
  local kind, state = plan[5 * i - 4], states[i]
  local cost = shared_cost or costs[i]
  local at = 5 * i - 5
  if kind == 't' then
    local interval, capacity = plan[at + 3], plan[at + 4]
    local tat, carry = nil, 0
    if state then tat, carry = tb_read(state) end
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
    reply[3 + i] = state and tb_out(state) or false
  elseif kind == 'r' then
    local quota, window, g = plan[at + 3], plan[at + 4], plan[at + 5]
    local ring = ring_evict(state, now, window)
    local total = ring and ring.total or 0
    windows[i], news[i] = window / g, ring or false
    if total + cost > quota then
      allowed = false
      if ring and ring_drop(ring, window) > expiry then expiry = ring_drop(ring, window) end
      reply[3 + i] = ring and ring_flat(ring) or false
    else
      local last = ring and ring.last
      if cost > 0 then last = now - fmod(now, g) end
      if last then
        local stop = last + window
        local drop = stop - fmod(stop, g) + g
        if drop > expiry then expiry = drop end
      end
      if not ring then
        reply[3 + i] = false
      elseif floor(quota - (total + cost) + EPSILON) <= 0 then  -- the caller walks them
        reply[3 + i] = ring_flat(ring)
      elseif ring.first == ring.last then
        reply[3 + i] = {out(ring.total), ring.last, out(ring.lc)}
      else
        reply[3 + i] = {out(ring.total), ring.first, 0, ring.last, out(ring.lc)}
      end
    end
  else
    local live = slots_live(state)
    reply[3 + i] = slots_text(live)
    if #live >= plan[at + 3] then
      allowed = false
    elseif token ~= '' then
      live[#live + 1] = {token, now + (slot_ttl or plan[at + 4])}
    end
    for j = 1, #live do
      if live[j][2] > expiry then expiry = live[j][2] end
    end
    news[i] = slots_text(live)
  end
end

if not allowed then
  reply[3] = 0
  for i = 1, n do  -- an admitted window's reply is its buckets when another refused
    local ring = plan[5 * i - 4] == 'r' and news[i]
    if ring and type(reply[3 + i]) == 'table' and #reply[3 + i] <= 5 then
      reply[3 + i] = ring_flat(ring)
    end
  end
  if converted then  -- the first decision under a changed definition keeps its conversion
    store(KEYS[2], st, names, states, windows, expiry, now)
  end
  return reply
end

for i = 1, n do
  if plan[5 * i - 4] == 'r' then
    local ring, cost = news[i], shared_cost or costs[i]
    if cost > 0 then
      local g = plan[5 * i]
      ring = ring_add(ring or nil, now - fmod(now, g), cost, g)
    end
    news[i] = ring
  end
end
store(KEYS[2], st, names, news, windows, expiry, now)
if token ~= '' and KEYS[3] then
  local keep = 2 * tonumber(ARGV[8])
  redis.call('SET', KEYS[3], string.format('%d', now + keep) .. ',' .. string.format('%d', now),
    'PX', millis(math.ceil(keep / 1000)))
end
return reply
