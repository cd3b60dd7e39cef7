-- reset.lua: forget the usage of some of a customer's limits.
--
-- Reads and writes: KEYS[1], the customer's state string (see state.lua).
--
-- KEYS[1]  the customer's state string
-- ARGV     the names of the limits to forget
-- Reply:   the number of sections forgotten
--
-- The other limits keep their states and the key keeps its TTL and expiry.

local st = read_state(KEYS[1])
local forget, dropped = {}, 0
for i = 1, #ARGV do forget[ARGV[i]] = true end
local kept = {}
for j = 1, #st.order do
  local key = st.order[j]
  if forget[base_name(key)] then dropped = dropped + 1 else kept[#kept + 1] = key end
end
if dropped == 0 then return 0 end
local expires, until_ = st.expires, st.until_
if st.old then  -- the previous format kept no expiry: its TTL's end, by the server's clock
  local t = redis.call('TIME')
  expires = tonumber(t[1]) * 1000000 + tonumber(t[2]) + redis.call('PTTL', KEYS[1]) * 1000
  until_ = expires
end
local blob = rebuild(st, {}, {}, {}, kept, expires, until_)
if blob == nil then
  redis.call('DEL', KEYS[1])
else
  redis.call('SET', KEYS[1], blob, 'KEEPTTL')
end
return dropped
