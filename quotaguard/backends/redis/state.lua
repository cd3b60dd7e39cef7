-- state.lua: what decide.lua, settle.lua and reset.lua share; codec.script_source puts
-- this file in front of each of them, so every script is still one EVALSHA.
--
-- A customer's state is one string of sections, one per limit name: byte #name, name,
-- uint32le #state, state (the format of each kind's state: see decide.lua).

local byte, sub, char, floor, fmod = string.byte, string.sub, string.char, math.floor, math.fmod
local pack, unpack_ = struct.pack, struct.unpack

-- now in integer microseconds: `arg`, or the server's TIME when `arg` is ''
local function clock(arg)
  if arg == '' then
    local t = redis.call('TIME')
    return tonumber(t[1]) * 1000000 + tonumber(t[2])
  end
  return tonumber(arg)
end

-- A section's name is the limit's name, '|', and the meaning of its state (the kind and
-- the parameters that give its numbers their sense, see quotaguard.core.meaning):
-- 't:<unit>:<interval_us>:<capacity>', 'r:<unit>:<granularity_us>' or 'c'.
-- A limit of another kind has a section of its own: sections are found by slot, the name
-- and the kind letter ('burst|t').
local function base_name(full)
  return string.match(full, '^[^|]*')
end

local function slot(full)
  return string.match(full, '^[^|]*|?%a?')
end

