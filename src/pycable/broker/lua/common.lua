-- Helpers prepended to every broker script (pycable/broker/redis.py loads common.lua + <script>.lua).
-- Layout (spec §3.6, under --redis_prefix): $ac:e epoch, $ac:s:<stream> messages (entry id
-- <offset>-0, fields d=data, t=ms timestamp, b=broadcast type), $ac:spos:<stream> last
-- offset, $ac:sts:<stream> timestamp index (auto id, field pos). pycable adds $ac:live (zset
-- stream -> deadline: 10 x ttl after its last message) and $ac:meta (hash: floor, hw) so that
-- offsets never go back within an epoch when a stream is forgotten and published to again.

local function now_ms()
  local t = redis.call('TIME')
  return tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
end

local function fmt(n)
  return string.format('%d', n)
end

local function id_offset(id)
  return tonumber(string.match(id, '^(%d+)'))
end

local function field(pairs_, name)
  for i = 1, #pairs_, 2 do
    if pairs_[i] == name then return pairs_[i + 1] end
  end
  return nil
end

-- The cluster-wide epoch: created if absent (a fresh random candidate from the caller, so a
-- Redis that lost its data never revives an old epoch), and kept alive by every writer.
local function ensure_epoch(key, candidate, ttl_ms)
  local epoch = redis.call('GET', key)
  if not epoch then
    redis.call('SET', key, candidate, 'PX', ttl_ms)
    return candidate
  end
  redis.call('PEXPIRE', key, ttl_ms)
  return epoch
end

-- Forget up to `max` streams idle past their deadline: fold their last offset into the floor
-- new streams start from, and delete it. If the offset key is already gone (evicted), fold the
-- highest offset ever assigned instead: offsets may jump, they never go back.
local function prune(live, meta, spos_prefix, now, max)
  local stale = redis.call('ZRANGEBYSCORE', live, '-inf', '(' .. fmt(now), 'LIMIT', 0, max)
  if #stale == 0 then return end
  local floor = tonumber(redis.call('HGET', meta, 'floor') or '0')
  for _, name in ipairs(stale) do
    local key = spos_prefix .. name
    local last = redis.call('GET', key)
    if last then
      redis.call('DEL', key)
    else
      last = redis.call('HGET', meta, 'hw') or '0'
    end
    last = tonumber(last)
    if last > floor then floor = last end
    redis.call('ZREM', live, name)
  end
  redis.call('HSET', meta, 'floor', fmt(floor))
end

-- XRANGE entries as one JSON string: a flat array [offset, ts, data, btype, ...] ("" when
-- there is no broadcast type). One bulk string parses far faster on the client than a
-- nested reply of 4 x N elements.
local function encode_entries(entries)
  local out = {}
  local n = 0
  for _, e in ipairs(entries) do
    local f = e[2]
    local d, t, b
    if f[1] == 'd' and f[3] == 't' then  -- as add.lua writes them: d, t[, b]
      d, t, b = f[2], f[4], (f[5] == 'b' and f[6]) or ''
    else  -- written by someone else (AnyCable Pro writes d only)
      d, t, b = field(f, 'd') or '', field(f, 't') or '0', field(f, 'b') or ''
    end
    out[n + 1] = id_offset(e[1])
    out[n + 2] = tonumber(t)
    out[n + 3] = d
    out[n + 4] = b
    n = n + 4
  end
  if n == 0 then return '[]' end
  return cjson.encode(out)
end
