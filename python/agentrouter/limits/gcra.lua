#!lua name=agentrouter_limiter_v1
--[[
The GCRA of the shared-memory limiter (rust/core/src/gcra.rs) as a Redis Function
library; the client is agentrouter/limits/redis.py, which computes the quota
(scale s, t, tau) exactly as the native core does and derives every field of the
decision from the exact integers returned here.

Exact integer time. gcra.rs counts time in units of 1/s ns (s <= 64), so
instants are around 2^67 units and durations up to 2^64: beyond the 2^53 up to
which Lua's doubles hold integers exactly. Here every instant and duration is a
pair (sec, u): sec * W + u units, with W = s * 10^9 units per second and
0 <= u < W. This library only adds, subtracts and compares such pairs, and every
component stays below 2^53 (sec below 2^34 for any date before the year 2500
plus two ten-year intervals; u below 2 * W <= 1.28 * 10^11 before a carry), so
every operation is exact. Nothing is multiplied or divided here.

Functions (keys are declared, all of one key's keys share a hash tag):

  ar_acquire_v1  KEYS bucket, revoked [, generation]
                 ARGV q, s, tau_sec, tau_u, ct_sec, ct_u, over
    q       the quota's fingerprint "R:I_ns"; "" means no limit (the bucket is
            not touched; the revoked flag and the generation still are read)
    tau     the burst tolerance R*t as a pair; ct = cost*t as a pair
    over    "1" when cost > R: refused whatever the state, nothing written
  returns {revoked 0|1, generation or nil, outcome, b_sec, b_u, now_sec, now_ns}
    outcome 0: not decided (no limit, or revoked); 1: admitted, b = the backlog
    after this request; 2: refused, b = the backlog before it (unchanged: a
    refusal writes nothing, but for the repair described in acquire).
    now is the server's TIME the decision was made at.

  ar_bump_v1     KEYS generation; ARGV channel
    increments the key-set generation and publishes the new value on channel.

  ar_acquire_at_v1 (only when loaded for tests: EXPLICIT_TIME below is set by
                 the loader) ARGV now_sec, now_ns, then as ar_acquire_v1; decides
                 at the given time instead of TIME, and sets no expiry.
]]

local EXPLICIT_TIME = false

local function add(as, au, bs, bu, w)
  local s, u = as + bs, au + bu
  if u >= w then return s + 1, u - w end
  return s, u
end

local function sub(as, au, bs, bu, w)
  local s, u = as - bs, au - bu
  if u < 0 then return s - 1, u + w end
  return s, u
end

local function less(as, au, bs, bu)
  return as < bs or (as == bs and au < bu)
end

local function int(x)
  return string.format('%.0f', x)
end

-- Stores TAT = now + backlog in quota q.
local function store(key, q, s, now_s, now_u, b_s, b_u, w, expire)
  local n_s, n_u = add(now_s, now_u, b_s, b_u, w)
  redis.call('HSET', key, 'q', q, 's', int(n_s), 'u', int(n_u))
  if expire then
    -- Full again after the backlog: then the bucket is worth nothing. Rounded
    -- up, plus a millisecond, so it never disappears while it still counts.
    local ms = b_s * 1000 + math.ceil(b_u / (s * 1e6)) + 1
    redis.call('PEXPIRE', key, int(ms))
  end
end

local function acquire(keys, argv, now_s, now_ns, expire)
  local revoked = redis.call('EXISTS', keys[2]) == 1
  local generation = false
  if keys[3] then generation = redis.call('GET', keys[3]) end
  local q = argv[1]
  if revoked or q == '' then
    return {revoked and 1 or 0, generation, 0, 0, 0, now_s, now_ns}
  end
  local s = tonumber(argv[2])
  local w = s * 1e9
  local tau_s, tau_u = tonumber(argv[3]), tonumber(argv[4])
  local now_u = now_ns * s
  -- backlog = clamp(tat, now, now + tau) - now; a bucket in another quota (or
  -- none, or expired) is full.
  local b_s, b_u = 0, 0
  local behind = false -- the TAT is beyond now + tau: the clock stepped back
  local state = redis.call('HMGET', keys[1], 'q', 's', 'u')
  local tat_s, tat_u = tonumber(state[2]), tonumber(state[3])
  if state[1] == q and tat_s and tat_u and less(now_s, now_u, tat_s, tat_u) then
    b_s, b_u = sub(tat_s, tat_u, now_s, now_u, w)
    if less(tau_s, tau_u, b_s, b_u) then b_s, b_u, behind = tau_s, tau_u, true end
  end
  local admitted, a_s, a_u = false, b_s, b_u
  if argv[7] ~= '1' then
    a_s, a_u = add(b_s, b_u, tonumber(argv[5]), tonumber(argv[6]), w)
    admitted = not less(tau_s, tau_u, a_s, a_u)
  end
  if not admitted then
    -- A refusal writes nothing, except to repair a TAT that a clock stepped back
    -- left far ahead: the bucket is empty now (as the clamp said) and refills from
    -- now, rather than staying empty until the clock catches up.
    if behind then store(keys[1], q, s, now_s, now_u, b_s, b_u, w, expire) end
    return {0, generation, 2, b_s, b_u, now_s, now_ns}
  end
  store(keys[1], q, s, now_s, now_u, a_s, a_u, w, expire)
  return {0, generation, 1, a_s, a_u, now_s, now_ns}
end

redis.register_function('ar_acquire_v1', function(keys, argv)
  local time = redis.call('TIME')
  return acquire(keys, argv, tonumber(time[1]), tonumber(time[2]) * 1000, true)
end)

redis.register_function('ar_bump_v1', function(keys, argv)
  local generation = redis.call('INCR', keys[1])
  redis.call('PUBLISH', argv[1], generation)
  return generation
end)

if EXPLICIT_TIME then
  redis.register_function('ar_acquire_at_v1', function(keys, argv)
    local rest = {}
    for i = 3, #argv do rest[i - 2] = argv[i] end
    return acquire(keys, rest, tonumber(argv[1]), tonumber(argv[2]), false)
  end)
end
