"""Typed settings: defaults < YAML file < ``BRIDGE_*`` environment (nested with ``__``).

Every duration and size carries its unit in its name. Unknown keys are errors
(a typo never silently becomes a default). Secrets (gateway session, broker
passwords, the admin token) are read only from the environment or from
``*_file`` paths, never from YAML; one found in YAML is an error that says where
to put it instead. :func:`load_settings` is the one validation path (``check-config``
and ``run`` both call it); it raises :class:`ConfigError` listing every problem, each
naming the field path, the value, what is allowed and who set it (file, variable or flag).
"""

from __future__ import annotations

import ipaddress
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Annotated, Any, Literal
from urllib.parse import urlsplit
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    SecretStr,
    ValidationError,
    ValidationInfo,
    field_validator,
    model_validator,
)

from bridge.config_sources import (
    Layers,
    Problem,
    closest,
    describe,
    read_environment,
    read_yaml,
    render,
    secrets_in_yaml,
    unwritable_directory,
    without,
)
from bridge.errors import ConfigError
from bridge.ingest.fields import DEFAULT_MARKET_DATA_FIELDS
from bridge.ingest.session_types import SMH_MAX_CONCURRENT, SessionSettings
from bridge.ingest.subscriptions import CHANNEL_TOPICS
from bridge.ingest.wire import market_data_target, split_market_data_targets
from bridge.routing import DEFAULT_DESTINATIONS

SINK_SCHEMES = ("kafka", "redis", "rediss", "stdout", "memory")


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


def is_loopback(host: str) -> bool:
    """Whether ``host`` names this machine: ``localhost``, 127.0.0.0/8 or ``::1``."""
    name = host.lower().rstrip(".")
    if name in ("localhost", "localhost.localdomain") or name.endswith(".localhost"):
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


GATEWAY_URL = "https://localhost:5000"
WEB_API_URL = "https://api.ibkr.com"  # IBKR's Web API host, the default of `mode: oauth`


class GatewaySettings(_Section):
    mode: Literal["gateway", "oauth"] = "gateway"  # oauth: IBKR's Web API over OAuth 1.0a, no gateway
    url: str = GATEWAY_URL  # default in mode oauth: https://api.ibkr.com
    insecure_tls: bool = False  # only for the loopback gateway's self-signed certificate
    ca_file: Path | None = None
    session: SecretStr | None = None  # tickle session id override; env BRIDGE_GATEWAY__SESSION
    session_file: Path | None = None
    oauth_file: Path | None = None  # mode oauth: the key set (oauth.json, ibind's OAuth1aConfig names)
    compete: bool = False  # ssodh/init takes the brokerage session over from another login
    account: str | None = None  # default account for ssd/sld/sbd; else the gateway's selected account
    # while frames trickle, the socket is read at most this often (README: Delivery); 0: at once
    read_pace_ms: float = Field(5.0, ge=0, le=100)
    # smh startTime carries no zone; the live frames read consistently only as UTC
    # (bridge.ingest.normalize.history)
    bars_time_zone: str = "UTC"

    @field_validator("bars_time_zone")
    @classmethod
    def _zone(cls, value: str) -> str:
        try:
            ZoneInfo(value)
        except (ZoneInfoNotFoundError, ValueError):
            raise ValueError("must be an IANA time zone name, e.g. UTC or America/New_York") from None
        return value

    @model_validator(mode="before")
    @classmethod
    def _web_api_url(cls, data: Any) -> Any:
        if isinstance(data, dict) and data.get("mode") == "oauth" and data.get("url") is None:
            return {**data, "url": WEB_API_URL}
        return data

    @field_validator("url")
    @classmethod
    def _url(cls, value: str) -> str:
        parts = urlsplit(value)
        if parts.scheme not in ("https", "http") or not parts.hostname:
            raise ValueError("must be an http(s) URL with a host, e.g. https://localhost:5000")
        return value.rstrip("/")

    @field_validator("insecure_tls")
    @classmethod
    def _insecure_only_on_loopback(cls, value: bool, info: ValidationInfo) -> bool:
        url = info.data.get("url")
        if value and url is not None and not is_loopback(urlsplit(url).hostname or ""):
            raise ValueError(
                f"turns TLS verification off, which is allowed only for a gateway on loopback "
                f"(localhost, 127.0.0.0/8, ::1), not {urlsplit(url).hostname}; set gateway.ca_file "
                f"to the gateway's CA or certificate file instead"
            )
        return value

    @field_validator("ca_file")
    @classmethod
    def _ca_file_readable(cls, value: Path | None, info: ValidationInfo) -> Path | None:
        if value is not None and info.data.get("insecure_tls"):
            raise ValueError("is set with gateway.insecure_tls: verify against it, or turn verification off")
        if value is not None and not value.is_file():
            raise ValueError(f"{value} is not a readable file (the gateway's CA or certificate, PEM)")
        return value

    @property
    def ws_url(self) -> str:
        parts = urlsplit(self.url)
        scheme = "wss" if parts.scheme == "https" else "ws"
        return f"{scheme}://{parts.netloc}/v1/api/ws"


