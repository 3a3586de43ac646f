"""Redis Streams sink: the only redis user.

Each batch is one non-transactional pipeline of ``XADD`` commands written on
one connection (one writer, so entries of a key land in order). The commands
are encoded as RESP here, with the constant parts cached, because redis-py's
generic command packing costs more than everything else per entry; redis-py
still owns the connection (URL, ACL user/password, TLS, reconnects) and parses
the replies.

Entry fields are the CloudEvents attributes, ``key`` and ``data`` (the event's
JSON, unchanged). Streams are trimmed with ``MAXLEN ~ n`` or ``MINID ~
<now - retention>`` when configured.

State hashes (``state_hashes``: stream -> hash): an entry of such a stream is written by a Lua
script that runs the ``XADD`` and sets the hash field ``key`` to ``{"entry": <the new entry's
id>, "event": <the structured CloudEvent>}`` in one atomic step, so a reader that takes the hash
and the stream's last entry id together (``MULTI``) and reads on after that id misses nothing
and sees nothing twice. (``MULTI``/``EXEC`` cannot do this: the hash value needs the id the
``XADD`` generates.) A pipeline with state entries starts with ``SCRIPT LOAD``, so a restarted
server (an empty script cache) never refuses the ``EVALSHA``. A record without data (a
tombstone, see ``bridge.state``) deletes its key's field with ``HDEL``.

Errors are translated here: a reply that refuses an entry for good (wrong type, ACL) raises
:class:`SinkRejected` with its index, once the entries before it are written (the publisher
takes them as acknowledged); a lost connection, a timeout or a server that cannot write now
raises :class:`SinkUnavailable`.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import time
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit

import redis.asyncio as aioredis
from redis import exceptions as redis_errors
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff

from bridge.errors import ConfigError, SinkRejected, SinkUnavailable
from bridge.sinks.base import Record

_log = logging.getLogger(__name__)

_STABLE_ATTRIBUTES = frozenset(
    {"specversion", "source", "type", "datacontenttype", "dataschema", "sessionepoch"}
)
_FIELD_CACHE_ENTRIES = 4096


@dataclass(frozen=True, slots=True)
class RedisSinkOptions:
    """Where and how to write; ``url`` is ``redis://`` or ``rediss://`` (TLS)."""

    url: str = field(default="redis://localhost:6379/0", repr=False)  # may carry a password
    username: str | None = None
    password: str | None = field(default=None, repr=False)
    tls_cafile: str | None = None
    tls_certfile: str | None = None
    tls_keyfile: str | None = None
    tls_check_hostname: bool = True
    maxlen: int | None = None  # XADD ... MAXLEN ~ maxlen
    retention_ms: int | None = None  # XADD ... MINID ~ <now - retention_ms>
    max_record_bytes: int = 1_048_576  # key + data; larger records are rejected
    timeout_ms: int = 5_000  # bounds connecting and a whole publish
    client_name: str = "ibkr-bridge"
    state_hashes: tuple[tuple[str, str], ...] = ()  # (stream, its state hash)

    def __post_init__(self) -> None:
        problems = []
        scheme = urlsplit(self.url).scheme
        if scheme not in ("redis", "rediss"):
            problems.append(f"redis.url: scheme must be redis:// or rediss://, got {scheme!r}")
        tls_files = (self.tls_cafile, self.tls_certfile, self.tls_keyfile)
        if scheme == "redis" and any(tls_files):
            problems.append("redis.tls_*: TLS options need a rediss:// url")
        if self.maxlen is not None and self.retention_ms is not None:
            problems.append("redis.maxlen / redis.retention_ms: choose one way of trimming")
        for name in ("maxlen", "retention_ms", "max_record_bytes", "timeout_ms"):
            value = getattr(self, name)
            if value is not None and value <= 0:
                problems.append(f"redis.{name}: must be positive, got {value}")
        if problems:
            raise ConfigError(problems)

    @property
    def endpoint(self) -> str:
        """``host:port/db`` of the url, safe to log (no credentials)."""
        parts = urlsplit(self.url)
        return f"{parts.hostname}:{parts.port or 6379}{parts.path}"

    def client_kwargs(self) -> dict[str, Any]:
        timeout_s = self.timeout_ms / 1000
        kwargs: dict[str, Any] = {
            "socket_timeout": None,  # publish() bounds the whole batch instead of every reply
            "socket_connect_timeout": timeout_s,
            "retry": Retry(NoBackoff(), 0),  # retrying is the publisher's job
            "client_name": self.client_name,
        }
        if self.username is not None:
            kwargs["username"] = self.username
        if self.password is not None:
            kwargs["password"] = self.password
        if urlsplit(self.url).scheme == "rediss":
            kwargs["ssl_ca_certs"] = self.tls_cafile
            kwargs["ssl_certfile"] = self.tls_certfile
            kwargs["ssl_keyfile"] = self.tls_keyfile
            kwargs["ssl_check_hostname"] = self.tls_check_hostname
        return kwargs


