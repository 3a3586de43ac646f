"""``ibkr-bridge sim``: run the gateway simulator until SIGINT/SIGTERM (exit 0)."""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import logging
import signal
import sys
from pathlib import Path

from bridge.sim.config import DEFAULT_CONIDS, SimConfig

log = logging.getLogger(__name__)


def _conids(text: str) -> tuple[int, ...]:
    try:
        return tuple(int(part) for part in text.replace(",", " ").split())
    except ValueError as exc:
        raise argparse.ArgumentTypeError(f"--conids takes integers, got {text!r}") from exc


def configure_parser(parser: argparse.ArgumentParser) -> None:
    add = parser.add_argument
    add("--port", type=int, default=5000, help="listen port (0 picks a free one; default 5000)")
    add("--host", default="127.0.0.1", help="listen address (default 127.0.0.1)")
    add("--no-tls", action="store_true", help="plain http/ws instead of a self-signed https/wss")
    add("--tls-dir", type=Path, default=None, help="write cert.pem (the clients' CA file) here")
    add("--tls-name", action="append", default=[], help="a host name the certificate is also valid for")
    add("--conids", type=_conids, default=DEFAULT_CONIDS, help="conids, e.g. 265598,8314")
    add("--rate", type=float, default=None, help="burst mode: N smd frames/s in total, pre-encoded")
    add("--scenario", type=Path, default=None, help="fault scenario file (JSON or YAML)")
    add("--require-session", action="store_true", help="demand a cookie or a {\"session\":...} message")
    add("--require-accounts", action="store_true", help="smd before GET /iserver/accounts -> No accounts")
    add("--accept-session-message", action="store_true",
        help="ignore {\"session\":...} on an authenticated socket instead of a Topic unknown error")
    add("--heartbeat-s", type=float, default=10.0, help="system hb period (default 10)")
    add("--tic-replies", type=int, default=4, help="replies per tic (default 4)")
    add("--md-interval-s", type=float, default=0.5, help="smd cadence per conid (default 0.5)")
    add("--smd-expiry-s", type=float, default=900.0, help="silent smd expiry (default 900)")
    add("--no-duplicate-snapshot", action="store_true", help="send the first smd frame once, not twice")
    add("--no-umh-ack", action="store_true", help="do not answer umh with {\"message\":\"Unsubscribed ..\"}")
    add("--bars-shape", choices=("live", "documented"), default="live",
        help="smh answers as live gateways send them (bars without t, then tickNum updates; default) "
             "or as documented (bars with t, once)")
    add("--bars-update-s", type=float, default=1.0, help="live bars: a tickNum update per open smh every N s")
    add("--no-order-confirmation", action="store_true", help="place orders without a question first")
    add("--order-step-s", type=float, default=0.05, help="delay between order lifecycle steps")
    add("--fill-parts", type=int, default=3, help="executions per filled order")
    add("--order-flow", type=float, default=None, metavar="S",
        help="place a market order by itself every S seconds, so orders and executions flow")
    add("--account-interval-s", type=_positive_s, default=None, metavar="S",
        help="send PnL (spl), account summary (ssd) and ledger (sld) every S seconds "
             "(default: PnL 1, summary and ledger 10)")
    add("--rest-rate-limit", type=int, default=None, help="REST requests/s before HTTP 429 (gateway: 10)")
    add("--account", default="DU1234567", help="the simulated account id")
    add("--seed", type=int, default=None, help="random seed for quotes and ids")
    add("--oauth", type=Path, default=None, metavar="DIR",
        help="serve IBKR's Web API over OAuth 1.0a; a test consumer's key set is written to DIR first")
    add("--lst-ttl-s", type=float, default=86_400.0, help="OAuth live session token lifetime (default 86400)")


def config_from_args(args: argparse.Namespace) -> SimConfig:
    config = SimConfig(
        host=args.host, port=args.port, tls=not args.no_tls, tls_dir=args.tls_dir,
        tls_names=tuple(args.tls_name), conids=tuple(args.conids), account=args.account,
        require_session=args.require_session, require_accounts=args.require_accounts,
        session_message_error=not args.accept_session_message, heartbeat_s=args.heartbeat_s,
        tic_replies=args.tic_replies, md_interval_s=args.md_interval_s, smd_expiry_s=args.smd_expiry_s,
        duplicate_first_snapshot=not args.no_duplicate_snapshot, umh_ack=not args.no_umh_ack,
        bars_shape=args.bars_shape, bars_update_s=args.bars_update_s,
        rate=args.rate, order_confirmation=not args.no_order_confirmation, order_step_s=args.order_step_s,
        fill_parts=args.fill_parts, order_flow_s=args.order_flow, rest_rate_limit=args.rest_rate_limit,
        seed=args.seed, scenario=args.scenario, oauth_dir=args.oauth, lst_ttl_s=args.lst_ttl_s,
    )
    every = args.account_interval_s
    if every is None:
        return config
    return dataclasses.replace(config, pnl_interval_s=every, ledger_interval_s=every,
                               summary_interval_s=every)


def _positive_s(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        value = 0.0
    if not value > 0:
        raise argparse.ArgumentTypeError(f"takes a positive number of seconds, got {text!r}")
    return value



async def _serve(config: SimConfig) -> None:
    from bridge.sim.server import GatewaySimulator

    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    async with GatewaySimulator(config) as sim:
        if sim.oauth_file is not None:
            print(f"oauth {sim.oauth_file}", flush=True)
        if sim.cert_file is not None:
            print(f"certificate {sim.cert_file}", flush=True)
        print(f"rest {sim.base_url}", flush=True)
        print(f"websocket {sim.ws_url}", flush=True)
        print(f"control {sim.origin}/sim/faults {sim.origin}/sim/stats {sim.origin}/sim/record", flush=True)
        await stop.wait()


def run(args: argparse.Namespace) -> int:
    from bridge.sim.faults import FaultError

    config = config_from_args(args)
    if not logging.getLogger().handlers:
        logging.basicConfig(level=logging.INFO, stream=sys.stderr, format="%(asctime)s %(name)s %(message)s")
    try:
        asyncio.run(_serve(config))
    except FaultError as exc:
        print(f"ibkr-bridge sim: {exc}", file=sys.stderr)
        return 2
    except OSError as exc:
        print(f"ibkr-bridge sim: {exc}", file=sys.stderr)
        return 1
    return 0