def _market_data_target(value: str) -> str:
    try:
        return market_data_target(value)
    except ValueError as exc:
        symbol = " (a symbol is not a conid: look it up with GET /trsrv/stocks?symbols=...)"
        raise ValueError(f"{exc}{symbol if value.isalpha() else ''}") from None


def _conid(value: str) -> str:
    if not value.isdigit() or value.startswith("0"):
        raise ValueError("expected a positive numeric conid (e.g. 265598)")
    return value


MarketDataTarget = Annotated[str, AfterValidator(_market_data_target)]
Conid = Annotated[str, AfterValidator(_conid)]


class MarketDataSubscription(_Section):
    conids: list[MarketDataTarget] = Field(default_factory=list)  # conid, conid@EXCHANGE or a combo conidex
    fields: list[str] = Field(default_factory=lambda: list(DEFAULT_MARKET_DATA_FIELDS))

    @field_validator("conids", "fields", mode="before")
    @classmethod
    def _strings(cls, value: Any) -> Any:
        if isinstance(value, str):
            value = split_market_data_targets(value)  # a combo's legs stay together
        return [str(v).strip() for v in value] if isinstance(value, list) else value


class BookSubscription(_Section):
    conid: Conid
    account: str | None = None  # else gateway.account, else the gateway's selected account
    exchange: str | None = None


class BarsSubscription(_Section):
    conid: Conid
    period: str = "1d"
    bar: str = "5min"
    source: str = "trades"
    outside_rth: bool = False
    # true: the smh stays open for the updates (tickNum frames) the live gateway streams after the
    # first answer; false: released with umh right after the first answer, as the docs describe
    stream: bool = True


class SubscriptionSettings(_Section):
    market_data: MarketDataSubscription = MarketDataSubscription()
    orders: bool = False
    executions: bool = False
    executions_days: int = Field(1, ge=1, le=7)
    pnl: bool = False
    account_summary: list[str] = Field(default_factory=list)
    account_ledger: list[str] = Field(default_factory=list)
    book: list[BookSubscription] = Field(default_factory=list)
    bars: list[BarsSubscription] = Field(default_factory=list)

    @field_validator("book")
    @classmethod
    def _one_ladder_per_account(cls, value: list[BookSubscription]) -> list[BookSubscription]:
        accounts = [book.account or "(the default account)" for book in value]
        twice = sorted({account for account in accounts if accounts.count(account) > 1})
        if twice:
            raise ValueError(
                f"more than one ladder for {', '.join(twice)}: the gateway cancels ladders per account "
                "(ubd+ACCOUNT), so the bridge holds one per account; keep one, or give each its own account"
            )
        return value

    @field_validator("bars")
    @classmethod
    def _at_most_five_bars(cls, value: list[BarsSubscription]) -> list[BarsSubscription]:
        if len(value) > SMH_MAX_CONCURRENT:
            raise ValueError(
                f"{len(value)} bars subscriptions: the gateway serves at most {SMH_MAX_CONCURRENT} "
                f"historical-bars requests (smh) at once; remove {len(value) - SMH_MAX_CONCURRENT}"
            )
        return value

    @field_validator("account_summary", "account_ledger", mode="before")
    @classmethod
    def _accounts(cls, value: Any) -> Any:
        return [v.strip() for v in value.split(",") if v.strip()] if isinstance(value, str) else value


class KafkaConfig(_Section):
    client_id: str = "ibkr-bridge"
    enable_idempotence: bool = True  # off for brokers that refuse it
    compression: Literal["none", "gzip", "lz4", "zstd", "snappy"] = "zstd"
    linger_ms: int = Field(0, ge=0)
    max_batch_bytes: int = Field(262_144, gt=0)
    request_timeout_ms: int = Field(30_000, gt=0)
    header_mode: Literal["binary", "structured"] = "binary"
    sasl_mechanism: Literal["PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512"] | None = None
    sasl_username: str | None = None
    sasl_password: SecretStr | None = None
    sasl_password_file: Path | None = None
    tls: bool = False
    tls_cafile: Path | None = None
    create_topics: bool = False
    topic_partitions: int = Field(6, ge=1)
    topic_replication: int = Field(1, ge=1)


