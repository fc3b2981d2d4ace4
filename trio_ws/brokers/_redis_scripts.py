"""The Lua scripts of the Redis broker, and the format of a kept history entry.

Each script is one atomic step of :mod:`trio_ws.brokers.redis` (see its theory of
operation for the keys). KEYS are the keys a script reads or writes; ARGV the rest.
The scripts that change state for a waiting caller take a deadline (Redis's clock, in
ms; ``'0'`` for none) and return ``false`` without doing anything once it has passed.

A history entry (and a live message, after a ``b"m"``) is
``b"<seq> <kind> <time> <retracted> <keylen>\\n" + key + body``: ``kind`` a
:class:`~trio_ws._queue_model.PayloadKind`, ``time`` Redis's clock in seconds,
``retracted`` 0 or 1, ``keylen`` -1 for no key.
"""

from __future__ import annotations

from .._queue_model import Message, make_message

__all__ = [
    "BATCH_OPS",
    "C_ALIVE",
    "C_CLAIM",
    "C_HEARTBEAT",
    "C_LEAVE",
    "C_MEMBERS",
    "C_NODES",
    "C_OP",
    "C_RECLAIM",
    "C_RENEW",
    "C_ROUTE",
    "C_SEND",
    "CLAIM",
    "HEARTBEAT",
    "JOIN",
    "LEAVE",
    "MEMBERS",
    "NODES",
    "PUBLISH",
    "RECLAIM",
    "REPLAY",
    "RETRACT",
    "ROUTE",
    "entry_message",
    "sharded",
]


# Scripts that change state for a caller who waits carry the caller's deadline (ms, in
# Redis's clock; '0': none) and refuse to run past it: a write the caller was told
# failed must never happen later.
_LATE = """
local function late(t, deadline)
  return deadline ~= '0' and t[1] * 1000 + math.floor(t[2] / 1000) > tonumber(deadline)
end
"""

PUBLISH = (
    _LATE
    + """
-- One or more messages, numbered consecutively. KEYS: seq, log, epoch.
-- ARGV: channel, history, ttl_ms, epoch, deadline, then per message: kind, key, has_key, body
local t = redis.call('TIME')
if late(t, ARGV[5]) then return false end
if redis.call('EXISTS', KEYS[3]) == 0 then redis.call('SET', KEYS[3], ARGV[4]) end
local n = (#ARGV - 5) / 4
local seq = redis.call('INCRBY', KEYS[1], n) - n
local stamp = t[1] .. '.' .. string.format('%06d', t[2])
local history = tonumber(ARGV[2])
for i = 6, #ARGV, 4 do
  seq = seq + 1
  local keylen = -1
  local key = ''
  if ARGV[i + 2] == '1' then key = ARGV[i + 1]; keylen = #key end
  local entry = seq .. ' ' .. ARGV[i] .. ' ' .. stamp .. ' 0 ' .. keylen .. '\\n' .. key
      .. ARGV[i + 3]
  if history > 0 then redis.call('RPUSH', KEYS[2], entry) end
  redis.call('PUBLISH', ARGV[1], 'm' .. entry)
end
if history > 0 then
  redis.call('LTRIM', KEYS[2], -history, -1)
  local ttl = tonumber(ARGV[3])
  if ttl > 0 then redis.call('PEXPIRE', KEYS[2], ttl) else redis.call('PERSIST', KEYS[2]) end
else
  redis.call('DEL', KEYS[2])
end
return seq
"""
)

REPLAY = """
-- KEYS: seq, log, epoch. ARGV: since ('' for none), epoch of since ('' for none), new epoch
local epoch = redis.call('GET', KEYS[3])
if not epoch then redis.call('SET', KEYS[3], ARGV[3]); epoch = ARGV[3] end
local seq = tonumber(redis.call('GET', KEYS[1]) or '0')
local t = redis.call('TIME')
local now = t[1] .. '.' .. string.format('%06d', t[2])
if ARGV[1] == '' then return {epoch, seq, now, 0, {}} end
local since = tonumber(ARGV[1])
if since < 0 or (ARGV[2] ~= '' and ARGV[2] ~= epoch) then since = 0 end
if since >= seq then return {epoch, seq, now, since, {}} end
local want = math.min(seq - since, redis.call('LLEN', KEYS[2]))
local entries = {}
if want > 0 then entries = redis.call('LRANGE', KEYS[2], -want, -1) end
return {epoch, seq, now, since, entries}
"""

