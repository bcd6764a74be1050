-- Messages after an offset, or why they cannot be served (broker contract, decision 2).
-- Returns {0, encoded entries} or {code, detail}: 1 epoch mismatch (current epoch), 2 unknown
-- stream, 3 offset ahead (last offset), 4 nothing left after it (last offset),
-- 5 evicted (oldest offset kept), 6 expired (oldest offset kept).
-- KEYS: 1 epoch, 2 stream, 3 spos
-- ARGV: 1 epoch, 2 offset, 3 ttl_ms
local epoch = redis.call('GET', KEYS[1])
if epoch ~= ARGV[1] then return {1, epoch or ''} end
local last = redis.call('GET', KEYS[3])
if not last then return {2, ''} end
last = tonumber(last)
local offset = tonumber(ARGV[2])
if offset > last then return {3, fmt(last)} end
if offset == last then return {0, '[]'} end
local entries = redis.call('XRANGE', KEYS[2], '(' .. fmt(offset) .. '-0', '+')
if #entries == 0 then return {4, fmt(last)} end
local low = id_offset(entries[1][1])
if low ~= offset + 1 then return {5, fmt(low)} end
local ts = field(entries[1][2], 't')
if ts and tonumber(ts) < now_ms() - tonumber(ARGV[3]) then return {6, fmt(low)} end
return {0, encode_entries(entries)}