# --------------------------------------------------------------------------- RESP encoding


def _bulk(value: bytes) -> bytes:
    return b"$%d\r\n%s\r\n" % (len(value), value)


_KEY_FIELD = _bulk(b"key")
_DATA_FIELD = _bulk(b"data")

# KEYS: the stream, its state hash. ARGV: the hash field (the record key), the structured event,
# the number of trim arguments, the trim arguments, then the entry's field/value pairs.
STATE_SCRIPT = b"""\
local trim = tonumber(ARGV[3])
local args = {}
for i = 4, 3 + trim do args[#args + 1] = ARGV[i] end
args[#args + 1] = '*'
for i = 4 + trim, #ARGV do args[#args + 1] = ARGV[i] end
local id = redis.call('XADD', KEYS[1], unpack(args))
redis.call('HSET', KEYS[2], ARGV[1], '{"entry":"' .. id .. '","event":' .. ARGV[2] .. '}')
return id
"""
_STATE_SHA = hashlib.sha1(STATE_SCRIPT).hexdigest().encode()
_SCRIPT_LOAD = b"*3\r\n" + _bulk(b"SCRIPT") + _bulk(b"LOAD") + _bulk(STATE_SCRIPT)


def _command(*args: bytes) -> bytes:
    return b"*%d\r\n" % len(args) + b"".join(_bulk(a) for a in args)


