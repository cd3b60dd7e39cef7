-- settle.lua: settle a lease: charge the actual cost instead of the estimate, free its
-- concurrency slots; idempotent.
--
-- KEYS[1]  the lease record "retain_until,reserved_at[|settled actual cost as JSON]"
-- KEYS[2]  the customer's state hash (one field per limit name)
-- ARGV[1]  now in integer microseconds, or '' for the server's TIME
-- ARGV[2]  the actual cost as JSON (kept in the record)
-- ARGV[3]  the lease token
-- ARGV[4.. ] five per limit of the plan the lease was reserved on (see decide.lua),
--          then one delta (actual - estimate charged to that limit) per limit
-- Reply:   {0}  unknown or expired lease
--          {1, settled}  settled before (the actual cost then, as JSON): nothing charged
--          {2}  settled now
--
-- The arithmetic is quotaguard.core's settle functions, operation for operation.

local function f(x) return string.format('%.17g', x) end

local now
if ARGV[1] == '' then
  local t = redis.call('TIME')
  now = tonumber(t[1]) * 1000000 + tonumber(t[2])
else
  now = tonumber(ARGV[1])
end
local record = redis.call('GET', KEYS[1])
if not record then return {0} end
local retain, reserved_at, bar, settled = string.match(record, '^([^,]+),([^|]+)(|?)(.*)$')
if tonumber(retain) <= now then return {0} end
if bar ~= '' then return {1, settled} end
reserved_at = tonumber(reserved_at)
local token = ARGV[3]

-- rolling window: decode to arrays of bucket starts and counts (see decide.lua)
local function rw_decode(s)
  local sep = string.find(s, ';', 1, true)
  local a, b, c, d, e = string.match(string.sub(s, 1, sep - 1),
    '^([^,]+),([^,]+),([^,]+),([^,]+),([^,]+)$')
  local total, start, step = tonumber(a), tonumber(b), tonumber(e)
  local starts, counts = {}, {}
  for entry in string.gmatch(string.sub(s, sep + 1), '([^;]+);') do
    local colon = string.find(entry, ':', 1, true)
    starts[#starts + 1] = start
    if colon then
      counts[#counts + 1] = tonumber(string.sub(entry, 1, colon - 1))
      start = start + tonumber(string.sub(entry, colon + 1))
    else
      counts[#counts + 1] = tonumber(entry)
      start = start + step
    end
  end
  starts[#starts + 1] = tonumber(c)
  counts[#counts + 1] = tonumber(d)
  return total, starts, counts, step
end

local function rw_encode(total, starts, counts, step)
  local m = #starts
  local parts = {f(total) .. ',' .. f(starts[1]) .. ',' .. f(starts[m]) .. ',' .. f(counts[m])
    .. ',' .. f(step) .. ';'}
  for j = 1, m - 1 do
    local delta = starts[j + 1] - starts[j]
    if delta ~= step then
      parts[#parts + 1] = f(counts[j]) .. ':' .. f(delta) .. ';'
    else
      parts[#parts + 1] = f(counts[j]) .. ';'
    end
  end
  return table.concat(parts)
end

local n = (#ARGV - 3) / 6
local names = {}
for i = 1, n do names[i] = ARGV[4 + (i - 1) * 5 + 1] end
local raw = {}
if n > 0 then raw = redis.call('HMGET', KEYS[2], unpack(names)) end
local expiry = now
local news = {}
for i = 1, n do
  local base = 4 + (i - 1) * 5
  local kind = ARGV[base]
  local delta = tonumber(ARGV[3 + 5 * n + i])
  if kind == 't' then
    local interval = tonumber(ARGV[base + 2])
    local tat = raw[i] and tonumber(raw[i]) or nil
    local backlog = 0
    if tat ~= nil and tat > now then backlog = tat - now end
    local new_tat = now + math.floor(backlog + delta * interval)
    if new_tat <= now then
      news[i] = false
    else
      news[i] = f(new_tat)
      if new_tat > expiry then expiry = new_tat end
    end
  elseif kind == 'r' then
    local window = tonumber(ARGV[base + 3])
    local g = tonumber(ARGV[base + 4])
    local total, idxs, counts, step = nil, {}, {}, g
    if raw[i] then
      total, idxs, counts, step = rw_decode(raw[i])
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
    if raw[i] then
      for id, exp in string.gmatch(raw[i], '([^,;]+),([^;]+);') do
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
redis.call('SET', KEYS[1], record .. '|' .. ARGV[2], 'KEEPTTL')
return {2}