RETRACT = (
    _LATE
    + """
-- KEYS: log. ARGV: key, channel, deadline
local t = redis.call('TIME')
if late(t, ARGV[3]) then return false end
local entries = redis.call('LRANGE', KEYS[1], 0, -1)
local count = 0
local key = ARGV[1]
for i, e in ipairs(entries) do
  local nl = string.find(e, '\\n', 1, true)
  local head = string.sub(e, 1, nl - 1)
  local s, k, tm, fl, kl = string.match(head, '^(%S+) (%S+) (%S+) (%S+) (%S+)$')
  if fl == '0' and tonumber(kl) == #key and string.sub(e, nl + 1, nl + #key) == key then
    local marked = s .. ' ' .. k .. ' ' .. tm .. ' 1 ' .. kl .. string.sub(e, nl)
    redis.call('LSET', KEYS[1], i - 1, marked)
    count = count + 1
  end
end
redis.call('PUBLISH', ARGV[2], 'r' .. key)
return count
"""
)

# A name's value: owner '\\n' name. The owner's node: the owner up to its last '/'.
CLAIM = (
    _LATE
    + """
-- KEYS: name key.
-- ARGV: prefix, owner, name, lease_ms, takeover, this node, released owner, deadline
local t = redis.call('TIME')
if late(t, ARGV[8]) then return false end
local v = redis.call('GET', KEYS[1])
local value = ARGV[2] .. '\\n' .. ARGV[3]
if v then
  local nl = string.find(v, '\\n', 1, true)
  local held = string.sub(v, 1, nl - 1)
  local spelling = string.sub(v, nl + 1)
  if held ~= ARGV[2] and held ~= ARGV[7] then
    local node = string.match(held, '^(.*)/[^/]*$')
    if redis.call('EXISTS', ARGV[1] .. ':node:' .. node) == 1 then
      if ARGV[5] ~= '1' then return {0, held, spelling} end
      redis.call('SET', KEYS[1], value, 'PX', ARGV[4])
      if node ~= ARGV[6] then
        redis.call('PUBLISH', ARGV[1] .. ':to:' .. node, 'd' .. v)
      end
      return {1, held, spelling}
    end
  end
end
redis.call('SET', KEYS[1], value, 'PX', ARGV[4])
return {1, false}
"""
)

ROUTE = (
    _LATE
    + """
-- KEYS: name key. ARGV: prefix, this node, request id, payload kind, payload, deadline
local t = redis.call('TIME')
if late(t, ARGV[6]) then return false end
local v = redis.call('GET', KEYS[1])
if not v then return {0} end
local nl = string.find(v, '\\n', 1, true)
local owner = string.sub(v, 1, nl - 1)
local name = string.sub(v, nl + 1)
local node = string.match(owner, '^(.*)/[^/]*$')
if redis.call('EXISTS', ARGV[1] .. ':node:' .. node) == 0 then return {0} end
if node == ARGV[2] then return {2, name} end
local n = redis.call('PUBLISH', ARGV[1] .. ':to:' .. node,
  'r' .. ARGV[3] .. ' ' .. ARGV[2] .. ' ' .. ARGV[4] .. ' ' .. #name .. '\\n' .. name .. ARGV[5])
if n == 0 then return {0} end
return {1, name}
"""
)

BATCH_OPS = """
-- ARGV: triples (op, a, b) then their keys after ARGV[1] = number of ops
-- r: release key a if held by owner b;  p: presence hash key, field a, count b (0: delete)
-- P: publish b on channel key
local n = tonumber(ARGV[1])
for i = 0, n - 1 do
  local op, key, a, b = ARGV[2 + 4 * i], ARGV[3 + 4 * i], ARGV[4 + 4 * i], ARGV[5 + 4 * i]
  if op == 'r' then
    local v = redis.call('GET', key)
    if v and string.sub(v, 1, #a + 1) == a .. '\\n' then redis.call('DEL', key) end
  elseif op == 'p' then
    if b == '0' then redis.call('HDEL', key, a) else redis.call('HSET', key, a, b) end
  elseif op == 'P' then
    redis.call('PUBLISH', key, b)
  end
end
return n
"""

HEARTBEAT = """
-- ARGV: prefix, node id, report, lease_ms, name keys... Returns Redis's clock.
local prefix, node, lease = ARGV[1], ARGV[2], ARGV[4]
redis.call('SET', prefix .. ':node:' .. node, ARGV[3], 'PX', lease)
redis.call('SADD', prefix .. ':nodes', node)
local mine = node .. '/'
for i = 5, #ARGV do
  local v = redis.call('GET', ARGV[i])
  if v and string.sub(v, 1, #mine) == mine then redis.call('PEXPIRE', ARGV[i], lease) end
end
return redis.call('TIME')
"""

