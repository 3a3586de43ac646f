"""Settings of the gateway simulator: one frozen value, shared by the CLI and the Python API."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

DEFAULT_CONIDS = (265598, 8314)


@dataclass(frozen=True, slots=True)
class SimConfig:
    """Everything the simulator can be told; defaults follow the real gateway (reference §1-§3).

    Where the reference marks a behaviour unconfirmed, the default is the one hardest on a client.
    """

    host: str = "127.0.0.1"
    port: int = 5000  # 0 picks a free port (see ``GatewaySimulator.port``)
    tls: bool = True
    tls_dir: Path | None = None  # write cert.pem/key.pem here (cert.pem: clients' CA file), else a temp dir
    tls_names: tuple[str, ...] = ()  # host names the certificate is also valid for (e.g. a compose alias)
    conids: tuple[int, ...] = DEFAULT_CONIDS  # quotes that move from the start (any conid can be asked for)
    account: str = "DU1234567"
    username: str = "simuser1"
    require_session: bool = False  # demand a cookie or a {"session": ...} message first
    require_accounts: bool = False  # smd before GET /iserver/accounts -> "No accounts" error frame
    session_message_error: bool = True  # {"session":..} on an authenticated socket -> Topic unknown '{"s'
    heartbeat_s: float = 10.0  # gateway-global `system` hb period, aligned to the wall clock
    tic_replies: int = 4  # each `tic` answered this many times (build 10.45.1a)
    echo_ech: bool = True  # answer `ech+hb` with the raw text `ech+hb`
    md_interval_s: float = 0.5  # smd cadence per conid (2/s)
    smd_expiry_s: float = 900.0  # silent smd expiry; a new smd resets it
    duplicate_first_snapshot: bool = True  # the first smd frame is delivered twice
    umh_ack: bool = True  # `umh+<id>` answered with {"message":"Unsubscribed <id>"}
    max_smh: int = 5  # concurrent historical requests per gateway
    bars_shape: str = "live"  # smh as live gateways send it (no t, tickNum updates) or "documented" (t, once)
    bars_update_s: float = 1.0  # live shape: a tickNum update per open smh this often
    rate: float | None = None  # burst mode: smd frames/s, gateway total, shared by the subscribed sockets
    pnl_interval_s: float = 1.0
    ledger_interval_s: float = 10.0
    summary_interval_s: float = 10.0
    order_confirmation: bool = True  # placement answers with a question first (POST /iserver/reply/{id})
    order_step_s: float = 0.05  # delay between two lifecycle steps of an order
    fill_parts: int = 3  # executions per filled order (partial fills, then Filled)
    order_flow_s: float | None = None  # place a market order itself every N s (orders, fills); None = off
    auth_loss_drops_subscriptions: bool = True  # after auth loss the client must resubscribe
    rest_rate_limit: int | None = None  # requests/s before HTTP 429 (the gateway's 10/s); None = off
    str_history_days: int = 7
    seed: int | None = None
    scenario: Path | None = None
    oauth_dir: Path | None = None  # the Web API over OAuth 1.0a: the test consumer's key set lives here
    lst_ttl_s: float = 86_400.0  # live session token lifetime (OAuth mode)
