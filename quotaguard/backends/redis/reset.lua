-- reset.lua: forget the usage of some of a customer's limits.
--
-- KEYS[1]  the customer's state string (sections per limit name, see decide.lua)
-- ARGV     the names of the limits to forget
-- Reply:   the number of limits forgotten
--
-- The other limits keep their states and the key keeps its TTL.

local blob = redis.call('GET', KEYS[1])
if not blob then return 0 end
local forget = {}
for i = 1, #ARGV do forget[ARGV[i]] = true end
local states, kept = read_sections(blob, forget)
local dropped = 0
for key in pairs(states) do
  if forget[base_name(key)] then dropped = dropped + 1 end
end
if dropped == 0 then return 0 end
if #kept == 0 then
  redis.call('DEL', KEYS[1])
else
  redis.call('SET', KEYS[1], table.concat(kept), 'KEEPTTL')
end
return dropped
