-- settle.lua: settle a lease: charge the actual cost instead of the estimate, free its
-- concurrency slots; idempotent.
--
-- KEYS[1]  the lease record "retain_until,reserved_at[|settled actual cost as JSON]"
-- KEYS[2]  the customer's state string (sections per limit name, see decide.lua)
-- ARGV[1]  now in integer microseconds, or '' for the server's TIME
-- ARGV[2]  the actual cost as JSON (kept in the record)
-- ARGV[3]  the lease token
-- ARGV[4]  the plan the lease was reserved on: per limit "kind name a b c ",
--          space-separated (the a, b, c of decide.lua)
-- ARGV[5]  one delta (actual - estimate charged to that limit) per limit, space-separated
-- Reply:   {0}  unknown or expired lease
--          {1, settled}  settled before (the actual cost then, as JSON): nothing charged
--          {2}  settled now
--
-- The arithmetic is quotaguard.core's settle functions, operation for operation.


local now = clock(ARGV[1])
local record = redis.call('GET', KEYS[1])
if not record then return {0} end
local retain, reserved_at, bar, settled = string.match(record, '^([^,]+),([^|]+)(|?)(.*)$')
if tonumber(retain) <= now then return {0} end
if bar ~= '' then return {1, settled} end
reserved_at = tonumber(reserved_at)
local token = ARGV[3]

local kinds, names, pa, pb, pc, in_plan = {}, {}, {}, {}, {}, {}
local n = 0
for k, name, a, b, c in string.gmatch(ARGV[4], '(%a) (%S+) (%S+) (%S+) (%S+)') do
  n = n + 1
  kinds[n], names[n], pa[n], pb[n], pc[n] = k, name, tonumber(a), tonumber(b), tonumber(c)
  in_plan[slot(name)] = true
end
local deltas = {}
for x in string.gmatch(ARGV[5], '%S+') do deltas[#deltas + 1] = tonumber(x) end

local blob = redis.call('GET', KEYS[2])
local stored, extras, fulls = read_sections(blob, in_plan)

local expiry = now
local news = {}
for i = 1, n do
  local kind = kinds[i]
  local delta = deltas[i]
  local name = slot(names[i])
  local state = convert(fulls[name], stored[name], names[i], kind, pa[i], pb[i], pc[i], now)
  if kind == 't' then
    local interval = pa[i]
    local tat, carry = nil, 0
    if state then tat, carry = tb_read(state) end
    local needed = tb_backlog(tat, carry, now) + delta * interval
    if needed <= 0 then
      news[i] = false
    else
      news[i] = tb_state(now, needed)
      if needed > TB_MAX_BACKLOG then needed = TB_MAX_BACKLOG end
      if now + math.ceil(needed) > expiry then expiry = now + math.ceil(needed) end
    end
  elseif kind == 'r' then
    local window, g = pb[i], pc[i]
    local total, idxs, counts, step = nil, {}, {}, g
    if state then
      total, idxs, counts, step = rw_decode(state)
      -- evict
      local oldest = now - math.fmod(now, g) - window
      local first = 1
      while first <= #idxs and idxs[first] < oldest do
        total = total - counts[first]
        first = first + 1
      end
      if first > #idxs then
        total, idxs, counts = nil, {}, {}
      elseif first > 1 then
        local ki, kc = {}, {}
        for j = first, #idxs do
          ki[#ki + 1] = idxs[j]
          kc[#kc + 1] = counts[j]
        end
        idxs, counts = ki, kc
      end
    end
    if delta > 0 then
      local current = now - math.fmod(now, g)
      if total == nil then
        total, idxs, counts, step = delta, {current}, {delta}, g
      elseif idxs[#idxs] == current then
        total = total + delta
        counts[#counts] = counts[#counts] + delta
      else
        total = total + delta
        idxs[#idxs + 1] = current
        counts[#counts + 1] = delta
      end
    elseif delta < 0 and total ~= nil then
      local start = reserved_at - math.fmod(reserved_at, g)
      for j = 1, #idxs do
        if idxs[j] == start then
          local refund = -delta
          if counts[j] < refund then refund = counts[j] end
          local count = counts[j] - refund
          total = total - refund
          if count > 0 then
            counts[j] = count
          elseif #idxs == 1 then
            total = nil
          else
            table.remove(idxs, j)
            table.remove(counts, j)
          end
          break
        end
      end
    end
    if total == nil then
      news[i] = false
    else
      news[i] = rw_encode(total, idxs, counts, step)
      local stop = idxs[#idxs] + window
      local until_ = stop - math.fmod(stop, g) + g
      if until_ > expiry then expiry = until_ end
    end
  else
    local parts = {}
    if state then
      for id, exp in string.gmatch(state, '([^,;]+),([^;]+);') do
        local e = tonumber(exp)
        if e > now and id ~= token then
          parts[#parts + 1] = id .. ',' .. exp .. ';'
          if e > expiry then expiry = e end
        end
      end
    end
    if #parts > 0 then news[i] = table.concat(parts) else news[i] = false end
  end
end

store_sections(KEYS[2], names, news, extras, expiry, now, blob)
redis.call('SET', KEYS[1], record .. '|' .. ARGV[2], 'KEEPTTL')
return {2}
