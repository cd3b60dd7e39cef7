-- meta.lua: compare-and-set a customer's settings.
--
-- KEYS[1]  the customer's settings hash (fields v = version, m = JSON)
-- ARGV[1]  the version the change was computed from ('' = no settings)
-- ARGV[2]  the new version; ARGV[3] the new JSON ('' deletes the settings)
-- Reply:   {1} written; {0, version, json} the settings changed meanwhile: retry
--
-- Settings are operator decisions (assigned plan, overrides, revocation), so this key
-- has no TTL; it is deleted when the settings return to the defaults.

local version = redis.call('HGET', KEYS[1], 'v') or ''
if version ~= ARGV[1] then
  return {0, version, redis.call('HGET', KEYS[1], 'm')}
end
if ARGV[3] == '' then
  redis.call('DEL', KEYS[1])
else
  redis.call('HSET', KEYS[1], 'v', ARGV[2], 'm', ARGV[3])
end
return {1}
