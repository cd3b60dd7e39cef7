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

local function uvarint(s, pos)
  local b = byte(s, pos)
  local x, m = b % 128, 128
  while b >= 128 do
    pos = pos + 1
    b = byte(s, pos)
    x = x + (b % 128) * m
    m = m * 128
  end
  return x, pos + 1
end

-- rolling window: decode to arrays of bucket starts and counts (format: see decide.lua)
local function rw_decode(s)
  local total, first, last, lc, step = unpack_('<ddddd', s)
  local starts, counts = {}, {}
  local start, pos, len = first, 41, #s
  while pos <= len do
    local x, count, delta
    x, pos = uvarint(s, pos)
    local flags = x % 4
    if flags >= 2 then
      count = unpack_('<d', s, pos)
      pos = pos + 8
    else
      count = (x - flags) / 4
    end
    if flags % 2 == 1 then
      delta, pos = uvarint(s, pos)
      if delta % 2 == 1 then delta = -(delta + 1) / 2 else delta = delta / 2 end
    else
      delta = step
    end
    starts[#starts + 1] = start
    counts[#counts + 1] = count
    start = start + delta
  end
  starts[#starts + 1] = last
  counts[#counts + 1] = lc
  return total, starts, counts, step
end

local function rw_encode(total, starts, counts, step)
  local m = #starts
  local parts = {pack('<ddddd', total, starts[1], starts[m], counts[m], step)}
  for j = 1, m - 1 do
    local delta = starts[j + 1] - starts[j]
    local count = counts[j]
    local flags = 0
    if delta ~= step then flags = 1 end
    if count == floor(count) and count >= 0 and count < 2251799813685248 then
      parts[#parts + 1] = varint(count * 4 + flags)
    else
      parts[#parts + 1] = varint(2 + flags) .. pack('<d', count)
    end
    if flags == 1 then parts[#parts + 1] = varint(zigzag(delta)) end
  end
  return table.concat(parts)
end

local kinds, names, pa, pb, pc, in_plan = {}, {}, {}, {}, {}, {}
local n = 0
for k, name, a, b, c in string.gmatch(ARGV[4], '(%a) (%S+) (%S+) (%S+) (%S+)') do
  n = n + 1
  kinds[n], names[n], pa[n], pb[n], pc[n] = k, name, tonumber(a), tonumber(b), tonumber(c)
  in_plan[name] = true
end
local deltas = {}
for x in string.gmatch(ARGV[5], '%S+') do deltas[#deltas + 1] = tonumber(x) end

local blob = redis.call('GET', KEYS[2])
local raw, extras = read_sections(blob, in_plan)

local expiry = now
local news = {}
for i = 1, n do
  local kind = kinds[i]
  local delta = deltas[i]
  local state = raw[names[i]]
  if kind == 't' then
    local interval = pa[i]
    local tat = nil
    if state then tat = unpack_('<d', state) end
    local backlog = 0
    if tat ~= nil and tat > now then backlog = tat - now end
    local new_tat = now + math.floor(backlog + delta * interval)
    if new_tat <= now then
      news[i] = false
    else
      news[i] = pack('<d', new_tat)
      if new_tat > expiry then expiry = new_tat end
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
