"""Cluster-wide rate-limit counters in Redis: one atomic Lua script, one round trip per request.

Every worker of every gateway instance runs the same script against the same keys, so they share
one limit. The scripts do the arithmetic of ``algorithms`` on the server, in milliseconds, with
the server's clock (``TIME``), so gateway clocks need not agree. Each returns
``{remaining or -1, milliseconds}``: when admitted, until the quota is whole again (bucket full,
window over); when refused, until a request would be admitted.

Talking to Redis (timeouts, outages, the failure policy's pause, sending scripts) is
``plugins/_redis.py``'s.
"""

from __future__ import annotations

import redis.asyncio

from fastgw.plugins._redis import RedisStore, Script

RATE_LIMIT_ROLE = ("rate limit store", "limits using it fail open or closed as configured")

# ARGV: limit, window (ms), and for tests only a fixed "now" (ms); else Redis's own clock.
_ARGUMENTS_LUA = """
local limit = tonumber(ARGV[1])
local window = tonumber(ARGV[2])
local now = tonumber(ARGV[3])
if not now then
  local t = redis.call('TIME')
  now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
end
"""

# KEYS[1]: the bucket.
TOKEN_BUCKET_LUA = (
    _ARGUMENTS_LUA
    + """
local state = redis.call('HMGET', KEYS[1], 'tokens', 'at')
local tokens = tonumber(state[1])
if tokens == nil then
  tokens = limit
else
  tokens = math.min(limit, tokens + math.max(0, now - tonumber(state[2])) * limit / window)
end
local remaining, wait
if tokens < 1 then
  remaining = -1
  wait = (1 - tokens) * window / limit
else
  tokens = tokens - 1
  remaining = math.floor(tokens)
  wait = (limit - tokens) * window / limit
end
redis.call('HSET', KEYS[1], 'tokens', tokens, 'at', now)
redis.call('PEXPIRE', KEYS[1], window)
return {remaining, math.ceil(wait)}
"""
)

# KEYS[1]: the counters. ARGV as above. Windows are numbered (now // window).
SLIDING_WINDOW_LUA = (
    _ARGUMENTS_LUA
    + """
local index = math.floor(now / window)
local start = index * window
local state = redis.call('HMGET', KEYS[1], 'window', 'previous', 'current')
local last = tonumber(state[1])
local previous, current = 0, 0
if last == index then
  previous, current = tonumber(state[2]), tonumber(state[3])
elseif last == index - 1 then
  previous = tonumber(state[3])
end
local used = previous * (1 - (now - start) / window) + current
if used + 1 > limit then
  local wait
  if current + 1 <= limit then
    wait = start + window * (1 - (limit - 1 - current) / previous) - now
  else
    wait = start + window + window * (1 - (limit - 1) / current) - now
  end
  return {-1, math.ceil(math.max(0, wait))}
end
current = current + 1
redis.call('HSET', KEYS[1], 'window', index, 'previous', previous, 'current', current)
redis.call('PEXPIRE', KEYS[1], start + 2 * window - now)
return {math.floor(limit - used - 1), math.ceil(start + window - now)}
"""
)


SCRIPTS = {"token_bucket": Script(TOKEN_BUCKET_LUA), "sliding_window": Script(SLIDING_WINDOW_LUA)}


async def evaluate(
    store: RedisStore, script: Script, key: bytes, limit: int, window_ms: int
) -> tuple[int, int]:
    """Run ``script`` for ``key``: (remaining or -1, milliseconds). StoreUnavailable if Redis
    cannot answer within the timeouts."""

    async def command(client: redis.asyncio.Redis) -> list[int]:
        reply: list[int] = await script.run(client, (key,), (limit, window_ms))
        return reply

    reply = await store.run(command)
    return int(reply[0]), int(reply[1])