class XaddEncoder:
    """``XADD <stream> [trim] * <field> <value> ...`` as RESP, caching what repeats between entries.

    Entries of a stream with a state hash become ``EVALSHA`` of :data:`STATE_SCRIPT`; tombstones
    ``HDEL``. :meth:`encode` says how many replies to read (a ``SCRIPT LOAD`` may lead)."""

    def __init__(
        self, maxlen: int | None, retention_ms: int | None, state_hashes: dict[str, str] | None = None
    ) -> None:
        self._maxlen = maxlen
        self._retention_ms = retention_ms
        self._fields: dict[tuple[str, str | int], bytes] = {}
        self._state_of = state_hashes or {}

    def trim_args(self, now_ms: int) -> list[bytes]:
        if self._maxlen is not None:
            return [b"MAXLEN", b"~", b"%d" % self._maxlen]
        if self._retention_ms is not None:
            return [b"MINID", b"~", b"%d" % (now_ms - self._retention_ms)]
        return []

    def encode(self, batch: Sequence[Record], now_ms: int) -> tuple[bytes, int]:
        """The pipeline's bytes and how many replies lead before the one of ``batch[0]``."""
        trim = self.trim_args(now_ms)
        heads: dict[tuple[str, int], bytes] = {}
        parts: list[bytes] = []
        append = parts.append
        field_of = self._field
        state_of = self._state_of
        leading = 0
        if state_of and any(record.destination in state_of for record in batch):
            append(_SCRIPT_LOAD)
            leading = 1
        for record in batch:
            if not record.data:  # a tombstone: the key leaves the state hash
                append(_command(b"HDEL", record.destination.encode(), record.key))
                continue
            attributes = record.attributes
            head = heads.get((record.destination, len(attributes)))
            if head is None:
                head = heads[(record.destination, len(attributes))] = self._head(
                    record.destination, len(attributes), trim
                )
            append(head)
            state = state_of.get(record.destination)
            if state is not None:
                append(_bulk(record.key))
                append(_bulk(record.structured()))
                append(_bulk(b"%d" % len(trim)))
                parts += map(_bulk, trim)
            for attribute in attributes:
                append(field_of(attribute))
            append(_KEY_FIELD)
            append(_bulk(record.key))
            append(_DATA_FIELD)
            append(_bulk(record.data))
        return b"".join(parts), leading

    def _head(self, stream: str, attributes: int, trim: list[bytes]) -> bytes:
        """Everything of an entry's command before its field/value pairs (and the script's
        field, event and trim arguments, which vary per entry)."""
        state = self._state_of.get(stream)
        if state is None:
            args = [b"XADD", stream.encode(), *trim, b"*"]
            count = len(args) + 2 * (attributes + 2)
        else:
            args = [b"EVALSHA", _STATE_SHA, b"2", stream.encode(), state.encode()]
            count = len(args) + 3 + len(trim) + 2 * (attributes + 2)
        return b"*%d\r\n" % count + b"".join(_bulk(a) for a in args)

    def _field(self, attribute: tuple[str, str | int]) -> bytes:
        cached = self._fields.get(attribute)
        if cached is not None:
            return cached
        name, value = attribute
        encoded = _bulk(name.encode()) + _bulk(value.encode() if isinstance(value, str) else b"%d" % value)
        if name in _STABLE_ATTRIBUTES:
            if len(self._fields) >= _FIELD_CACHE_ENTRIES:
                self._fields.clear()
            self._fields[attribute] = encoded
        return encoded


# --------------------------------------------------------------------------- errors

_TRANSIENT_REPLIES: tuple[type[Exception], ...] = (
    redis_errors.OutOfMemoryError,
    redis_errors.ReadOnlyError,
    redis_errors.TryAgainError,
    redis_errors.ClusterDownError,
    redis_errors.NoScriptError,  # the script cache was flushed between SCRIPT LOAD and EVALSHA
)


def translate_reply(error: Exception, index: int) -> SinkRejected | SinkUnavailable:
    """Our error for an error reply to the entry at ``index``."""
    text = f"{type(error).__name__}: {error}"
    if isinstance(error, redis_errors.ResponseError) and not isinstance(error, _TRANSIENT_REPLIES):
        return SinkRejected(f"redis refused entry {index}: {text}", index=index)
    return SinkUnavailable(f"redis cannot write now: {text}")


# --------------------------------------------------------------------------- the sink