class RedisConfig(_Section):
    username: str | None = None
    password: SecretStr | None = None
    password_file: Path | None = None
    maxlen_events: int | None = Field(1_000_000, ge=1)
    minid_age_s: float | None = None


class SinkSettings(_Section):
    url: str = "stdout://"
    kafka: KafkaConfig = KafkaConfig()
    redis: RedisConfig = RedisConfig()

    @field_validator("url")
    @classmethod
    def _url(cls, value: str) -> str:
        scheme = urlsplit(value).scheme
        if scheme not in SINK_SCHEMES:
            raise ValueError(
                "must be kafka://host:port[,host:port], redis://host:port[/db], rediss://..., stdout:// or memory://"
            )
        if scheme in ("kafka", "redis", "rediss") and not urlsplit(value).netloc:
            raise ValueError(f"{scheme}:// needs a host:port, e.g. {scheme}://localhost:{_PORTS[scheme]}")
        return value

    @property
    def kind(self) -> str:
        scheme = urlsplit(self.url).scheme
        return "redis" if scheme == "rediss" else scheme

    @property
    def kafka_bootstrap(self) -> str:
        return urlsplit(self.url).netloc


_PORTS = {"kafka": 9092, "redis": 6379, "rediss": 6380}


class DeliverySettings(_Section):
    max_market_data_events: int = Field(50_000, ge=1)
    max_critical_events: int = Field(100_000, ge=1)  # held in memory; each is in the spool first (README)
    max_batch_events: int = Field(2_000, ge=1)
    linger_ms: float = Field(0.0, ge=0, le=1_000)  # publish cadence; the gateway read pace batches (README)
    drain_timeout_s: float = Field(10.0, ge=0)
    spool_dir: Path = Path("spool")
    spool_max_bytes: int = Field(1 << 30, ge=1 << 20)
    spool_segment_bytes: int = Field(16 << 20, ge=1 << 16)
    spool_fsync: Literal["always", "interval", "never"] = "interval"
    spool_fsync_interval_ms: int = Field(200, ge=1)


class StateSettings(_Section):
    """State destinations (``destinations`` keys ``state.marketdata`` / ``state.orders`` name them)."""

    marketdata: bool = True  # latest quote per conid
    orders: bool = True  # latest state per orderId
    finished_order_retention_s: float = Field(3600.0, ge=0)  # then a tombstone removes the order


class AdminSettings(_Section):
    host: str = "127.0.0.1"
    port: int = Field(9464, ge=0, le=65535)
    token: SecretStr | None = None
    token_file: Path | None = None
    header_timeout_s: float = Field(10.0, gt=0)  # a connection's request headers must arrive within this
    body_timeout_s: float = Field(10.0, gt=0)
    max_connections: int = Field(64, ge=1)  # open admin connections; past it a new one gets 503

    @property
    def read_only(self) -> bool:
        """Mutations refused: listening beyond loopback with no token to demand."""
        return not is_loopback(self.host) and self.token is None and self.token_file is None


class LogSettings(_Section):
    level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = "INFO"
    format: Literal["auto", "json", "text"] = "auto"


class Settings(_Section):

    gateway: GatewaySettings = GatewaySettings()
    session: SessionSettings = SessionSettings()  # validated straight into the ingest core's own type
    subscriptions: SubscriptionSettings = SubscriptionSettings()
    sink: SinkSettings = SinkSettings()
    destinations: dict[str, str] = Field(default_factory=dict)
    account_aliases: dict[str, str] = Field(default_factory=dict)
    delivery: DeliverySettings = DeliverySettings()
    state: StateSettings = StateSettings()
    admin: AdminSettings = AdminSettings()
    logging: LogSettings = LogSettings()
    instance: str = "ibkr-bridge"
    event_loop: Literal["uvloop", "asyncio"] = "uvloop"  # bridge/runtime.py: uvloop's costs less CPU

    @field_validator("session")
    @classmethod
    def _cadences(cls, value: SessionSettings) -> SessionSettings:
        unknown = sorted(set(value.expected_cadence_s) - set(CHANNEL_TOPICS))
        if unknown:
            known = ", ".join(f"{channel} ({topic})" for channel, topic in CHANNEL_TOPICS.items())
            names = ", ".join(unknown)
            raise ValueError(f"expected_cadence_s: unknown channel(s) {names}; channels are {known}")
        return value

    @field_validator("destinations")
    @classmethod
    def _families(cls, value: dict[str, str]) -> dict[str, str]:
        for family in value:
            if family not in DEFAULT_DESTINATIONS:
                hint = closest(family, DEFAULT_DESTINATIONS)
                raise ValueError(
                    f"unknown family {family!r}" + (f" (did you mean {hint!r}?)" if hint else "")
                    + f"; allowed: {', '.join(DEFAULT_DESTINATIONS)}"
                )
        return value


