-- Register one message atomically: assign the next offset, append to the stream and to the
-- timestamp index, refresh TTLs. Returns {offset, epoch, timestamp_ms}.
-- KEYS: 1 epoch, 2 stream, 3 spos, 4 sts, 5 live, 6 meta
-- ARGV: 1 data, 2 limit, 3 ttl_ms, 4 epoch candidate, 5 epoch ttl_ms, 6 stream name,
--       7 spos key prefix, 8 broadcast type ('' for none)
local now = now_ms()
local epoch = ensure_epoch(KEYS[1], ARGV[4], tonumber(ARGV[5]))
prune(KEYS[5], KEYS[6], ARGV[7], now, 16)
local ttl = tonumber(ARGV[3])
local pos = redis.call('GET', KEYS[3])
if pos then
  pos = tonumber(pos)
else
  -- A new stream, or a forgotten one: start above the floor, above the highest offset ever
  -- assigned if this stream was known but lost its counter, and above what it still holds.
  pos = tonumber(redis.call('HGET', KEYS[6], 'floor') or '0')
  if redis.call('ZSCORE', KEYS[5], ARGV[6]) then
    local hw = tonumber(redis.call('HGET', KEYS[6], 'hw') or '0')
    if hw > pos then pos = hw end
  end
  local tail = redis.call('XREVRANGE', KEYS[2], '+', '-', 'COUNT', 1)
  if #tail > 0 then
    local held = id_offset(tail[1][1])
    if held > pos then pos = held end
  end
end
pos = pos + 1
local spos = fmt(pos)
redis.call('SET', KEYS[3], spos, 'PX', 20 * ttl)
local tsid = redis.call('XADD', KEYS[4], 'MAXLEN', ARGV[2], '*', 'pos', spos)
local ts = string.match(tsid, '^(%d+)')
if ARGV[8] ~= '' then
  redis.call('XADD', KEYS[2], 'MAXLEN', ARGV[2], spos .. '-0', 'd', ARGV[1], 't', ts, 'b', ARGV[8])
else
  redis.call('XADD', KEYS[2], 'MAXLEN', ARGV[2], spos .. '-0', 'd', ARGV[1], 't', ts)
end
redis.call('PEXPIRE', KEYS[2], ttl)
redis.call('PEXPIRE', KEYS[4], ttl)
redis.call('ZADD', KEYS[5], now + 10 * ttl, ARGV[6])
local hw = tonumber(redis.call('HGET', KEYS[6], 'hw') or '0')
if pos > hw then redis.call('HSET', KEYS[6], 'hw', spos) end
return {spos, epoch, ts}