JOIN = """
-- ARGV: prefix, node id, report, lease_ms, new epoch. Returns the epoch and Redis's clock.
redis.call('SET', ARGV[1] .. ':epoch', ARGV[5], 'NX')
redis.call('SET', ARGV[1] .. ':node:' .. ARGV[2], ARGV[3], 'PX', ARGV[4])
redis.call('SADD', ARGV[1] .. ':nodes', ARGV[2])
local t = redis.call('TIME')
return {redis.call('GET', ARGV[1] .. ':epoch'), t[1], t[2]}
"""

RECLAIM = """
-- ARGV: prefix, lease_ms, then pairs (name key, value). Returns the indexes lost.
local prefix, lease = ARGV[1], ARGV[2]
local lost = {}
for i = 3, #ARGV, 2 do
  local key, value = ARGV[i], ARGV[i + 1]
  local v = redis.call('GET', key)
  local free = not v
  if v and v ~= value then
    local nl = string.find(v, '\\n', 1, true)
    local node = string.match(string.sub(v, 1, nl - 1), '^(.*)/[^/]*$')
    free = redis.call('EXISTS', prefix .. ':node:' .. node) == 0
  end
  if free or v == value then
    redis.call('SET', key, value, 'PX', lease)
  else
    table.insert(lost, (i - 1) / 2)
  end
end
return lost
"""

LEAVE = """
-- ARGV: prefix, node id
redis.call('DEL', ARGV[1] .. ':node:' .. ARGV[2])
redis.call('SREM', ARGV[1] .. ':nodes', ARGV[2])
return 1
"""

MEMBERS = """
-- KEYS: presence hash. ARGV: prefix. Returns the names on live nodes (may repeat).
local fields = redis.call('HGETALL', KEYS[1])
local alive = {}
local names = {}
for i = 1, #fields, 2 do
  local f = fields[i]
  local nl = string.find(f, '\\n', 1, true)
  local node = string.sub(f, 1, nl - 1)
  if alive[node] == nil then
    alive[node] = redis.call('EXISTS', ARGV[1] .. ':node:' .. node) == 1
  end
  if alive[node] then
    if tonumber(fields[i + 1]) > 0 then table.insert(names, string.sub(f, nl + 1)) end
  else
    redis.call('HDEL', KEYS[1], f)
  end
end
return names
"""

NODES = """
-- ARGV: prefix. Returns pairs (node id, report) of live nodes.
local out = {}
for _, node in ipairs(redis.call('SMEMBERS', ARGV[1] .. ':nodes')) do
  local v = redis.call('GET', ARGV[1] .. ':node:' .. node)
  if v then table.insert(out, node); table.insert(out, v)
  else redis.call('SREM', ARGV[1] .. ':nodes', node) end
end
return out
"""


# ---------------------------------------------------------------------------------------
# Redis Cluster: every script touches the one slot of its KEYS[1] (a shard channel it
# publishes on shares that slot). What the single-server scripts look up in another slot
# (a holder's node liveness) the broker reads first and passes in ARGV; a script that
# finds the state changed since returns -1 for the broker to look again.


def sharded(script: str) -> str:
    """A queue script for a cluster: ``SPUBLISH`` on the queue's shard channel."""
    return script.replace("redis.call('PUBLISH',", "redis.call('SPUBLISH',")


C_CLAIM = (
    _LATE
    + """
-- KEYS: name key.
-- ARGV: owner, name, lease_ms, takeover, released owner, deadline, expected holder,
--       whether the expected holder's node is alive ('1' or '0')
-- Returns {1, false} (free), {1, held, spelling} (taken over), {0, held, spelling}
-- (refused), or {-1, held, spelling}: held by another than expected; look again.
local t = redis.call('TIME')
if late(t, ARGV[6]) then return false end
local v = redis.call('GET', KEYS[1])
local value = ARGV[1] .. '\\n' .. ARGV[2]
if v then
  local nl = string.find(v, '\\n', 1, true)
  local held = string.sub(v, 1, nl - 1)
  local spelling = string.sub(v, nl + 1)
  if held ~= ARGV[1] and held ~= ARGV[5] then
    if held ~= ARGV[7] then return {-1, held, spelling} end
    if ARGV[8] == '1' then
      if ARGV[4] ~= '1' then return {0, held, spelling} end
      redis.call('SET', KEYS[1], value, 'PX', ARGV[3])
      return {1, held, spelling}
    end
  end
end
redis.call('SET', KEYS[1], value, 'PX', ARGV[3])
return {1, false}
"""
)

C_RECLAIM = """
-- KEYS: name key. ARGV: value, lease_ms, expected holder, whether its node is alive.
-- Returns 1 (held again), 0 (lost), or the holder when it is not the expected one.
local v = redis.call('GET', KEYS[1])
if v and v ~= ARGV[1] then
  local held = string.sub(v, 1, string.find(v, '\\n', 1, true) - 1)
  if held ~= ARGV[3] then return held end
  if ARGV[4] == '1' then return 0 end
end
redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2])
return 1
"""

