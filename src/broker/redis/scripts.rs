//! Lua scripts run by the Redis engine. They keep Centrifugo's data layout (spec §10.1, §10.2):
//! stream entries `<offset>-0` with one field `d`, the meta hash with `e`/`s`/`v`/`ve`, the
//! idempotency result hash with `e`/`s`, and the PUB/SUB payload prefixes. A Centrifugo node on
//! the same Redis reads what these write and the other way round.

/// Which script (index into the SHA list loaded at connect).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Script {
    /// Append to history and publish.
    PublishHistory = 0,
    /// Publish without history, remembering an idempotency key.
    PublishIdempotent = 1,
    /// Read the stream position and a page of history.
    History = 2,
    /// Add or refresh a presence entry.
    PresenceAdd = 3,
    /// Remove a presence entry.
    PresenceRemove = 4,
    /// Expire old presence entries and return the rest.
    PresenceGet = 5,
}

/// Script sources, in [`Script`] order.
pub const SOURCES: [&str; 6] =
    [PUBLISH_HISTORY, PUBLISH_IDEMPOTENT, HISTORY, PRESENCE_ADD, PRESENCE_REMOVE, PRESENCE_GET];

/// KEYS: stream, meta, idempotency result.
/// ARGV: payload, history size, history ttl (s), PUB/SUB channel, meta ttl (s, 0 = none),
/// epoch to use when none exists, publish command, result ttl (s, empty = no key),
/// delta ("1" = send previous payload along), version ("0" = none), version epoch.
/// Returns {offset, epoch, from_cache, suppressed}.
const PUBLISH_HISTORY: &str = r"
local stream, meta, result = KEYS[1], KEYS[2], KEYS[3]
local payload, size, ttl, channel = ARGV[1], ARGV[2], ARGV[3], ARGV[4]
local meta_ttl, fresh_epoch, publish, result_ttl = ARGV[5], ARGV[6], ARGV[7], ARGV[8]
local delta, version, version_epoch = ARGV[9], ARGV[10], ARGV[11]

if result_ttl ~= '' then
  local seen = redis.call('hmget', result, 'e', 's')
  if seen[1] then
    return {seen[2], seen[1], '1', '0'}
  end
end

local epoch = redis.call('hget', meta, 'e')
if not epoch then
  epoch = fresh_epoch
  redis.call('hset', meta, 'e', epoch)
end

if version ~= '0' then
  local known = redis.call('hmget', meta, 'v', 've', 's')
  if known[1] and (version_epoch == '' or version_epoch == known[2])
      and tonumber(known[1]) >= tonumber(version) then
    return {tonumber(known[3] or '0'), epoch, '0', '1'}
  end
  redis.call('hset', meta, 'v', version, 've', version_epoch)
end

local offset = redis.call('hincrby', meta, 's', 1)
if meta_ttl ~= '0' then
  redis.call('expire', meta, meta_ttl)
end

local previous = ''
if offset == 1 then
  -- A new epoch: whatever an evicted meta left behind belongs to the old one.
  redis.call('del', stream)
elseif delta == '1' then
  local last = redis.call('xrevrange', stream, '+', '-', 'COUNT', 1)
  if #last > 0 then
    local fields = last[1][2]
    for i = 1, #fields, 2 do
      if fields[i] == 'd' then previous = fields[i + 1] end
    end
  end
end

redis.call('xadd', stream, 'MAXLEN', size, offset, 'd', payload)
redis.call('expire', stream, ttl)

if channel ~= '' then
  local message
  if delta == '1' then
    message = '__d1:' .. offset .. ':' .. epoch .. ':' .. #previous .. ':' .. previous
      .. ':' .. #payload .. ':' .. payload
  else
    message = '__p1:' .. offset .. ':' .. epoch .. '__' .. payload
  end
  redis.call(publish, channel, message)
end

if result_ttl ~= '' then
  redis.call('hset', result, 'e', epoch, 's', offset)
  redis.call('expire', result, result_ttl)
end

return {offset, epoch, '0', '0'}
";

/// KEYS: idempotency result. ARGV: payload, PUB/SUB channel, publish command, result ttl (s).
/// Returns the PUBLISH reply, or {offset, epoch} of the first publish with this key.
const PUBLISH_IDEMPOTENT: &str = r"
local result = KEYS[1]
local payload, channel, publish, result_ttl = ARGV[1], ARGV[2], ARGV[3], ARGV[4]
local seen = redis.call('hmget', result, 'e', 's')
if seen[1] then
  return {seen[2], seen[1]}
end
local receivers = redis.call(publish, channel, payload)
redis.call('hset', result, 'e', '')
redis.call('expire', result, result_ttl)
return receivers
";

/// KEYS: stream, meta. ARGV: include publications ("0"/"1"), first id ("0" = from the start,
/// or the top when reversed), limit ("0" = all), reverse ("0"/"1"), meta ttl (s), epoch to use
/// when none exists. Returns {top offset, epoch, entries?}.
const HISTORY: &str = r"
local stream, meta = KEYS[1], KEYS[2]
local include, from, limit, reverse = ARGV[1], ARGV[2], ARGV[3], ARGV[4]
local meta_ttl, fresh_epoch = ARGV[5], ARGV[6]

local known = redis.call('hmget', meta, 'e', 's')
local epoch, top = known[1], known[2]
if not epoch then
  epoch = fresh_epoch
  top = 0
  redis.call('hset', meta, 'e', epoch)
end
if not top then top = 0 end
if meta_ttl ~= '0' then
  redis.call('expire', meta, meta_ttl)
end

if include == '0' then
  return {top, epoch}
end
local entries
if reverse == '0' then
  if limit ~= '0' then
    entries = redis.call('xrange', stream, from, '+', 'COUNT', limit)
  else
    entries = redis.call('xrange', stream, from, '+')
  end
else
  if from == '0' then from = top end
  if limit ~= '0' then
    entries = redis.call('xrevrange', stream, from, '-', 'COUNT', limit)
  else
    entries = redis.call('xrevrange', stream, from, '-')
  end
end
return {top, epoch, entries}
";

/// KEYS: expiry zset, data hash. ARGV: key ttl (s), member expiry (Unix s), client id, info.
const PRESENCE_ADD: &str = r"
redis.call('hset', KEYS[2], ARGV[3], ARGV[4])
redis.call('expire', KEYS[2], ARGV[1])
redis.call('zadd', KEYS[1], ARGV[2], ARGV[3])
redis.call('expire', KEYS[1], ARGV[1])
";

/// KEYS: expiry zset, data hash. ARGV: client id.
const PRESENCE_REMOVE: &str = r"
redis.call('hdel', KEYS[2], ARGV[1])
redis.call('zrem', KEYS[1], ARGV[1])
";

/// KEYS: expiry zset, data hash. ARGV: now (Unix s). Returns HGETALL of the live entries.
const PRESENCE_GET: &str = r"
local gone = redis.call('zrangebyscore', KEYS[1], '0', ARGV[1])
for i = 1, #gone do
  redis.call('hdel', KEYS[2], gone[i])
end
if #gone > 0 then
  redis.call('zremrangebyscore', KEYS[1], '0', ARGV[1])
end
return redis.call('hgetall', KEYS[2])
";
