-- state.lua: the customer's state string, read and written alike by decide.lua, settle.lua
-- and reset.lua (codec.script_source puts this file in front of each of them, so every
-- script is still one EVALSHA). It is the only place that knows the layout.
--
-- Layout of <prefix>:{<id>}:s, one string per customer:
--   header    '<BI4I4dd': 0 (the format marker), C = the offset where the ring regions
--             begin, U = the end of the sections, E = the instant the state stops
--             mattering (quotaguard.core's expiry: from then on it reads as absent, as
--             the memory backend's record does), T = the instant the key's TTL was set
--             to end (T >= E; renewed only when E passes it). Both in microseconds of the
--             callers' clock.
--   sections  bytes 18..U, one per limit name: byte #name, name, uint32le #state, state.
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
local ROOM = 64               -- spare bytes after the sections, to grow in place
local REFRESH = 60000000      -- a renewed TTL ends this long (us) after E: renewed rarely
local RING_HEAD = '<ddddI4I4B'
local SLOT_FORMAT = {[1] = '<I1', [2] = '<I2', [4] = '<I4', [8] = '<d'}
local SLOT_LIMIT = {[1] = 256, [2] = 65536, [4] = 4294967296}

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

-- A customer's stored state at `now` (nil: whatever its expiry): `states` and `fulls`
-- (the full section names) by slot, in `order`; `expires` (E), `until_` (T), `room` (C),
-- whether the string is of the previous format (`old`). A state past its expiry E reads
-- as absent, blob included: the next write starts it afresh.
local function read_state(blob, now)
  local st = {blob = blob, states = {}, fulls = {}, order = {}, expires = 0, until_ = 0,
              room = 0, old = false}
  if not blob then return st end
  local pos, stop = 1, #blob
  if byte(blob, 1) == 0 then
    local _, room, used, expires, until_ = unpack_(HEADER_FORMAT, blob)
    if now and expires <= now then
      st.blob = nil
      return st
    end
    pos, stop, st.room, st.expires, st.until_ = HEADER + 1, used, room, expires, until_
  else
    st.old = true
  end
  local states, fulls, order = st.states, st.fulls, st.order
  while pos <= stop do
    local length = byte(blob, pos)
    local full = sub(blob, pos + 1, pos + length)
    local key = slot(full)
    local size = unpack_('<I4', blob, pos + length + 1)
    states[key] = sub(blob, pos + length + 5, pos + length + 4 + size)
    fulls[key] = full
    order[#order + 1] = key
    pos = pos + length + 5 + size
  end
  return st
end

-- -- rolling windows ------------------------------------------------------------------
-- A ring in hand is a table {total, first, last, lc, off, slots, width, g, blob, patch}:
-- its head, the string holding its region, and `patch`, the closed buckets changed by
-- this call by start (false: none yet), written back by `store`.

local function ring_get(r, start)
  local patch = r.patch
  if patch then
    local count = patch[start]
    if count ~= nil then return count end
  end
  if r.slots == 0 then return 0 end
  local width = r.width
  return (unpack_(SLOT_FORMAT[width], r.blob, r.off + (floor(start / r.g) % r.slots) * width + 1))
end

local function ring_with(r, total, first, last, lc, patch)
  return {total = total, first = first, last = last, lc = lc, off = r.off, slots = r.slots,
          width = r.width, g = r.g, blob = r.blob, patch = patch}
end

-- a ring from its buckets {total, start_1, count_1, ...} (quotaguard.core's from_buckets):
-- it has no region yet, `store` allocates one
local function ring_from_buckets(flat, g)
  local n = #flat
  if n < 3 then return nil end
  local patch = {}
  for j = 2, n - 3, 2 do patch[flat[j]] = (patch[flat[j]] or 0) + flat[j + 1] end
  return {total = flat[1], first = flat[2], last = flat[n - 1], lc = flat[n], off = 0,
          slots = 0, width = 1, g = g, patch = patch}
end

-- the previous format's ring (a varint ring: five doubles, then a varint per bucket)
local function ring_upgrade(s, g)
  local function uvarint(pos)
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
  local total, first, last, lc, step = unpack_('<ddddd', s)
  local flat, start, pos = {total}, first, 41
  while pos <= #s do
    local x
    x, pos = uvarint(pos)
    local flags = x % 4
    local count = (x - flags) / 4
    if flags >= 2 then
      count = unpack_('<d', s, pos)
      pos = pos + 8
    end
    flat[#flat + 1], flat[#flat + 2] = start, count
    local delta = step
    if flags % 2 == 1 then
      x, pos = uvarint(pos)
      if x % 2 == 1 then delta = -(x + 1) / 2 else delta = x / 2 end
    end
    start = start + delta
  end
  flat[#flat + 1], flat[#flat + 2] = last, lc
  return ring_from_buckets(flat, g)
end

-- the rolling window kept in section `key` of `st`, with granularity g (nil: empty)
local function ring_read(st, key, g)
  local s = st.states[key]
  if s == nil then return nil end
  if st.old then return ring_upgrade(s, g) end
  local total, first, last, lc, off, slots, width = unpack_(RING_HEAD, s)
  return {total = total, first = first, last = last, lc = lc, off = off, slots = slots,
          width = width, g = g, blob = st.blob, patch = false}
end

-- the flat bucket list quotaguard.core's Ring.buckets() gives, numbers as `out` sends them
local function ring_flat(r)
  local flat = {out(r.total)}
  for start = r.first, r.last - r.g, r.g do
    local count = ring_get(r, start)
    if count ~= 0 then
      flat[#flat + 1] = start
      flat[#flat + 1] = out(count)
    end
  end
  flat[#flat + 1] = r.last
  flat[#flat + 1] = out(r.lc)
  return flat
end

-- quotaguard.core.rolling_window.evict: drop the buckets that left the window at `now`
local function ring_evict(r, now, window)
  if r == nil then return nil end
  local g = r.g
  local oldest = now - fmod(now, g) - window
  local first, last, total = r.first, r.last, r.total
  if first >= oldest then return r end
  while first < last and first < oldest do
    total = total - ring_get(r, first)
    first = first + g
  end
  while first < last and ring_get(r, first) == 0 do first = first + g end
  if first >= last and last < oldest then return nil end
  return ring_with(r, total, first, last, r.lc, r.patch)
end

-- `r` (evicted) with `amount` more in the bucket starting at `current`
local function ring_add(r, current, amount, g)
  if r == nil then
    return {total = amount, first = current, last = current, lc = amount, off = 0, slots = 0,
            width = 1, g = g, patch = false}
  end
  if r.last == current then
    return ring_with(r, r.total + amount, r.first, current, r.lc + amount, r.patch)
  end
  local patch = r.patch or {}
  patch[r.last] = r.lc
  for start = r.last + g, current - g, g do patch[start] = 0 end
  return ring_with(r, r.total + amount, r.first, current, amount, patch)
end

-- quotaguard.core.rolling_window._refunded: up to `refund` units out of the bucket at `start`
local function ring_refund(r, start, refund)
  local g, first, last = r.g, r.first, r.last
  if start == last then
    local taken = refund
    if r.lc < taken then taken = r.lc end
    local count = r.lc - taken
    if count > 0 then return ring_with(r, r.total - taken, first, last, count, r.patch) end
    if first >= last then return nil end
    local newest = last - g
    while ring_get(r, newest) == 0 do newest = newest - g end
    return ring_with(r, r.total - taken, first, newest, ring_get(r, newest), r.patch)
  end
  if start < first or start > last or fmod(start - first, g) ~= 0 then return r end
  local count = ring_get(r, start)
  if count == 0 then return r end
  local taken = refund
  if count < taken then taken = count end
  local patch = r.patch or {}
  patch[start] = count - taken
  local kept = ring_with(r, r.total - taken, first, last, r.lc, patch)
  while first < last and ring_get(kept, first) == 0 do first = first + g end
  kept.first = first
  return kept
end

-- the first instant the newest bucket of `r` leaves a window of `window` us
local function ring_drop(r, window)
  local stop = r.last + window
  return stop - fmod(stop, r.g) + r.g
end

-- whether the closed buckets of `r` fit its region as it is
local function ring_in_place(r)
  local closed = (r.last - r.first) / r.g
  if closed == 0 then return true end
  if closed > r.slots then return false end
  local patch, width = r.patch, r.width
  if patch and width ~= 8 then
    local limit = SLOT_LIMIT[width]
    for start, count in pairs(patch) do
      if start >= r.first and start < r.last
        and (count < 0 or count ~= floor(count) or count >= limit) then
        return false
      end
    end
  end
  return true
end

-- the SETRANGE writes of the closed buckets this call changed: {offset, bytes} per run
local function ring_writes(r, writes)
  local patch = r.patch
  if not patch or r.slots == 0 then return end
  local g, slots, width, first, last = r.g, r.slots, r.width, r.first, r.last
  local format, at, runs = SLOT_FORMAT[width], {}, {}
  for start, count in pairs(patch) do
    if start >= first and start < last then
      local index = floor(start / g) % slots
      at[#at + 1] = index
      runs[index] = pack(format, count)
    end
  end
  table.sort(at)
  local j = 1
  while j <= #at do
    local k, parts = j, {runs[at[j]]}
    while k < #at and at[k + 1] == at[k] + 1 do
      k = k + 1
      parts[#parts + 1] = runs[at[k]]
    end
    writes[#writes + 1] = {r.off + at[j] * width, table.concat(parts)}
    j = k + 1
  end
end

-- a fresh region for `r` with `slots` slots: (bytes, width)
local function ring_region(r, slots)
  local g, width = r.g, 1
  local counts = {}
  for start = r.first, r.last - g, g do
    local count = ring_get(r, start)
    counts[#counts + 1] = count
    if count < 0 or count ~= floor(count) or count >= 4294967296 then
      width = 8
    elseif width < 8 and count >= SLOT_LIMIT[width] then
      if count >= 65536 then width = 4 else width = 2 end
    end
  end
  local format, parts = SLOT_FORMAT[width], {}
  local zero = pack(format, 0)
  for index = 1, slots do parts[index] = zero end
  local index = floor(r.first / g) % slots
  for j = 1, #counts do
    parts[index + 1] = pack(format, counts[j])
    index = (index + 1) % slots
  end
  return table.concat(parts), width
end

-- -- writing ----------------------------------------------------------------------------

local function section(full, state)
  return string.char(#full) .. full .. pack('<I4', #state) .. state
end

-- the whole string anew: `names`/`news` the plan's sections (a string, a ring, or false
-- when empty), `kept` the full names of the other sections to keep; regions allocated
-- for every ring (`windows[i]`: the slots a plan's ring needs); E = expiry, T = until_
local function rebuild(st, names, news, windows, kept, expiry, until_)
  local heads, rings = {}, {}
  for i = 1, #names do
    local state = news[i]
    if type(state) == 'table' then
      rings[#rings + 1] = {#heads + 1, state, windows[i]}
      heads[#heads + 1] = names[i]
    elseif state then
      heads[#heads + 1] = section(names[i], state)
    end
  end
  for j = 1, #kept do
    local key = kept[j]
    local full = st.fulls[key]
    if string.sub(key, -2) == '|r' then
      local r = ring_read(st, key, granularity_of(full))
      rings[#rings + 1] = {#heads + 1, r, r.slots}
      heads[#heads + 1] = full
    else
      heads[#heads + 1] = section(full, st.states[key])
    end
  end
  if #heads == 0 then return nil end
  local used = HEADER
  for j = 1, #heads do used = used + #heads[j] end
  used = used + 5 * #rings + 41 * #rings  -- a ring's section: its name plus its head
  local room = used + ROOM
  local regions, off = {}, room
  for j = 1, #rings do
    local at, r, slots = rings[j][1], rings[j][2], rings[j][3]
    local closed = (r.last - r.first) / r.g
    if closed > slots then slots = closed end
    local width = 1
    if closed == 0 then
      slots = 0
    else
      regions[#regions + 1], width = ring_region(r, slots)
    end
    heads[at] = section(heads[at], pack(RING_HEAD, r.total, r.first, r.last, r.lc,
      slots == 0 and 0 or off, slots, width))
    off = off + slots * width
  end
  return pack(HEADER_FORMAT, 0, room, used, expiry, until_) .. table.concat(heads)
    .. string.rep('\0', room - used) .. table.concat(regions)
end

-- Store the plan's sections `names`/`news` (news[i]: a string, a ring, or false when
-- empty; windows[i]: the slots the plan's ring i needs) and keep the stored sections of
-- limits outside the plan (slots not in `in_plan`), expiring at `expiry` (never before
-- the kept sections' expiry, nor within a second); delete the key when nothing is left.
local function store(key, st, names, news, windows, in_plan, expiry, now)
  local kept = {}
  for j = 1, #st.order do
    local slot_key = st.order[j]
    if not in_plan[slot_key] then kept[#kept + 1] = slot_key end
  end
  if st.old and st.blob and #kept > 0 then
    local pttl = redis.call('PTTL', key)
    if pttl > 0 then st.expires = now + pttl * 1000 end
  end
  if #kept > 0 and st.expires > expiry then expiry = st.expires end
  local in_place = st.blob and not st.old
  local writes = {}
  if in_place then
    for i = 1, #names do
      local state = news[i]
      if type(state) == 'table' then
        if state.off == 0 or state.blob ~= st.blob or not ring_in_place(state) then
          if (state.last - state.first) / state.g > 0 then in_place = false end
        end
      end
    end
  end
  if in_place then
    local heads = {}
    for i = 1, #names do
      local state = news[i]
      if type(state) == 'table' then
        ring_writes(state, writes)
        heads[#heads + 1] = section(names[i], pack(RING_HEAD, state.total, state.first,
          state.last, state.lc, state.off, state.slots, state.width))
      elseif state then
        heads[#heads + 1] = section(names[i], state)
      end
    end
    for j = 1, #kept do heads[#heads + 1] = section(st.fulls[kept[j]], st.states[kept[j]]) end
    if #heads == 0 then
      redis.call('DEL', key)
      return
    end
    local text = table.concat(heads)
    local used = HEADER + #text
    if used <= st.room then
      local until_ = st.until_
      local renew = expiry > until_
      if renew then until_ = expiry + REFRESH end
      redis.call('SETRANGE', key, 0, pack(HEADER_FORMAT, 0, st.room, used, expiry, until_) .. text)
      for j = 1, #writes do redis.call('SETRANGE', key, writes[j][1], writes[j][2]) end
      if renew then redis.call('PEXPIRE', key, ttl_ms(until_, now)) end
      return
    end
  end
  local until_ = expiry + REFRESH
  local blob = rebuild(st, names, news, windows, kept, expiry, until_)
  if blob == nil then
    if st.blob then redis.call('DEL', key) end
    return
  end
  redis.call('SET', key, blob, 'PX', ttl_ms(until_, now))
end

-- -- token buckets --------------------------------------------------------------------

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

-- -- meanings ---------------------------------------------------------------------------

-- the state of slot `key` of `st` as the state of the limit whose full section name is
-- `full` (kind, a, b, c as in decide.lua's plan) at `now`: quotaguard.core's
-- meaning.convert, operation for operation; nil when it starts fresh. A rolling window's
-- comes as a ring; `converted` tells whether the meaning differed.
local function limit_state(st, key, full, kind, a, b, c, now)
  local raw = st.states[key]
  if raw == nil then return nil, false end
  local stored = st.fulls[key]
  if stored == full then
    if kind == 'r' then return ring_read(st, key, c), st.old end
    return raw, st.old
  end
  local old, new = {}, {}
  for p in string.gmatch(string.match(stored, '|(.*)$') or '', '[^:]+') do old[#old + 1] = p end
  for p in string.gmatch(string.match(full, '|(.*)$') or '', '[^:]+') do new[#new + 1] = p end
  if kind == 'c' then
    if old[1] == 'c' then return raw, true end
    return nil, true
  end
  if old[1] ~= kind or #old < 3 or old[2] ~= new[2] then return nil, true end
  if kind == 't' then
    local tat, carry = tb_read(raw)
    local backlog = tb_backlog(tat, carry, now)
    if backlog <= 0 then return nil, true end
    local used = backlog / tonumber(old[3])
    if used > b then used = b end
    return tb_state(now, used * a) or nil, true
  end
  local g, old_g = c, tonumber(old[3])
  local flat = ring_flat(ring_read(st, key, old_g))
  local moved = {tonumber(flat[1])}
  for j = 2, #flat, 2 do
    local latest = flat[j] + old_g - 1
    if latest > now then latest = now end
    local start = latest - fmod(latest, g)
    local count = tonumber(flat[j + 1])
    if #moved > 1 and moved[#moved - 1] == start then
      moved[#moved] = moved[#moved] + count
    else
      moved[#moved + 1], moved[#moved + 2] = start, count
    end
  end
  return ring_from_buckets(moved, g), true
end
