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

-- the states of a state string by limit name, and the whole sections whose names are
-- not in `keep` (kept as they are when the string is written back)
local function read_sections(blob, keep)
  local states, others = {}, {}
  if blob then
    local pos, len = 1, #blob
    while pos <= len do
      local nl = byte(blob, pos)
      local name = sub(blob, pos + 1, pos + nl)
      local stop = pos + nl + 4 + unpack_('<I4', blob, pos + nl + 1)
      states[name] = sub(blob, pos + nl + 5, stop)
      if not keep[name] then others[#others + 1] = sub(blob, pos, stop) end
      pos = stop + 1
    end
  end
  return states, others
end

-- write the non-empty states of `names` (false or nil: empty) and the `others` sections
-- back to `key`, expiring when the last state stops mattering (never before the
-- others' current TTL); delete the key when nothing is left and it `existed`
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
  if ttl < 1 then ttl = 1 end
  redis.call('SET', key, table.concat(parts), 'PX', ttl)
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

