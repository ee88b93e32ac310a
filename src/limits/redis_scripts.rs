//! The Lua scripts the shared limits run in Redis, each atomic. Time is Redis's own clock, so
//! replicas never disagree about it. Bucket scripts take the keys of one consumer's windows of
//! one kind (hash-tagged into one Redis Cluster slot); budget scripts one budget hash and the
//! epoch keys (all tagged with the key prefix, so in one slot too).

/// Grants up to `want` units of a bucket set to a replica's lease.
/// KEYS: the window buckets. ARGV: want, need, then limit/window_ms/capacity per bucket.
/// A window gives what it holds, or the whole `need` when it is full (one request larger than
/// the burst passes a full bucket and leaves it in debt). Returns {granted, window index,
/// milliseconds until `need` would fit} (index 0 when it fits).
pub const GRANT: &str = r#"
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local want = tonumber(ARGV[1])
local need = tonumber(ARGV[2])
local grant = want
local levels = {}
local worst_i, worst_wait = 0, 0
for i = 1, #KEYS do
  local limit = tonumber(ARGV[3 + (i - 1) * 3])
  local window = tonumber(ARGV[4 + (i - 1) * 3])
  local cap = tonumber(ARGV[5 + (i - 1) * 3])
  local per_ms = limit / window
  local v = redis.call('HMGET', KEYS[i], 'l', 't')
  local level = tonumber(v[1]) or cap
  local ts = tonumber(v[2]) or now
  if now > ts then level = math.min(cap, level + (now - ts) * per_ms) end
  levels[i] = level
  local can = math.floor(level)
  if level >= cap and need > can then can = math.max(need, can) end
  if can < grant then grant = can end
  local need_i = math.min(need, cap)
  if level < need_i then
    local wait = math.ceil((need_i - level) / per_ms)
    if wait > worst_wait then worst_wait = wait; worst_i = i end
  end
end
if grant < 0 then grant = 0 end
for i = 1, #KEYS do
  local window = tonumber(ARGV[4 + (i - 1) * 3])
  redis.call('HSET', KEYS[i], 'l', tostring(levels[i] - grant), 't', tostring(now))
  redis.call('PEXPIRE', KEYS[i], window * 2)
end
return {grant, worst_i, worst_wait}
"#;

/// Gives `units` back to a bucket set (an idle lease), never above capacity.
/// KEYS: the window buckets. ARGV: units, then limit/window_ms/capacity per bucket.
pub const GIVE_BACK: &str = r#"
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local units = tonumber(ARGV[1])
for i = 1, #KEYS do
  local limit = tonumber(ARGV[2 + (i - 1) * 3])
  local window = tonumber(ARGV[3 + (i - 1) * 3])
  local cap = tonumber(ARGV[4 + (i - 1) * 3])
  local v = redis.call('HMGET', KEYS[i], 'l', 't')
  local level = tonumber(v[1]) or cap
  local ts = tonumber(v[2]) or now
  if now > ts then level = math.min(cap, level + (now - ts) * limit / window) end
  redis.call('HSET', KEYS[i], 'l', tostring(math.min(cap, level + units)), 't', tostring(now))
  redis.call('PEXPIRE', KEYS[i], window * 2)
end
return 1
"#;

/// Reads a budget hash: every replica's month total (`t:<replica>`, kept) and every running
/// process's holding (`a:<incarnation>`, with its expiry `e:<incarnation>`; an expired holding
/// is a process that stopped refreshing it: it is dropped). Then records this replica's total
/// and this process's holding (a zero holding removes the fields). Shared by the two budget
/// scripts; ARGV[1..6]: replica, incarnation, total, holding, ttl seconds, holding lifetime ms.
const BUDGET_RECORD: &str = r#"
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local key, r, inc = KEYS[1], ARGV[1], ARGV[2]
redis.call('HSET', key, 't:' .. r, ARGV[3])
if tonumber(ARGV[4]) > 0 then
  redis.call('HSET', key, 'a:' .. inc, ARGV[4], 'e:' .. inc, tostring(now + tonumber(ARGV[6])))
else
  redis.call('HDEL', key, 'a:' .. inc, 'e:' .. inc)
end
redis.call('EXPIRE', key, tonumber(ARGV[5]))
local h = redis.call('HGETALL', key)
local fields = {}
for i = 1, #h, 2 do fields[h[i]] = h[i + 1] end
local spent, held = 0, 0
for f, v in pairs(fields) do
  local kind = string.sub(f, 1, 2)
  if kind == 't:' then
    spent = spent + (tonumber(v) or 0)
  elseif kind == 'a:' then
    local id = string.sub(f, 3)
    if (tonumber(fields['e:' .. id]) or 0) < now then
      redis.call('HDEL', key, f, 'e:' .. id)
    else
      held = held + (tonumber(v) or 0)
    end
  end
end
"#;

/// Records this replica's total and holding of a budget (see `BUDGET_RECORD`), then, if the
/// caller's epoch is current and no rebuild is under way, grants up to `want` more of what is
/// left: budget − every replica's total − every live holding.
/// KEYS: budget hash, epoch, rebuilding. ARGV[1..6] as `BUDGET_RECORD`, then want, budget,
/// epoch. Returns {granted (−1: not trusted), spent by all replicas, committed by all}.
pub fn budget_grant() -> String {
    format!(
        "{BUDGET_RECORD}{}",
        r#"
local want, budget = tonumber(ARGV[7]), tonumber(ARGV[8])
if redis.call('GET', KEYS[2]) ~= ARGV[9] or redis.call('EXISTS', KEYS[3]) == 1 then
  return {-1, spent, spent + held}
end
local left = budget - spent - held
if left < 0 then left = 0 end
local grant = math.min(want, left)
if grant > 0 then
  redis.call('HINCRBY', key, 'a:' .. inc, grant)
  redis.call('HSET', key, 'e:' .. inc, tostring(now + tonumber(ARGV[6])))
end
return {grant, spent, spent + held + grant}
"#
    )
}

/// Records this replica's total and holding without asking for more (see `BUDGET_RECORD`).
/// KEYS[1]: the budget hash. Returns {spent by all replicas, committed by all}.
pub fn budget_publish() -> String {
    format!("{BUDGET_RECORD}return {{spent, spent + held}}\n")
}

/// The epoch of the shared data: made (with a rebuild window during which budgets are not
/// granted, so every replica can publish its ledger first) when Redis has none, which is
/// how a Redis that came back empty is noticed.
/// KEYS: epoch, rebuilding. ARGV: a new epoch id, rebuild window ms. Returns {epoch, 0|1}.
pub const EPOCH: &str = r#"
local e = redis.call('GET', KEYS[1])
if not e then
  e = ARGV[1]
  redis.call('SET', KEYS[1], e)
  redis.call('SET', KEYS[2], '1', 'PX', tonumber(ARGV[2]))
end
return {e, redis.call('EXISTS', KEYS[2])}
"#;
