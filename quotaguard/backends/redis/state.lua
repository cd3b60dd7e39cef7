-- state.lua: the customer's state string, read and written alike by decide.lua, settle.lua
-- and reset.lua: scripts.script_source puts state.lua, ring.lua, store.lua and
-- meaning.lua (the state codec, in that order) in front of each of them, so every script
-- is still one EVALSHA. These four files are the only place that knows the layout.
--
-- Layout of <prefix>:{<id>}:s, one string per customer:
--   header    '<BI4I4dd': 0 (the format marker), C = the offset where the ring regions
--             begin, U = the end of the sections, E = the instant the state stops
--             mattering (quotaguard.core's expiry: from then on it reads as absent, as
--             the memory backend's record does), T = the instant the key's TTL was set
--             to end (T >= E: E may move earlier, as after a refund; the TTL is renewed,
--             to E, only when E moves past T). Both in microseconds of the callers' clock.
--   sections  bytes 26..U, one per limit name: byte #name, name, uint32le #state, state.
--             The name is 'name|meaning' (see quotaguard.core.meaning); bytes U+1..C are
--             room for the sections to grow in place.
--   regions   from offset C: the closed buckets of the rolling windows, fixed slots.
--
-- A token bucket's state is its tat (double), then its carry (double) when not 0; a
-- concurrency limit's is "lease,expiry;" per slot held; a rolling window's is its head
-- '<ddddI4I4B': total, first, last, last count, region offset, slots, slot width. The
-- newest bucket (last, last count) lives in the head; the closed bucket starting at s
-- (first <= s < last, every start a multiple of the granularity g) is slot
-- (s / g) % slots of the region: an unsigned integer of 1, 2 or 4 bytes, or a double
-- (width 8); empty granules hold 0. This is quotaguard.core.rolling_window's Ring.
--
-- The usual write rewrites the header and sections in place (one SETRANGE at 0) and the
-- slots of the buckets it closed (one SETRANGE per run of slots), so it costs the same
-- whatever the number of buckets. The whole string is rebuilt (SET) only when its shape
-- changes: the first write, a ring's first closed bucket (its region is allocated), a
-- ring that must grow (a longer window) or widen (a larger or fractional count), a
-- section converted to another meaning, sections outgrowing their room, and a string of
-- the previous format (varint rings, upgraded on first touch).

local byte, sub, floor, fmod = string.byte, string.sub, math.floor, math.fmod
local pack, unpack_ = struct.pack, struct.unpack

local HEADER = 25             -- bytes of the header
local HEADER_FORMAT = '<BI4I4dd'
local PREFIX = 320             -- bytes read first: the header and, usually, every section
local ROOM = 64               -- spare bytes after the sections, to grow in place
local RING_HEAD = '<ddddI4I4B'
-- a slot of width 1, 2 or 4 holds an unsigned integer below 2 ^ (8 * width), of width 8
-- a double (no constant tables: a table costs every call more than a line of code)
local function slot_format(width)
  if width == 8 then return '<d' end
  return '<I' .. width
end

-- now in integer microseconds: `arg`, or the server's TIME when `arg` is ''
local function clock(arg)
  if arg == '' then
    local t = redis.call('TIME')
    return tonumber(t[1]) * 1000000 + tonumber(t[2])
  end
  return tonumber(arg)
end

-- a time-to-live in milliseconds as Redis reads it: an integer string, at most ~285 years
local function millis(ms)
  if ms > 9007199254741 then ms = 9007199254741 end
  return string.format('%d', ms)
end

-- the TTL of a key that must live until `until_`: at least a second, since a state that
-- matters for microseconds must outlive the call's clock against the server's
local function ttl_ms(until_, now)
  local ms = math.ceil((until_ - now) / 1000)
  if ms < 1000 then ms = 1000 end
  return millis(ms)
end

-- a number for a reply: whole numbers as integers, others exactly as text
local function out(x)
  if x == floor(x) then return x end
  return string.format('%.17g', x)
end

-- A section's slot is its limit's name and kind letter ('burst|t'): a limit of another
-- kind has a section of its own. The meaning after the letter gives the numbers their
-- sense: 't:<unit>:<interval_us>:<capacity>', 'r:<unit>:<granularity_us>' or 'c'.
local function slot(full)
  return string.match(full, '^[^|]*|?%a?')
end

local function base_name(full)
  return string.match(full, '^[^|]*')
end

local function granularity_of(full)
  return tonumber(string.match(full, ':(%d+)$'))
end

-- A customer's stored state in `key` at `now` (nil: whatever its expiry): for each
-- section, by its full name (`name|meaning`), where its state begins in `blob` (`at`,
-- just after its uint32 length); the full names in stored `order`; `expires` (E), `until_`
-- (T), `room` (C); whether the string is of the previous format (`old`). `blob` holds
-- the header and sections only (GETRANGE): the ring regions are read when needed. A
-- state past its expiry E reads as absent (no blob): the next write starts it afresh.
local function read_state(key, now)
  local st = {key = key, blob = nil, at = {}, order = {}, expires = 0,
              until_ = 0, room = 0, old = false}
  local blob = redis.call('GETRANGE', key, 0, PREFIX - 1)
  if blob == '' then return st end
  local pos, stop
  if byte(blob, 1) == 0 then
    local _, room, used, expires, until_ = unpack_(HEADER_FORMAT, blob)
    if now and expires <= now then return st end
    if used > #blob then blob = blob .. redis.call('GETRANGE', key, #blob, used - 1) end
    pos, stop, st.room, st.expires, st.until_ = HEADER + 1, used, room, expires, until_
  else
    blob = redis.call('GET', key)
    pos, stop, st.old = 1, #blob, true
  end
  st.blob = blob
  local at, order = st.at, st.order
  local n = 0
  while pos <= stop do
    local length = byte(blob, pos)
    local full = sub(blob, pos + 1, pos + length)
    at[full] = pos + length + 5
    n = n + 1
    order[n] = full
    pos = pos + length + 5 + unpack_('<I4', blob, pos + length + 1)
  end
  return st
end

-- the state bytes of section `full` of `st` (nil: none)
local function stored(st, full)
  local at = st.at[full]
  if at == nil then return nil end
  return sub(st.blob, at, at + unpack_('<I4', st.blob, at - 4) - 1)
end

-- the stored section of the slot of `full` under another meaning (nil: none)
local function stored_other(st, full)
  local key = slot(full)
  for j = 1, #st.order do
    local other = st.order[j]
    if other ~= full and slot(other) == key then return other end
  end
  return nil
end