# (section path, secret key) -> where it must come from instead
SECRET_KEYS: dict[tuple[str, ...], str] = {
    ("gateway", "session"): "BRIDGE_GATEWAY__SESSION or gateway.session_file",
    ("sink", "kafka", "sasl_password"): "BRIDGE_SINK__KAFKA__SASL_PASSWORD or sink.kafka.sasl_password_file",
    ("sink", "redis", "password"): "BRIDGE_SINK__REDIS__PASSWORD or sink.redis.password_file",
    ("admin", "token"): "BRIDGE_ADMIN__TOKEN or admin.token_file",
    **{("gateway", key): "the OAuth key set file named by gateway.oauth_file (or run --oauth FILE)"
       for key in ("consumer_key", "access_token", "access_token_secret", "signature_key", "encryption_key")},
}


def load_settings(
    path: Path | None = None,
    overrides: Mapping[str, Any] | None = None,
    override_origins: Mapping[tuple[str, ...], str] | None = None,
    environ: Mapping[str, str] | None = None,
) -> Settings:
    """Defaults < YAML file < ``BRIDGE_*`` environment < ``overrides`` (command-line flags).

    The one validation path: raises ConfigError listing every problem, each naming the field,
    the value, what is allowed and the file, variable or flag that set it.
    """
    layers = Layers()
    data = read_yaml(path) if path is not None else {}
    problems = secrets_in_yaml(data, SECRET_KEYS)
    layers.add(data, f"in {path}")
    env_values, env_origins = read_environment(os.environ if environ is None else environ)
    layers.add(env_values, {p: f"from {name}" for p, name in env_origins.items()})
    flags = {p: f"from {flag}" for p, flag in (override_origins or {}).items()}
    layers.add(overrides or {}, flags or "from the command line")
    settings, errors = _validate(layers.data)
    problems += errors
    if settings is None and errors:
        # Check what is left once the bad values are dropped, so every problem shows at once.
        settings, _ = _validate(without(layers.data, [p.loc for p in errors]))
    if settings is not None:
        problems += _path_problems(settings)
    if problems:
        raise ConfigError([render(p, layers.origin_of(p.loc)) for p in problems])
    assert settings is not None
    return settings


def _validate(data: dict[str, Any]) -> tuple[Settings | None, list[Problem]]:
    try:
        return Settings(**data), []
    except ValidationError as exc:
        return None, [describe(e, Settings, SECRET_KEYS) for e in exc.errors()]


def _path_problems(settings: Settings) -> list[Problem]:
    files = {
        ("gateway", "session_file"): settings.gateway.session_file,
        ("gateway", "oauth_file"): settings.gateway.oauth_file,
        ("sink", "kafka", "sasl_password_file"): settings.sink.kafka.sasl_password_file,
        ("sink", "redis", "password_file"): settings.sink.redis.password_file,
        ("admin", "token_file"): settings.admin.token_file,
    }
    problems = [Problem(loc, f"{str(path)!r} does not exist or is not readable")
                for loc, path in files.items() if path is not None and not path.is_file()]  # fmt: skip
    spool = unwritable_directory(settings.delivery.spool_dir)
    if spool:
        problems.append(Problem(("delivery", "spool_dir"), spool))
    gateway = settings.gateway
    if gateway.mode == "oauth" and gateway.oauth_file is None:
        needs = ("mode oauth needs the key set file (oauth.json from the OAuth portal's material; "
                 "BRIDGE_GATEWAY__OAUTH_FILE or run --oauth FILE)")  # fmt: skip
        problems.append(Problem(("gateway", "oauth_file"), needs))
    if gateway.session is not None and gateway.session_file is not None:
        both = "set either BRIDGE_GATEWAY__SESSION or gateway.session_file, not both"
        problems.append(Problem(("gateway", "session_file"), both))
    kafka = settings.sink.kafka
    has_password = kafka.sasl_password is not None or kafka.sasl_password_file is not None
    if kafka.sasl_mechanism and not (kafka.sasl_username and has_password):
        problems.append(Problem(("sink", "kafka", "sasl_mechanism"),
                                "needs sasl_username and BRIDGE_SINK__KAFKA__SASL_PASSWORD "
                                "or sink.kafka.sasl_password_file"))  # fmt: skip
    return problems


def secret(value: SecretStr | None, file: Path | None) -> str | None:
    """The secret's value from the environment, else from its file (stripped of a trailing newline)."""
    if value is not None:
        return value.get_secret_value()
    if file is not None:
        return file.read_text().rstrip("\n")
    return None
