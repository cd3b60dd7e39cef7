-- audit.lua: append an entry to a customer's audit trail, keeping the newest ones.
--
-- KEYS[1]  the customer's audit trail (a list, newest first; no TTL: it is a record)
-- ARGV[1]  the entry (JSON)
-- ARGV[2]  how many entries to keep
-- Reply:   the number of entries kept

redis.call('LPUSH', KEYS[1], ARGV[1])
redis.call('LTRIM', KEYS[1], 0, tonumber(ARGV[2]) - 1)
return redis.call('LLEN', KEYS[1])
