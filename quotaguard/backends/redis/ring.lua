-- ring.lua: a rolling window's ring in the state string (after state.lua, see there for
-- the layout): reading its head and slots, evicting, adding, refunding, the SETRANGE
-- writes of the slots a call changed, and a fresh region. quotaguard.core.rolling_window's
-- arithmetic, operation for operation.
--
-- A ring in hand is a table {total, first, last, lc, off, slots, width, g, key, region,
-- chunk, chunk_at, chunk_stop, patch}: its head; the key holding its region, and what
-- this call has read of it: the whole region (`region`, for a walk or a rebuild), or the
-- slots chunk_at..chunk_stop (`chunk`, for an eviction or a refund: a few slots, one
-- GETRANGE); `patch`, the closed buckets changed by this call by start (false: none
-- yet), written back by `store`. A call that needs no closed bucket reads none.

local CHUNK = 32  -- slots read at once when a call needs only a few

-- read the whole region of `r` (a walk or a rebuild needs every slot)
local function ring_load(r)
  if not r.region and r.slots > 0 then
    r.region = redis.call('GETRANGE', r.key, r.off, r.off + r.slots * r.width - 1)
  end
end

local function ring_get(r, start)
  local patch = r.patch
  if patch then
    local count = patch[start]
    if count ~= nil then return count end
  end
  if r.slots == 0 then return 0 end
  local width = r.width
  local index = floor(start / r.g) % r.slots
  if r.region then return (unpack_(slot_format(width), r.region, index * width + 1)) end
  if not r.chunk or index < r.chunk_at or index > r.chunk_stop then
    local stop = index + CHUNK - 1
    if stop >= r.slots then stop = r.slots - 1 end
    r.chunk = redis.call('GETRANGE', r.key, r.off + index * width, r.off + (stop + 1) * width - 1)
    r.chunk_at, r.chunk_stop = index, stop
  end
  return (unpack_(slot_format(width), r.chunk, (index - r.chunk_at) * width + 1))
end

local function ring_with(r, total, first, last, lc, patch)
  return {total = total, first = first, last = last, lc = lc, off = r.off, slots = r.slots,
          width = r.width, g = r.g, key = r.key, region = r.region, chunk = r.chunk,
          chunk_at = r.chunk_at, chunk_stop = r.chunk_stop, patch = patch}
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

-- the rolling window kept in section `full` of `st`, with granularity g (nil: empty)
local function ring_read(st, full, g)
  local at = st.at[full]
  if at == nil then return nil end
  if st.old then return ring_upgrade(stored(st, full), g) end
  local total, first, last, lc, off, slots, width = unpack_(RING_HEAD, st.blob, at)
  return {total = total, first = first, last = last, lc = lc, off = off, slots = slots,
          width = width, g = g, key = st.key, region = false, patch = false}
end

-- the flat bucket list quotaguard.core's Ring.buckets() gives, numbers as `out` sends
-- them, of `r` as it was with newest bucket `last` holding `lc` and `total` in all (its
-- own head by default: `ring_add` may have moved it on since)
local function ring_flat(r, total, last, lc)
  total, last, lc = total or r.total, last or r.last, lc or r.lc
  ring_load(r)
  local flat = {out(total)}
  local n = 1
  for start = r.first, last - r.g, r.g do
    local count = ring_get(r, start)
    if count ~= 0 then
      flat[n + 1], flat[n + 2] = start, out(count)
      n = n + 2
    end
  end
  flat[n + 1], flat[n + 2] = last, out(lc)
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

-- `r` (evicted) with `amount` more in the bucket starting at `current`: `r` itself,
-- changed (a ring in hand belongs to one call), or a new ring when there is none
local function ring_add(r, current, amount, g)
  if r == nil then
    return {total = amount, first = current, last = current, lc = amount, off = 0, slots = 0,
            width = 1, g = g, patch = false}
  end
  r.total = r.total + amount
  if r.last == current then
    r.lc = r.lc + amount
    return r
  end
  local patch = r.patch or {}
  patch[r.last] = r.lc
  for start = r.last + g, current - g, g do patch[start] = 0 end
  r.patch, r.last, r.lc = patch, current, amount
  return r
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
    local limit = 2 ^ (8 * width)
    for start, count in pairs(patch) do
      if start >= r.first and start < r.last
        and (count < 0 or count ~= floor(count) or count >= limit) then
        return false
      end
    end
  end
  return true
end

-- `writes` (nil: none yet) and the SETRANGE writes of the closed buckets this call
-- changed: {offset, bytes} per run
local function ring_writes(r, writes)
  local patch = r.patch
  if not patch or r.slots == 0 then return writes end
  writes = writes or {}
  local g, slots, width, first, last = r.g, r.slots, r.width, r.first, r.last
  local format, at, runs = slot_format(width), {}, {}
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
  return writes
end

-- a fresh region for `r` with `slots` slots: (bytes, width)
local function ring_region(r, slots)
  ring_load(r)
  local g, width = r.g, 1
  local counts = {}
  for start = r.first, r.last - g, g do
    local count = ring_get(r, start)
    counts[#counts + 1] = count
    if count < 0 or count ~= floor(count) or count >= 4294967296 then
      width = 8
    elseif width < 8 and count >= 2 ^ (8 * width) then
      if count >= 65536 then width = 4 else width = 2 end
    end
  end
  local format, parts = slot_format(width), {}
  local zero = pack(format, 0)
  for index = 1, slots do parts[index] = zero end
  local index = floor(r.first / g) % slots
  for j = 1, #counts do
    parts[index + 1] = pack(format, counts[j])
    index = (index + 1) % slots
  end
  return table.concat(parts), width
end
