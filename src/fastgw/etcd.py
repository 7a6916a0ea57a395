"""A small etcd v3 client over etcd's JSON gateway (grpc-gateway): range, put, leases, watch.

Why not a client library: the maintained Python etcd v3 clients speak gRPC (``etcd3`` needs
``grpcio`` and an old ``protobuf``, and has not had a release since 2020; ``aetcd`` needs
``grpcio`` too), a large native dependency for a few calls. Every etcd since 3.4 (Debian's
``etcd-server`` is 3.4) serves the same API as JSON under ``/v3/``: POST ``/v3/kv/range``,
``/v3/kv/put``, ``/v3/auth/authenticate``, ``/v3/lease/grant``, ``/v3/lease/keepalive`` (one
renewal per call) and ``/v3/lease/revoke``, and ``/v3/watch``, whose answer is a stream of JSON
messages, one per line. Keys and values are base64 in both directions; 64-bit numbers come as
strings. aiohttp (the gateway's control-plane client, ``control_http``) carries it; never on
the hot path.

Authentication: with a user name, ``authenticate`` gets a token sent as ``Authorization`` on each
call; an expired token ("invalid auth token") is renewed once per call. TLS: a CA to trust and a
client certificate, from files. Several endpoints are tried in order; the one that answered is
tried first next time.
"""

from __future__ import annotations

import asyncio
import base64
import ssl
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass
from typing import Any

import orjson

from fastgw.config.schema import EtcdRegistry, TlsFiles
from fastgw.control_http import control_session

__all__ = ["EtcdClient", "EtcdError", "KeyValue", "WatchBatch", "prefix_end"]

MAX_MESSAGE = 64 * 1024 * 1024  # one watch message (a whole gateway configuration fits)
_INVALID_TOKEN = "invalid auth token"


class EtcdError(Exception):
    """etcd could not be reached, or refused or failed the call; the message says which and why."""


@dataclass(frozen=True, slots=True)
class KeyValue:
    key: bytes
    value: bytes
    mod_revision: int


@dataclass(frozen=True, slots=True)
class Event:
    deleted: bool
    kv: KeyValue


@dataclass(frozen=True, slots=True)
class WatchBatch:
    """One watch message: the store's revision, and the events at it (none: a progress note)."""

    revision: int
    events: tuple[Event, ...]


def prefix_end(prefix: bytes) -> bytes:
    """The range end that makes a range of every key starting with ``prefix`` (etcd's rule)."""
    end = bytearray(prefix)
    while end:
        if end[-1] < 0xFF:
            end[-1] += 1
            return bytes(end)
        end.pop()
    return b"\0"  # every key


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


def _kv(raw: dict[str, Any]) -> KeyValue:
    return KeyValue(
        base64.b64decode(raw.get("key", "")),
        base64.b64decode(raw.get("value", "")),
        int(raw.get("mod_revision", 0)),
    )


def ssl_context(tls: TlsFiles | None) -> ssl.SSLContext | None:
    """A client context trusting ``tls.ca`` (or the system's CAs) with its client certificate."""
    if tls is None:
        return None
    context = ssl.create_default_context(cafile=tls.ca)
    if tls.cert is not None:
        context.load_cert_chain(tls.cert, tls.key)
    return context


