-- settle.lua: settle a lease: charge the actual cost instead of the estimate, free its
-- concurrency slots; idempotent.
--
-- Reads:   KEYS[1] the lease record, KEYS[2] the state string (state.lua).
-- Writes:  KEYS[2] and KEYS[1] (marked settled), when the lease is known and unsettled.
--
-- KEYS[1]  the lease record "retain_until,reserved_at[|settled actual cost as JSON]"
-- KEYS[2]  the customer's state string (sections per limit name, see state.lua)
-- ARGV[1]  now in integer microseconds, or '' for the server's TIME
-- ARGV[2]  the actual cost as JSON (kept in the record)
-- ARGV[3]  the lease token
-- ARGV[4]  the plan the lease was reserved on, as decide.lua's ARGV[5]
-- ARGV[5]  one delta (actual - estimate charged to that limit) per limit, space-separated
-- Reply:   {0}  unknown or expired lease
--          {1, settled}  settled before (the actual cost then, as JSON): nothing charged
--          {2}  settled now
--
-- The arithmetic is quotaguard.core's settle functions, operation for operation: an extra
-- charge is counted now, a refund comes out of the reservation's bucket (one slot).

local now = clock(ARGV[1])
local record = redis.call('GET', KEYS[1])
if not record then return {0} end
local retain, reserved_at, bar, settled = string.match(record, '^([^,]+),([^|]+)(|?)(.*)$')
if tonumber(retain) <= now then return {0} end
if bar ~= '' then return {1, settled} end
reserved_at = tonumber(reserved_at)
local token = ARGV[3]

local plan = cmsgpack.unpack(ARGV[4])
local n = #plan / 5
local deltas = {}
for x in string.gmatch(ARGV[5], '%S+') do deltas[#deltas + 1] = tonumber(x) end
local st = read_state(KEYS[2], now)

local names, news, windows = {}, {}, {}
local expiry = now
for i = 1, n do
  local at = 5 * i - 5
  local kind, name, a, b, c = plan[at + 1], plan[at + 2], plan[at + 3], plan[at + 4], plan[at + 5]
  local delta = deltas[i]
  names[i] = name
  local state = limit_state(st, name, kind, a, b, c, now)
  if kind == 't' then
    local tat, carry = nil, 0
    if state then tat, carry = tb_read(state) end
    local needed = tb_backlog(tat, carry, now) + delta * a
    news[i] = tb_state(now, needed)
    if needed > TB_MAX_BACKLOG then needed = TB_MAX_BACKLOG end
    if news[i] and now + math.ceil(needed) > expiry then expiry = now + math.ceil(needed) end
  elseif kind == 'r' then
    local window, g = b, c
    local ring = ring_evict(state, now, window)
    if delta > 0 then
      ring = ring_add(ring, now - fmod(now, g), delta, g)
    elseif delta < 0 and ring then
      ring = ring_refund(ring, reserved_at - fmod(reserved_at, g), -delta)
    end
    news[i], windows[i] = ring or false, window / g
    if ring and ring_drop(ring, window) > expiry then expiry = ring_drop(ring, window) end
  else
    local parts = {}
    for id, exp in string.gmatch(state or '', '([^,;]+),([^;]+);') do
      local e = tonumber(exp)
      if e > now and id ~= token then
        parts[#parts + 1] = id .. ',' .. exp .. ';'
        if e > expiry then expiry = e end
      end
    end
    news[i] = #parts > 0 and table.concat(parts)
  end
end

store(KEYS[2], st, names, news, windows, expiry, now)
redis.call('SET', KEYS[1], record .. '|' .. ARGV[2], 'KEEPTTL')
return {2}