-- the states of a state string by slot, the whole sections whose slots (or names) are
-- not in `keep` (kept as they are when the string is written back), and each state's
-- full section name (with its meaning) by slot
local function read_sections(blob, keep)
  local states, others, fulls = {}, {}, {}
  if blob then
    local pos, len = 1, #blob
    while pos <= len do
      local nl = byte(blob, pos)
      local full = sub(blob, pos + 1, pos + nl)
      local key = slot(full)
      local stop = pos + nl + 4 + unpack_('<I4', blob, pos + nl + 1)
      states[key] = sub(blob, pos + nl + 5, stop)
      fulls[key] = full
      if not (keep[key] or keep[base_name(full)]) then others[#others + 1] = sub(blob, pos, stop) end
      pos = stop + 1
    end
  end
  return states, others, fulls
end

-- a time-to-live in milliseconds as Redis reads it: an integer string, at most ~285 years
local function millis(ms)
  if ms > 9007199254741 then ms = 9007199254741 end
  return string.format('%d', ms)
end

-- write the non-empty states of `names` (false or nil: empty) and the `others` sections
-- back to `key`, expiring when the last state stops mattering (never before the
-- others' current TTL, nor within a second); delete the key when nothing is left and it `existed`
local function store_sections(key, names, states, others, expiry, now, existed)
  local parts = {}
  for i = 1, #names do
    local state = states[i]
    if state then
      parts[#parts + 1] = char(#names[i]) .. names[i] .. pack('<I4', #state) .. state
    end
  end
  for j = 1, #others do parts[#parts + 1] = others[j] end
  if #parts == 0 then
    if existed then redis.call('DEL', key) end
    return
  end
  local ttl = math.ceil((expiry - now) / 1000)
  if #others > 0 then
    local current = redis.call('PTTL', key)
    if current > ttl then ttl = current end
  end
  -- at least a second: a state that matters for microseconds (a bucket refilling faster
  -- than one unit per microsecond) must outlive the call's clock against the server's
  if ttl < 1000 then ttl = 1000 end
  redis.call('SET', key, table.concat(parts), 'PX', millis(ttl))
end

-- a bucket start's delta may be negative (a limit name shared by plans whose
-- granularities differ): zigzag it
local function zigzag(v)
  if v < 0 then return -2 * v - 1 end
  return 2 * v
end

local function varint(v)
  if v < 128 then return char(v) end
  local t = {}
  while v >= 128 do
    t[#t + 1] = v % 128 + 128
    v = floor(v / 128)
  end
  t[#t + 1] = v
  return char(unpack(t))
end


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

-- one ring entry: count, delta to the next bucket's start, position after it
local function ring_entry(s, pos, step)
  local x
  x, pos = uvarint(s, pos)
  local flags = x % 4
  local count
  if flags >= 2 then
    count = unpack_('<d', s, pos)
    pos = pos + 8
  else
    count = (x - flags) / 4
  end
  if flags % 2 == 0 then return count, step, pos end
  x, pos = uvarint(s, pos)
  if x % 2 == 1 then return count, -(x + 1) / 2, pos end
  return count, x / 2, pos
end

-- one ring entry's bytes
local function ring_put(count, delta, step)
  local flags = 0
  if delta ~= step then flags = 1 end
  local s
  if count == floor(count) and count >= 0 and count < 2251799813685248 then
    s = varint(count * 4 + flags)
  else
    s = varint(2 + flags) .. pack('<d', count)
  end
  if flags == 1 then s = s .. varint(zigzag(delta)) end
  return s
end

-- rolling window: decode to arrays of bucket starts and counts (format: see decide.lua)
local function rw_decode(s)
  local total, first, last, lc, step = unpack_('<ddddd', s)
  local starts, counts = {}, {}
  local start, pos, len = first, 41, #s
  while pos <= len do
    local count, delta
    count, delta, pos = ring_entry(s, pos, step)
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
    parts[#parts + 1] = ring_put(counts[j], starts[j + 1] - starts[j], step)
  end
  return table.concat(parts)
end

-- token bucket: a state is its tat (double), then its carry (double) when not 0
local TB_SLACK, TB_EPSILON, TB_MAX_BACKLOG = 2 ^ -36, 1e-9, 4503599627370496

local function tb_read(s)
  if #s >= 16 then return unpack_('<dd', s) end
  return unpack_('<d', s), 0
end

local function tb_backlog(tat, carry, now)
  if tat == nil then return 0 end
  local backlog = (tat - now) + carry
  if backlog > 0 then return backlog end
  return 0
end

-- the state holding a backlog of `needed` microseconds at `now` (false: full)
local function tb_state(now, needed)
  if needed > TB_MAX_BACKLOG then needed = TB_MAX_BACKLOG end
  if needed <= 0 then return false end
  local whole = floor(needed)
  local carry = needed - whole
  if carry ~= 0 then return pack('<dd', now + whole, carry) end
  return pack('<d', now + whole)
end

-- a state kept under the full section name `stored`, as the state of the limit whose
-- full name is `full` (kind, a, b, c as in decide.lua's plan) at `now`: quotaguard.core's
-- meaning.convert, operation for operation; nil when it starts fresh
local function convert(stored, raw, full, kind, a, b, c, now)
  if raw == nil or stored == full then return raw end
  local old, new = {}, {}
  for p in string.gmatch(string.match(stored, '|(.*)$') or '', '[^:]+') do old[#old + 1] = p end
  for p in string.gmatch(string.match(full, '|(.*)$') or '', '[^:]+') do new[#new + 1] = p end
  if kind == 'c' then
    if old[1] == 'c' then return raw end
    return nil
  end
  if old[1] ~= kind or #old < 3 or old[2] ~= new[2] then return nil end
  if kind == 't' then
    local tat, carry = tb_read(raw)
    local backlog = tb_backlog(tat, carry, now)
    if backlog <= 0 then return nil end
    local used = backlog / tonumber(old[3])
    if used > b then used = b end
    return tb_state(now, used * a) or nil
  end
  local g = c
  local old_g = tonumber(old[3])
  local total, starts, counts = rw_decode(raw)
  local ns, nc = {}, {}
  for j = 1, #starts do
    local latest = starts[j] + old_g - 1
    if latest > now then latest = now end
    local start = latest - fmod(latest, g)
    if #ns > 0 and ns[#ns] == start then
      nc[#nc] = nc[#nc] + counts[j]
    else
      ns[#ns + 1] = start
      nc[#nc + 1] = counts[j]
    end
  end
  return rw_encode(total, ns, nc, g)
end
