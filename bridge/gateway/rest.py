"""The gateway's REST side (aiohttp): session keepalive, authentication, pre-flight, re-sync.

Every aiohttp or decoding failure is translated here into
:class:`~bridge.errors.GatewayUnavailable` (retryable: connection refused,
timeouts, 5xx, 429, not logged in / "no bridge") or
:class:`~bridge.errors.GatewayRejected` (any other 4xx); nothing above this
module sees an aiohttp exception. TLS verification is on unless
``insecure_tls`` is set explicitly (the loopback gateway's self-signed
certificate); ``ca_file`` pins a CA instead. Over IBKR's Web API (OAuth 1.0a) every call is
signed by :class:`~bridge.gateway.oauth.OAuthConsumer`, its live session token kept here.
"""

from __future__ import annotations

import asyncio
import datetime
import logging
import ssl
from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import aiohttp
import orjson
from yarl import URL

from bridge.errors import GatewayRejected, GatewayUnavailable
from bridge.gateway.failures import describe_error
from bridge.gateway.tls import build_ssl
from bridge.oauth1a import LST_ENDPOINT

if TYPE_CHECKING:
    from bridge.gateway.oauth import OAuthConsumer

log = logging.getLogger(__name__)

_RETRYABLE_STATUS = frozenset({401, 408, 425, 429})


@dataclass(frozen=True, slots=True)
class RestSettings:
    base_url: str = "https://localhost:5000/v1/api"
    insecure_tls: bool = False
    ca_file: str | None = None
    timeout_s: float = 10.0
    user_agent: str = "ibkr-bridge"


@dataclass(frozen=True, slots=True)
class AuthState:
    """``/iserver/auth/status`` (or the ``iserver.authStatus`` part of ``/tickle``); absent is None."""

    authenticated: bool | None
    competing: bool | None
    connected: bool | None
    message: str | None = None
    fail: str | None = None

    @property
    def usable(self) -> bool:
        return self.authenticated is True and self.competing is not True

    @classmethod
    def from_json(cls, obj: Any) -> AuthState:
        data: Mapping[str, Any] = obj if isinstance(obj, Mapping) else {}

        def flag(name: str) -> bool | None:
            value = data.get(name)
            return value if isinstance(value, bool) else None

        def text(name: str) -> str | None:
            value = data.get(name)
            return value if isinstance(value, str) else None

        return cls(flag("authenticated"), flag("competing"), flag("connected"), text("message"), text("fail"))


@dataclass(frozen=True, slots=True)
class TickleResult:
    session_id: str | None
    auth: AuthState


