-- Run by every node at start and periodically: keep the epoch alive (create it if Redis lost
-- it) and forget idle streams. Returns the epoch.
-- KEYS: 1 epoch, 2 live, 3 meta
-- ARGV: 1 epoch candidate, 2 epoch ttl_ms, 3 spos key prefix
local epoch = ensure_epoch(KEYS[1], ARGV[1], tonumber(ARGV[2]))
prune(KEYS[2], KEYS[3], ARGV[3], now_ms(), 256)
return epoch