C_ROUTE = (
    _LATE
    + """
-- KEYS: name key. ARGV: deadline. Returns false (too late), {} (free) or {owner, name}.
local t = redis.call('TIME')
if late(t, ARGV[1]) then return false end
local v = redis.call('GET', KEYS[1])
if not v then return {} end
local nl = string.find(v, '\\n', 1, true)
return {string.sub(v, 1, nl - 1), string.sub(v, nl + 1)}
"""
)

C_SEND = (
    _LATE
    + """
-- KEYS: a node's shard channel (declared for its slot). ARGV: deadline, message.
-- Returns false (too late) or the number of nodes that received it (0 or 1).
local t = redis.call('TIME')
if late(t, ARGV[1]) then return false end
return redis.call('SPUBLISH', KEYS[1], ARGV[2])
"""
)

C_OP = """
-- KEYS: the key of one outbox operation. ARGV: op, a, b (as in BATCH_OPS).
local op, a, b = ARGV[1], ARGV[2], ARGV[3]
if op == 'r' then
  local v = redis.call('GET', KEYS[1])
  if v and string.sub(v, 1, #a + 1) == a .. '\\n' then redis.call('DEL', KEYS[1]) end
elseif op == 'p' then
  if b == '0' then redis.call('HDEL', KEYS[1], a) else redis.call('HSET', KEYS[1], a, b) end
elseif op == 'P' then
  redis.call('SPUBLISH', KEYS[1], b)
end
return 1
"""

C_RENEW = """
-- KEYS: a name key. ARGV: node id, lease_ms. Renews it if a connection of the node holds it.
local v = redis.call('GET', KEYS[1])
local mine = ARGV[1] .. '/'
if v and string.sub(v, 1, #mine) == mine then redis.call('PEXPIRE', KEYS[1], ARGV[2]) end
return 1
"""

# The node registry: one hash, node id -> "<connections> <clients> <expiry ms>" (Redis's
# clock), in the slot of its own hash tag.
C_HEARTBEAT = """
-- KEYS: node registry. ARGV: node id, report, lease_ms. Returns Redis's clock.
local t = redis.call('TIME')
local now = t[1] * 1000 + math.floor(t[2] / 1000)
redis.call('HSET', KEYS[1], ARGV[1], ARGV[2] .. ' ' .. (now + tonumber(ARGV[3])))
return t
"""

C_LEAVE = """
-- KEYS: node registry. ARGV: node id
redis.call('HDEL', KEYS[1], ARGV[1])
return 1
"""

C_NODES = """
-- KEYS: node registry. Returns pairs (node id, report) of live nodes; forgets the others.
local t = redis.call('TIME')
local now = t[1] * 1000 + math.floor(t[2] / 1000)
local fields = redis.call('HGETALL', KEYS[1])
local out = {}
for i = 1, #fields, 2 do
  local c, n, e = string.match(fields[i + 1], '^(%S+) (%S+) (%S+)$')
  if tonumber(e) > now then
    table.insert(out, fields[i]); table.insert(out, c .. ' ' .. n)
  else
    redis.call('HDEL', KEYS[1], fields[i])
  end
end
return out
"""

C_ALIVE = """
-- KEYS: node registry. ARGV: node ids. Returns 1 or 0 for each.
local t = redis.call('TIME')
local now = t[1] * 1000 + math.floor(t[2] / 1000)
local out = {}
for i = 1, #ARGV do
  local v = redis.call('HGET', KEYS[1], ARGV[i])
  local e = v and tonumber(string.match(v, '(%S+)$'))
  table.insert(out, (e and e > now) and 1 or 0)
end
return out
"""

C_MEMBERS = """
-- KEYS: presence hash. Returns pairs (node id, name) with a positive count.
local fields = redis.call('HGETALL', KEYS[1])
local out = {}
for i = 1, #fields, 2 do
  if tonumber(fields[i + 1]) > 0 then
    local f = fields[i]
    local nl = string.find(f, '\\n', 1, true)
    table.insert(out, string.sub(f, 1, nl - 1)); table.insert(out, string.sub(f, nl + 1))
  end
end
return out
"""


def entry_message(entry: bytes) -> tuple[Message, float]:
    """The message of a history entry (see the module docstring), and its time."""
    head, _, rest = entry.partition(b"\n")
    seq, kind, stamp, retracted, keylen = head.split(b" ")
    n = int(keylen)
    key = rest[:n].decode() if n >= 0 else None
    body = rest[max(n, 0) :]
    time = float(stamp)
    message = make_message(int(seq), body, int(kind), key=key, time=time)
    if retracted == b"1":
        message.retracted = True
    return message, time