class GatewayRest:
    """One REST session against the gateway; cookies it receives are kept for the websocket.

    With an :class:`~bridge.gateway.oauth.OAuthConsumer` (the Web API over OAuth 1.0a) every call
    is signed with the live session token, which is requested first, replaced before it expires,
    and regenerated once when a call answers 401.
    """

    def __init__(self, settings: RestSettings | None = None, oauth: OAuthConsumer | None = None) -> None:
        self.settings = settings or RestSettings()
        self.oauth = oauth
        self._lst_lock: asyncio.Lock | None = None
        self._base = URL(self.settings.base_url.rstrip("/"))
        self._ssl: ssl.SSLContext | bool = (
            build_ssl(self.settings.insecure_tls, self.settings.ca_file)
            if self._base.scheme == "https"
            else False
        )
        self._session: aiohttp.ClientSession | None = None

    async def __aenter__(self) -> GatewayRest:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.close()

    def _client(self) -> aiohttp.ClientSession:
        if self._session is None or self._session.closed:
            self._session = aiohttp.ClientSession(
                cookie_jar=aiohttp.CookieJar(unsafe=True),  # keep cookies of IP-address hosts
                timeout=aiohttp.ClientTimeout(total=self.settings.timeout_s),
                headers={"User-Agent": self.settings.user_agent},
                json_serialize=lambda obj: orjson.dumps(obj).decode(),
            )
        return self._session

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None

    def cookie_header(self, session_id: str | None, with_jar: bool = True) -> str | None:
        """Cookies for the websocket upgrade: the REST session's (unless ``with_jar`` is False), plus
        ``api`` from ``/tickle`` (the gateway's ``{"session": id}`` form; the Web API over OAuth
        takes the raw id)."""
        parts: list[str] = []
        if self._session is not None and with_jar:
            jar = self._session.cookie_jar.filter_cookies(self._base)
            parts.extend(f"{name}={morsel.value}" for name, morsel in jar.items() if name != "api")
        if session_id and self.oauth is not None:
            parts.append(f"api={session_id}")
        elif session_id:
            parts.append("api=" + orjson.dumps({"session": session_id}).decode())
        return "; ".join(parts) or None

    # ---------------------------------------------------------------------------- calls

    async def tickle(self) -> TickleResult:
        body = await self._call("POST", "/tickle")
        data: Mapping[str, Any] = body if isinstance(body, Mapping) else {}
        iserver = data.get("iserver")
        auth = iserver.get("authStatus") if isinstance(iserver, Mapping) else None
        session = data.get("session")
        return TickleResult(session if isinstance(session, str) else None, AuthState.from_json(auth))

    async def auth_status(self) -> AuthState:
        return AuthState.from_json(await self._call("POST", "/iserver/auth/status"))

    async def ssodh_init(self, compete: bool = False, publish: bool = True) -> AuthState:
        """Open the brokerage session (``compete`` takes it over from another login)."""
        body = {"compete": compete, "publish": publish}
        return AuthState.from_json(await self._call("POST", "/iserver/auth/ssodh/init", json=body))

    async def reauthenticate(self) -> None:
        await self._call("POST", "/iserver/reauthenticate")

    async def account_list(self) -> tuple[list[str], str | None]:
        """The ``/iserver/accounts`` pre-flight (required before market data and orders): the
        accounts and the selected one (the first when none is named)."""
        body = await self._call("GET", "/iserver/accounts")
        listed = body.get("accounts") if isinstance(body, Mapping) else None
        accounts = [a for a in listed if isinstance(a, str)] if isinstance(listed, list) else []
        selected = body.get("selectedAccount") if isinstance(body, Mapping) else None
        if not isinstance(selected, str) or not selected:
            selected = accounts[0] if accounts else None
        return accounts, selected

    async def orders(self, force: bool = True) -> list[dict[str, Any]]:
        """The day's orders; ``force=true`` also clears the gateway's filter cache (reference §2.4)."""
        params = {"force": "true"} if force else None
        body = await self._call("GET", "/iserver/account/orders", params=params)
        orders = body.get("orders") if isinstance(body, Mapping) else body
        return [o for o in orders if isinstance(o, dict)] if isinstance(orders, list) else []

    async def trades(self, days: int | None = None) -> list[dict[str, Any]]:
        params = {"days": str(days)} if days is not None else None
        body = await self._call("GET", "/iserver/account/trades", params=params)
        return [t for t in body if isinstance(t, dict)] if isinstance(body, list) else []

    async def _call(
        self,
        method: str,
        path: str,
        *,
        params: Mapping[str, str] | None = None,
        json: Mapping[str, Any] | None = None,
    ) -> Any:
        url = self._base.with_path(self._base.path + path)
        oauth = self.oauth
        if oauth is None:
            return await self._send(method, path, url, params, json, None)
        for attempt in range(2):
            await self._ensure_lst()
            used, header = oauth.lst, oauth.sign(method, str(url), params or {})
            try:
                return await self._send(method, path, url, params, json, header)
            except GatewayUnavailable as exc:
                if attempt or not str(exc).startswith(f"{method} {path}: HTTP 401"):
                    raise
                log.warning("gateway %s %s: HTTP 401; requesting a new live session token", method, path)
                oauth.rejected(used)
        raise AssertionError("unreachable")

    async def _ensure_lst(self) -> None:
        """A live session token that is not about to expire (one request at a time)."""
        oauth = self.oauth
        assert oauth is not None
        if self._lst_lock is None:
            self._lst_lock = asyncio.Lock()
        async with self._lst_lock:
            if not oauth.needs_lst():
                return
            url = self._base.with_path(self._base.path + LST_ENDPOINT)
            challenge, header = oauth.lst_request(str(url))
            body = await self._send("POST", LST_ENDPOINT, url, None, None, header)
            oauth.lst_received(challenge, body)
            log.info("gateway live session token obtained (expires %s)",
                     _iso_ms(oauth.lst.expires_ms if oauth.lst else 0))  # fmt: skip

    async def _send(
        self,
        method: str,
        path: str,
        url: URL,
        params: Mapping[str, str] | None,
        json: Mapping[str, Any] | None,
        authorization: str | None,
    ) -> Any:
        headers = {"Authorization": authorization} if authorization is not None else None
        try:
            async with self._client().request(
                method, url, params=params, json=json, ssl=self._ssl, headers=headers
            ) as resp:
                payload = await resp.read()
                if resp.status >= 400:
                    raise _status_error(method, path, resp.status, payload)
        except (aiohttp.ClientError, TimeoutError) as exc:
            raise GatewayUnavailable(f"{method} {path}: {describe_error(exc)}") from exc
        if not payload.strip():
            return None
        try:
            return orjson.loads(payload)
        except orjson.JSONDecodeError as exc:
            raise GatewayUnavailable(f"{method} {path}: response is not JSON: {payload[:200]!r}") from exc


def _iso_ms(ms: int) -> str:
    return datetime.datetime.fromtimestamp(ms / 1000, datetime.UTC).isoformat(timespec="seconds")


def _status_error(method: str, path: str, status: int, payload: bytes) -> Exception:
    text = payload[:300].decode("utf-8", errors="replace")
    message = f"{method} {path}: HTTP {status}: {text}"
    if status >= 500 or status in _RETRYABLE_STATUS or (status == 400 and "no bridge" in text.lower()):
        return GatewayUnavailable(message)
    return GatewayRejected(message)
