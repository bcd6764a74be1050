-- pycable presence in Redis (pycable/presence/redis.py). ARGV[1] is the command, ARGV[2]
-- the key prefix ('<redis_prefix>$ac:p:'). Layout under it:
--   st:<stream>:m  hash  id -> info (JSON text, '' for none)
--   st:<stream>:r  hash  id -> number of sessions present under that id
--   st:<stream>:s  hash  sid -> id
--   se:<sid>       set   the streams the session is present in
--   dl             zset  sid -> deadline (Redis server time, ms)
-- Every change of a set is one script, so each join/leave event is returned exactly once.

local function now_ms()
  local t = redis.call('TIME')
  return tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
end

local function base(p, stream)
  local b = p .. 'st:' .. stream
  return b .. ':m', b .. ':r', b .. ':s'
end

-- Remove (stream, sid); returns the id when it was the id's last session, else nil.
local function remove(p, stream, sid)
  local mk, rk, sk = base(p, stream)
  redis.call('SREM', p .. 'se:' .. sid, stream)
  local pid = redis.call('HGET', sk, sid)
  if not pid then return nil end
  redis.call('HDEL', sk, sid)
  if redis.call('HINCRBY', rk, pid, -1) <= 0 then
    redis.call('HDEL', rk, pid)
    redis.call('HDEL', mk, pid)
    return pid
  end
  return nil
end

local cmd, p = ARGV[1], ARGV[2]

if cmd == 'join' then
  -- ARGV: stream, sid, id, info, ttl_ms, max_per_stream, max_per_session
  -- Returns 1 (new id: join event), 0 (known id), -1 id mismatch, -2 session cap, -3 stream cap.
  local stream, sid, pid, info = ARGV[3], ARGV[4], ARGV[5], ARGV[6]
  local ttl, max_stream, max_session = tonumber(ARGV[7]), tonumber(ARGV[8]), tonumber(ARGV[9])
  local mk, rk, sk = base(p, stream)
  local sesk = p .. 'se:' .. sid
  local current = redis.call('HGET', sk, sid)
  if current and current ~= pid then return -1 end
  local new = redis.call('HEXISTS', mk, pid) == 0
  if not current then
    if max_session > 0 and redis.call('SCARD', sesk) >= max_session then return -2 end
    if new and max_stream > 0 and redis.call('HLEN', mk) >= max_stream then return -3 end
    redis.call('HINCRBY', rk, pid, 1)
    redis.call('HSET', sk, sid, pid)
    redis.call('SADD', sesk, stream)
  end
  redis.call('HSET', mk, pid, info)
  redis.call('ZADD', p .. 'dl', now_ms() + ttl, sid)
  if new then return 1 end
  return 0
end

if cmd == 'leave' then
  -- ARGV: stream, sid. Returns the id if it left the stream (leave event), else false.
  local sid = ARGV[4]
  local pid = remove(p, ARGV[3], sid)
  if redis.call('EXISTS', p .. 'se:' .. sid) == 0 then redis.call('ZREM', p .. 'dl', sid) end
  return pid or false
end

if cmd == 'touch' then
  -- ARGV: ttl_ms, sid... Only sessions that are present get a new deadline.
  local deadline = now_ms() + tonumber(ARGV[3])
  for i = 4, #ARGV do
    redis.call('ZADD', p .. 'dl', 'XX', deadline, ARGV[i])
  end
  return 0
end

if cmd == 'expire' then
  -- ARGV: batch. Returns {more, stream1, id1, stream2, id2, ...}: the leave events.
  local batch = tonumber(ARGV[3])
  local sids = redis.call('ZRANGEBYSCORE', p .. 'dl', '-inf', now_ms(), 'LIMIT', 0, batch)
  local out = {#sids == batch and 1 or 0}
  for _, sid in ipairs(sids) do
    local sesk = p .. 'se:' .. sid
    for _, stream in ipairs(redis.call('SMEMBERS', sesk)) do
      local pid = remove(p, stream, sid)
      if pid then
        table.insert(out, stream)
        table.insert(out, pid)
      end
    end
    redis.call('DEL', sesk)
    redis.call('ZREM', p .. 'dl', sid)
  end
  return out
end

if cmd == 'info' then
  -- ARGV: stream. Returns the records as one JSON text, [[id, info], ...]: one bulk reply
  -- parses much faster in the client than 2 x N of them.
  local flat = redis.call('HGETALL', p .. 'st:' .. ARGV[3] .. ':m')
  if #flat == 0 then return '[]' end
  local out = {}
  for i = 1, #flat, 2 do out[#out + 1] = {flat[i], flat[i + 1]} end
  return cjson.encode(out)
end

return redis.error_reply('unknown presence command ' .. tostring(cmd))