class EtcdClient:
    def __init__(self, registry: EtcdRegistry) -> None:
        self.endpoints = list(registry.endpoints)
        self.username = registry.username
        self.password = registry.password
        self.timeout = registry.timeout
        self._ssl = ssl_context(registry.tls) if registry.tls is not None else None
        self._token: str | None = None

    # -- calls -------------------------------------------------------------------------------------

    async def range(
        self, key: bytes, prefix: bool = False, revision: int | None = None
    ) -> tuple[int, list[KeyValue]]:
        """The store's revision and the keys (one, or all under a prefix) at ``revision`` (now)."""
        body: dict[str, Any] = {"key": _b64(key)}
        if prefix:
            body["range_end"] = _b64(prefix_end(key))
        if revision is not None:
            body["revision"] = str(revision)
        answer = await self._call("/v3/kv/range", body)
        return int(answer.get("header", {}).get("revision", 0)), [_kv(kv) for kv in answer.get("kvs", ())]

    async def put(self, key: bytes, value: bytes, lease: int | None = None) -> int:
        """Write ``value`` (attached to ``lease``: deleted with it); the revision of the write."""
        body = {"key": _b64(key), "value": _b64(value)}
        if lease is not None:
            body["lease"] = str(lease)
        answer = await self._call("/v3/kv/put", body)
        return int(answer.get("header", {}).get("revision", 0))

    async def delete(self, key: bytes, prefix: bool = False) -> int:
        body = {"key": _b64(key)}
        if prefix:
            body["range_end"] = _b64(prefix_end(key))
        answer = await self._call("/v3/kv/deleterange", body)
        return int(answer.get("header", {}).get("revision", 0))

    async def grant(self, ttl: int) -> int:
        """A new lease of ``ttl`` seconds: its id. The keys put with it go when it expires."""
        answer = await self._call("/v3/lease/grant", {"TTL": str(ttl)})
        lease = int(answer.get("ID", 0))
        if not lease:
            raise EtcdError(f"/v3/lease/grant: no lease granted ({answer.get('error') or 'no ID'})")
        return lease

    async def keep_alive(self, lease: int) -> int:
        """Renew ``lease`` once: the seconds it has now, 0 when etcd no longer knows it (it expired,
        or was revoked, and its keys are gone)."""
        answer = await self._call("/v3/lease/keepalive", {"ID": str(lease)})
        return int(answer.get("result", {}).get("TTL", 0))

    async def revoke(self, lease: int) -> None:
        """End ``lease`` now: its keys are deleted."""
        await self._call("/v3/lease/revoke", {"ID": str(lease)})

    async def watch(self, key: bytes, prefix: bool, start_revision: int) -> AsyncIterator[WatchBatch]:
        """Every change of the key (or prefix) from ``start_revision`` on, as etcd reports them;
        raises EtcdError when the watch fails or ends (the caller ranges again and re-watches)."""
        request: dict[str, Any] = {
            "key": _b64(key),
            "start_revision": str(start_revision),
            "progress_notify": True,
        }
        if prefix:
            request["range_end"] = _b64(prefix_end(key))
        import aiohttp

        timeout = aiohttp.ClientTimeout(total=None, connect=self.timeout, sock_read=None)
        async with self._post("/v3/watch", {"create_request": request}, timeout) as (response, endpoint):
            buffer = bytearray()
            async for chunk in _chunks(response, endpoint):
                buffer += chunk
                if len(buffer) > MAX_MESSAGE:
                    raise EtcdError(f"{endpoint}: a watch message over {MAX_MESSAGE} bytes")
                while (end := buffer.find(b"\n")) >= 0:
                    line = bytes(buffer[:end])
                    del buffer[: end + 1]
                    if line.strip():
                        batch = _watch_message(line, endpoint)
                        if batch is not None:
                            yield batch
            raise EtcdError(f"{endpoint}: the watch stream ended")

    # -- transport -----------------------------------------------------------------------------

    async def _call(self, path: str, body: dict[str, Any]) -> dict[str, Any]:
        import aiohttp

        timeout = aiohttp.ClientTimeout(total=self.timeout)
        async with self._post(path, body, timeout) as (response, endpoint):
            data = await response.read()
        try:
            answer = orjson.loads(data) if data else {}
        except orjson.JSONDecodeError:
            raise EtcdError(f"{endpoint}{path}: not a JSON answer: {data[:80]!r}") from None
        if not isinstance(answer, dict):
            raise EtcdError(f"{endpoint}{path}: expected a JSON object, found {data[:80]!r}")
        return answer

    def _post(self, path: str, body: dict[str, Any], timeout: Any) -> _Exchange:
        return _Exchange(self, path, orjson.dumps(body), timeout)

    async def _authenticate(self, endpoint: str) -> None:
        import aiohttp

        session = control_session()
        body = orjson.dumps({"name": self.username, "password": self.password})
        async with session.post(
            f"{endpoint}/v3/auth/authenticate", data=body, ssl=self._ssl if self._ssl else True,
            timeout=aiohttp.ClientTimeout(total=self.timeout),
        ) as response:  # fmt: skip
            data = await response.read()
            if response.status != 200:
                raise EtcdError(f"{endpoint}: authentication as {self.username!r} failed: {_message(data)}")
        token = orjson.loads(data).get("token")
        if not isinstance(token, str):
            raise EtcdError(f"{endpoint}: authentication answered no token")
        self._token = token


