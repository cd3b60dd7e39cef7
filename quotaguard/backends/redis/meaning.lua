-- meaning.lua: token bucket states, and a stored state read for a limit whose meaning
-- changed (quotaguard.core.meaning.convert, operation for operation). After ring.lua.

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

-- the state of the limit whose full section name is `full` (kind, a, b, c as in
-- decide.lua's plan) at `now`, from its own section or from its slot's section under
-- another meaning: quotaguard.core's meaning.convert, operation for operation; nil when
-- it starts fresh. A rolling window's comes as a ring, the others as their bytes;
-- `converted` tells whether the meaning differed (or the format was the previous one).
local function limit_state(st, full, kind, a, b, c, now)
  if st.at[full] then
    if kind == 'r' then return ring_read(st, full, c), st.old end
    return stored(st, full), st.old
  end
  local other = st.order[1] and stored_other(st, full)
  if not other then return nil, false end
  local raw = stored(st, other)
  local stored_full = other
  local old, new = {}, {}
  for p in string.gmatch(string.match(stored_full, '|(.*)$') or '', '[^:]+') do old[#old + 1] = p end
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
  local flat = ring_flat(ring_read(st, other, old_g))
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
