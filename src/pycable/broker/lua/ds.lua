-- Durable Streams metadata beside a stream's history (pycable/broker/redis.py).
-- KEYS: 1 ds meta ($ac:ds:<stream>), 2 stream, 3 spos, 4 sts, 5 live, 6 meta
-- ARGV: 1 op (create | delete | tail), 2 metadata (create), 3 stream name
-- create: store the metadata unless present (returns 0 then) and make the stream known with
--         its counter, starting where add.lua would (above the floor and what it holds).
-- delete: forget metadata and history; the last offset goes into the floor, so a stream
--         created later under the name continues above it.
-- fork:   (KEYS 7: the source stream; ARGV 4: the last offset to copy, 5: ttl ms) create the
--         stream as a copy of the source's messages up to that offset, with their offsets
--         (ids) kept; its counter is that offset. 0 when the stream exists.
-- tail:   the last offset, or (a stream with metadata whose counter was forgotten) the
--         floor the next message is numbered above; nil for an unknown stream.
local op = ARGV[1]
local function known_pos()
  local pos = tonumber(redis.call('HGET', KEYS[6], 'floor') or '0')
  local tail = redis.call('XREVRANGE', KEYS[2], '+', '-', 'COUNT', 1)
  if #tail > 0 then
    local held = id_offset(tail[1][1])
    if held > pos then pos = held end
  end
  return pos
end
if op == 'create' then
  if redis.call('EXISTS', KEYS[1]) == 1 then return 0 end
  redis.call('SET', KEYS[1], ARGV[2])
  if not redis.call('GET', KEYS[3]) then
    local pos = known_pos()
    if redis.call('ZSCORE', KEYS[5], ARGV[3]) then
      local hw = tonumber(redis.call('HGET', KEYS[6], 'hw') or '0')
      if hw > pos then pos = hw end
    end
    redis.call('SET', KEYS[3], fmt(pos))
  end
  return 1
elseif op == 'fork' then
  if redis.call('EXISTS', KEYS[1]) == 1 then return 0 end
  redis.call('DEL', KEYS[2], KEYS[4])
  local upto = tonumber(ARGV[4])
  local entries = redis.call('XRANGE', KEYS[7], '-', fmt(upto) .. '-0')
  for _, e in ipairs(entries) do
    redis.call('XADD', KEYS[2], e[1], unpack(e[2]))
  end
  if #entries > 0 then
    redis.call('XADD', KEYS[4], '*', 'pos', fmt(id_offset(entries[1][1])))
    redis.call('PEXPIRE', KEYS[2], tonumber(ARGV[5]))
    redis.call('PEXPIRE', KEYS[4], tonumber(ARGV[5]))
  end
  redis.call('SET', KEYS[3], fmt(upto))
  redis.call('SET', KEYS[1], ARGV[2])
  return 1
elseif op == 'delete' then
  local last = redis.call('GET', KEYS[3])
  local floor = tonumber(redis.call('HGET', KEYS[6], 'floor') or '0')
  last = tonumber(last or fmt(known_pos()))
  if last > floor then redis.call('HSET', KEYS[6], 'floor', fmt(last)) end
  redis.call('DEL', KEYS[1], KEYS[2], KEYS[3], KEYS[4])
  redis.call('ZREM', KEYS[5], ARGV[3])
  return 1
end
local last = redis.call('GET', KEYS[3])
if last then return last end
if redis.call('EXISTS', KEYS[1]) == 1 then return fmt(known_pos()) end
return false