class _Exchange:
    """``async with`` one POST: endpoints in order, a token renewed once, errors as EtcdError."""

    def __init__(self, client: EtcdClient, path: str, body: bytes, timeout: Any) -> None:
        self.client = client
        self.path = path
        self.body = body
        self.timeout = timeout
        self._response: Any = None

    async def __aenter__(self) -> tuple[Any, str]:
        import aiohttp

        client = self.client
        problems = []
        for endpoint in list(client.endpoints):
            try:
                for attempt in range(2):
                    if client.username is not None and client._token is None:
                        await client._authenticate(endpoint)
                    headers = {"Content-Type": "application/json"}
                    if client._token is not None:
                        headers["Authorization"] = client._token
                    response = await control_session().post(
                        endpoint + self.path, data=self.body, headers=headers,
                        ssl=client._ssl if client._ssl else True, timeout=self.timeout,
                    )  # fmt: skip
                    if response.status == 200:
                        self._response = response
                        if client.endpoints[0] != endpoint:  # the one that answers goes first
                            client.endpoints.remove(endpoint)
                            client.endpoints.insert(0, endpoint)
                        return response, endpoint
                    data = await response.read()
                    response.release()
                    message = _message(data)
                    if _INVALID_TOKEN in message and attempt == 0 and client.username is not None:
                        client._token = None  # expired: authenticate again, once
                        continue
                    raise EtcdError(f"{endpoint}{self.path}: {message}")
            except (aiohttp.ClientError, OSError, TimeoutError) as exc:
                problems.append(f"{endpoint}: {_why(exc)}")
        raise EtcdError("etcd unreachable: " + "; ".join(problems))

    async def __aexit__(self, *exc: object) -> None:
        if self._response is not None:
            self._response.release()


async def _chunks(response: Any, endpoint: str) -> AsyncIterator[bytes]:
    """The pieces of a streamed answer; a broken stream is an EtcdError."""
    import aiohttp

    try:
        async for chunk in response.content.iter_any():
            yield chunk
    except (aiohttp.ClientError, OSError) as exc:
        raise EtcdError(f"{endpoint}: the watch stream broke ({type(exc).__name__})") from None


def _message(data: bytes) -> str:
    """The error an etcd JSON answer carries ({"error": ..., "message": ..., "code": n})."""
    try:
        answer = orjson.loads(data)
    except orjson.JSONDecodeError:
        return data[:200].decode("utf-8", "replace") or "no answer"
    if isinstance(answer, dict):
        inner = answer.get("error")
        if isinstance(inner, dict):
            answer = inner
        text = answer.get("message") or answer.get("error")
        if isinstance(text, str):
            return text
    return data[:200].decode("utf-8", "replace")


def _why(exc: BaseException) -> str:
    if isinstance(exc, TimeoutError | asyncio.TimeoutError):
        return "timed out"
    return str(exc) or type(exc).__name__


def _watch_message(line: bytes, endpoint: str) -> WatchBatch | None:
    try:
        message = orjson.loads(line)
    except orjson.JSONDecodeError:
        raise EtcdError(f"{endpoint}: a watch message that is not JSON: {line[:80]!r}") from None
    if "error" in message:
        raise EtcdError(f"{endpoint}: watch failed: {_message(line)}")
    result = message.get("result", {})
    if result.get("canceled"):
        compacted = result.get("compact_revision")
        reason = f"compacted at revision {compacted}" if compacted else result.get("cancel_reason", "")
        raise EtcdError(f"{endpoint}: the watch was cancelled ({reason or 'no reason given'})")
    if result.get("created") and not result.get("events"):
        return None  # the watch is set up: nothing to report yet
    events = tuple(Event(e.get("type") == "DELETE", _kv(e.get("kv", {}))) for e in result.get("events", ()))
    return WatchBatch(int(result.get("header", {}).get("revision", 0)), events)


def registry_of(
    endpoints: Sequence[str], username: str | None, password: str | None, tls: TlsFiles | None
) -> EtcdRegistry:
    """Connection settings made from the command line and environment (``fastgw run --etcd``)."""
    return EtcdRegistry(endpoints=tuple(endpoints), username=username, password=password, tls=tls)
