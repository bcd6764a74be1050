-- Messages with a timestamp >= since (ms, inclusive) that have not expired, oldest first.
-- Returns {epoch, encoded entries} ({'', '[]'} when Redis has no epoch: its data is gone).
-- KEYS: 1 epoch, 2 stream, 3 sts
-- ARGV: 1 since_ms, 2 ttl_ms
local epoch = redis.call('GET', KEYS[1])
if not epoch then return {'', '[]'} end
local cutoff = now_ms() - tonumber(ARGV[2])
local since = tonumber(ARGV[1])
if since > cutoff then cutoff = since end
local first = redis.call('XRANGE', KEYS[3], fmt(cutoff), '+', 'COUNT', 1)
if #first == 0 then return {epoch, '[]'} end
local pos = field(first[1][2], 'pos')
return {epoch, encode_entries(redis.call('XRANGE', KEYS[2], pos .. '-0', '+'))}