class RedisSink:
    """Appends batches to Redis Streams; see the module docstring for the guarantees."""

    name = "redis"

    def __init__(self, options: RedisSinkOptions) -> None:
        self._options = options
        self._encoder = XaddEncoder(options.maxlen, options.retention_ms, dict(options.state_hashes))
        self._client: Any = None
        self._connection: Any = None
        self._timeout_s = options.timeout_ms / 1000
        self.last_ack_ns = 0  # wall clock (time.time_ns) of the last publish fully acknowledged

    async def start(self) -> None:
        if self._connection is not None:
            return
        client: Any = aioredis.Redis.from_url(self._options.url, **self._options.client_kwargs())
        try:
            async with asyncio.timeout(self._timeout_s):
                self._connection = await client.connection_pool.get_connection()
        except (TimeoutError, OSError, redis_errors.RedisError) as exc:
            await client.aclose()
            raise SinkUnavailable(f"redis unreachable at {self._options.endpoint}: {exc!r}") from exc
        self._client = client
        _log.info("redis sink connected to %s", self._options.endpoint)

    async def publish(self, batch: Sequence[Record]) -> None:
        if not batch:
            return
        connection = self._connection
        if connection is None:
            raise SinkUnavailable("redis sink is not started")
        try:
            self._check_sizes(batch)
        except SinkRejected as refused:  # nothing sent yet: the records before it are delivered first,
            if refused.index:  # because a rejection promises them acknowledged (the publisher drops them)
                await self.publish(batch[: refused.index])
            raise
        payload, leading = self._encoder.encode(batch, time.time_ns() // 1_000_000)
        try:
            async with asyncio.timeout(self._timeout_s):
                await connection.send_packed_command(payload, check_health=False)
                failures = await _read_replies(connection, leading + len(batch))
        except TimeoutError as exc:
            await connection.disconnect(nowait=True)  # replies may still be in flight
            raise SinkUnavailable(f"redis did not answer within {self._timeout_s:.1f} s") from exc
        except (OSError, redis_errors.RedisError) as exc:
            await connection.disconnect(nowait=True)
            raise SinkUnavailable(f"redis unavailable: {exc!r}") from exc
        if failures:
            index, error = failures[0]
            if index < leading:
                raise SinkUnavailable(f"redis did not load the state script: {error}") from error
            raise translate_reply(error, index - leading) from error
        self.last_ack_ns = time.time_ns()

    async def close(self) -> None:
        """Nothing is buffered here (publish waits for every reply); release the connection."""
        client, connection = self._client, self._connection
        self._client = self._connection = None
        if client is None:
            return
        await client.connection_pool.release(connection)
        await client.aclose()
        _log.info("redis sink closed")

    def _check_sizes(self, batch: Sequence[Record]) -> None:
        limit = self._options.max_record_bytes
        for index, record in enumerate(batch):
            if len(record.data) + len(record.key) > limit:
                size = len(record.data) + len(record.key)
                raise SinkRejected(
                    f"record {index} is {size} bytes, over max_record_bytes={limit}", index=index
                )


async def _read_replies(connection: Any, count: int) -> list[tuple[int, Exception]]:
    """Read every reply of the pipeline (so the connection stays usable); return the error replies."""
    failures: list[tuple[int, Exception]] = []
    for index in range(count):
        try:
            reply = await connection.read_response()
        except redis_errors.ResponseError as exc:
            failures.append((index, exc))
            continue
        if isinstance(reply, Exception):  # e.g. LOADING, which redis-py returns rather than raises
            failures.append((index, reply))
    return failures


# --------------------------------------------------------------------------- reading back (ibkr-bridge tail)


async def read_streams(
    options: RedisSinkOptions, streams: Sequence[str], from_beginning: bool = False, block_ms: int = 1000
) -> AsyncIterator[tuple[str, dict[str, str]]]:
    """Yield ``(stream, fields)`` for every new entry of ``streams`` (all of them with ``from_beginning``)."""
    client = aioredis.Redis.from_url(options.url, **options.client_kwargs())
    cursors = {name: "0-0" if from_beginning else "$" for name in streams}
    try:
        while True:
            try:
                replies: Any = await client.xread(cursors, block=block_ms, count=500)  # type: ignore[arg-type]
            except (OSError, redis_errors.RedisError) as exc:
                where = urlsplit(options.url).netloc.rpartition("@")[2]  # host:port, never the password
                raise SinkUnavailable(f"redis unavailable at {where}: {exc}") from exc
            for stream, entries in replies or []:
                name = stream.decode() if isinstance(stream, bytes) else str(stream)
                for entry_id, fields in entries:
                    cursors[name] = entry_id.decode() if isinstance(entry_id, bytes) else entry_id
                    yield name, {_text(k): _text(v) for k, v in fields.items()}
    finally:
        await client.aclose()


def _text(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value
