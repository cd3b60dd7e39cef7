-- store.lua: writing the state string back (after state.lua and ring.lua): in place with
-- SETRANGE when its shape holds, else rebuilt whole with SET; the key's TTL.

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
    local full = kept[j]
    if string.match(full, '|(%a)') == 'r' then
      local r = ring_read(st, full, granularity_of(full))
      rings[#rings + 1] = {#heads + 1, r, r.slots}
      heads[#heads + 1] = full
    else
      heads[#heads + 1] = section(full, stored(st, full))
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

-- the full names of the stored sections of limits outside the plan (`names`): a slot the
-- plan holds under another meaning is the plan's (it was converted), not kept
local function kept_of(st, names)
  local kept, n = {}, 0
  for j = 1, #st.order do
    local full = st.order[j]
    local mine = false
    for i = 1, #names do
      if names[i] == full then
        mine = true
        break
      end
    end
    if not mine then
      local key = slot(full)
      for i = 1, #names do
        if slot(names[i]) == key then
          mine = true
          break
        end
      end
    end
    if not mine then
      n = n + 1
      kept[n] = full
    end
  end
  return kept
end

-- Store the plan's sections `names`/`news` (news[i]: a string, a ring, or false when
-- empty; windows[i]: the slots the plan's ring i needs) and keep the stored sections of
-- limits outside the plan, expiring at `expiry` (never before the kept sections'
-- expiry); delete the key when nothing is left.
local function store(key, st, names, news, windows, expiry, now)
  local kept = kept_of(st, names)
  if st.old and st.blob and #kept > 0 then
    local pttl = redis.call('PTTL', key)
    if pttl > 0 then st.expires = now + pttl * 1000 end
  end
  if #kept > 0 and st.expires > expiry then expiry = st.expires end
  local in_place = st.blob and not st.old
  local writes
  if in_place then
    for i = 1, #names do
      local state = news[i]
      if type(state) == 'table' then
        if state.off == 0 or state.key ~= st.key or not ring_in_place(state) then
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
        writes = ring_writes(state, writes)
        heads[#heads + 1] = section(names[i], pack(RING_HEAD, state.total, state.first,
          state.last, state.lc, state.off, state.slots, state.width))
      elseif state then
        heads[#heads + 1] = section(names[i], state)
      end
    end
    for j = 1, #kept do heads[#heads + 1] = section(kept[j], stored(st, kept[j])) end
    if #heads == 0 then
      redis.call('DEL', key)
      return
    end
    local text = table.concat(heads)
    local used = HEADER + #text
    if used <= st.room then
      local until_ = st.until_
      local renew = expiry > until_
      if renew then until_ = expiry end
      redis.call('SETRANGE', key, 0, pack(HEADER_FORMAT, 0, st.room, used, expiry, until_) .. text)
      for j = 1, writes and #writes or 0 do
        redis.call('SETRANGE', key, writes[j][1], writes[j][2])
      end
      if renew then redis.call('PEXPIRE', key, ttl_ms(until_, now)) end
      return
    end
  end
  local until_ = expiry
  local blob = rebuild(st, names, news, windows, kept, expiry, until_)
  if blob == nil then
    if st.blob then redis.call('DEL', key) end
    return
  end
  redis.call('SET', key, blob, 'PX', ttl_ms(until_, now))
end
