"""The ``ibkr-bridge`` command line.

Exit codes: 0 success; 1 runtime failure; 2 usage or configuration error.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import signal
import sys
import time
from collections.abc import Callable, Iterator, Sequence
from datetime import tzinfo
from pathlib import Path
from typing import TYPE_CHECKING, Any, BinaryIO

from bridge import runtime
from bridge.asyncapi_cli import add_asyncapi_command

if TYPE_CHECKING:
    from bridge.config import Settings
    from bridge.errors import ConfigError

EXIT_OK = 0
EXIT_FAILURE = 1
EXIT_USAGE = 2
EXIT_DATA_LOST = 3  # run: critical records could not be delivered nor spooled (a full or failed disk)

Command = Callable[[argparse.Namespace], int]


def _add_sim(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    from bridge.sim import cli as sim_cli

    parser = sub.add_parser(
        "sim",
        help="run the Client Portal Gateway simulator",
        description="Serve a simulated Client Portal Gateway (REST and websocket on one port, a "
        "self-signed certificate unless --no-tls) until SIGINT/SIGTERM, for trying the bridge "
        "without an IBKR account; --order-flow S places orders by itself.",
    )
    sim_cli.configure_parser(parser)
    parser.set_defaults(command=sim_cli.run)


SAMPLE_SESSION = Path(__file__).parent / "data" / "sample-session.jsonl"


def _wall_clock() -> Iterator[int]:
    while True:
        yield time.time_ns()


def _normalize(args: argparse.Namespace) -> int:
    from bridge.replay import ReplayStats, fixed_clock, read_frames, replay

    if args.sample:
        source: BinaryIO = SAMPLE_SESSION.open("rb")
    elif args.input and args.input != "-":
        try:
            source = open(args.input, "rb")  # noqa: SIM115 - closed below
        except OSError as exc:
            print(f"ibkr-bridge normalize: cannot read --input {args.input}: {exc.strerror}", file=sys.stderr)
            return EXIT_USAGE
    else:
        source = sys.stdin.buffer
    clock = fixed_clock(args.epoch_ms) if args.epoch_ms is not None else _wall_clock()
    stats = ReplayStats() if args.stats else None
    out = sys.stdout.buffer
    try:
        for envelopes in replay(read_frames(source), clock, stats=stats, bars_time_zone=args.bars_time_zone):
            if args.group:
                out.write(b"[" + b",".join(envelopes) + b"]\n")
            else:
                out.writelines(e + b"\n" for e in envelopes)
    except BrokenPipeError:
        return EXIT_OK
    finally:
        if source is not sys.stdin.buffer:
            source.close()
    out.flush()
    if stats is not None:
        print(stats.render(), file=sys.stderr)
    return EXIT_OK


def _add_normalize(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = sub.add_parser(
        "normalize",
        help="turn recorded gateway frames (one per line) into CloudEvents JSON lines",
        description="Read raw gateway frames, one frame's exact text per line, from stdin or --input; "
        "write one CloudEvents structured-mode JSON object per event per line. "
        "Malformed frames become dead-letter events; the exit code is 0 unless the usage is wrong.",
    )
    parser.add_argument("--input", "-i", metavar="FILE", help="read frames from FILE instead of stdin")
    parser.add_argument("--sample", action="store_true", help="replay the bundled sample session")
    parser.add_argument("--group", action="store_true", help="one output line per input line: a JSON array")
    parser.add_argument(
        "--stats", action="store_true", help="print counts per event type and per outcome to stderr"
    )
    parser.add_argument(
        "--epoch-ms", type=int, metavar="MS", help="deterministic receive clock: line N is received at MS+N"
    )
    parser.add_argument(
        "--bars-time-zone", type=_zone, default="UTC", metavar="ZONE",
        help="the zone smh startTime is read in (default UTC, as gateway.bars_time_zone)",
    )
    parser.set_defaults(command=_normalize)


def _zone(name: str) -> tzinfo:
    from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError):
        message = f"not an IANA time zone name: {name!r} (e.g. UTC, America/New_York)"
        raise argparse.ArgumentTypeError(message) from None


def _schemas(args: argparse.Namespace) -> int:
    from bridge.schemagen import write_schemas

    out = Path(args.out)
    if out.exists() and not out.is_dir():
        print(f"ibkr-bridge schemas: --out {out} is an existing file; give a directory "
              "(created when missing; same-named files in it are replaced)", file=sys.stderr)  # fmt: skip
        return EXIT_USAGE
    try:
        written = write_schemas(out)
    except OSError as exc:
        print(f"ibkr-bridge schemas: cannot write to --out {out}: {exc.strerror}", file=sys.stderr)
        return EXIT_FAILURE
    print(f"wrote {len(written)} schemas to {args.out}", file=sys.stderr)
    return EXIT_OK


def _add_schemas(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = sub.add_parser(
        "schemas",
        help="export the JSON Schema of every event type",
        description="Write one JSON Schema per CloudEvents type (<type>.json, closed: no additional "
        "properties) into a directory, for consumers to validate or generate code from.",
    )
    parser.add_argument("--out", required=True, metavar="DIR", help="directory for the <type>.json files")
    parser.set_defaults(command=_schemas)


def _check_config(args: argparse.Namespace) -> int:
    from bridge.config import load_settings
    from bridge.errors import ConfigError

    try:
        settings = load_settings(Path(args.file))
        if settings.gateway.mode == "oauth" and settings.gateway.oauth_file is not None:
            from bridge.gateway.oauth import load_key_set

            load_key_set(settings.gateway.oauth_file)  # the key set's own problems, before a run
    except ConfigError as exc:
        return config_failure("check-config", exc)
    print(_summary(settings, args.file))
    return EXIT_OK


def config_failure(command: str, exc: ConfigError) -> int:
    """Print every configuration problem the same way for every command; the usage exit code."""
    print(f"ibkr-bridge {command}: invalid configuration, {len(exc.problems)} problem(s):", file=sys.stderr)
    for problem in exc.problems:
        print(f"  - {problem}", file=sys.stderr)
    return EXIT_USAGE


def _summary(settings: Settings, source: str) -> str:
    subs = settings.subscriptions
    topics = [name for name, on in (("orders", subs.orders), ("executions", subs.executions),
                                    ("pnl", subs.pnl)) if on]  # fmt: skip
    tls = "verification OFF (insecure_tls)" if settings.gateway.insecure_tls else "verified"
    conids = ", ".join(subs.market_data.conids) or "-"
    guarded = settings.admin.token is not None or settings.admin.token_file is not None
    mutations = "need a bearer token" if guarded else "open on loopback"
    if settings.admin.read_only:
        mutations = "refused: read-only, no admin.token off loopback"
    session = settings.session
    lines = [
        f"{source}: valid",
        f"  gateway        {settings.gateway.url}  (websocket {settings.gateway.ws_url}, TLS {tls})",
        f"                 mode {settings.gateway.mode}"
        + (f", key set {settings.gateway.oauth_file}" if settings.gateway.mode == "oauth" else "")
        + f", ssodh/init compete {settings.gateway.compete}",
        f"  market data    {len(subs.market_data.conids)} conid(s): {conids}",
        f"                 fields {','.join(subs.market_data.fields)}",
        f"  other topics   {', '.join(topics) or '-'}; summary {subs.account_summary or '-'}; "
        f"ledger {subs.account_ledger or '-'}; book {len(subs.book)}; bars {len(subs.bars)}",
        f"  sink           {settings.sink.url}",
        f"  delivery       market {settings.delivery.max_market_data_events} / critical "
        f"{settings.delivery.max_critical_events} events in memory; spool {settings.delivery.spool_dir} "
        f"(quota {settings.delivery.spool_max_bytes} bytes, fsync {settings.delivery.spool_fsync})",
        f"  admin          http://{settings.admin.host}:{settings.admin.port} "
        f"(mutations {mutations})",
        f"  session        tic {session.tic_interval_s}s, tickle {session.tickle_interval_s}s, "
        f"stale after {session.stale_after_s}s, smd refresh {session.smd_refresh_s}s",
    ]
    return "\n".join(lines)


def _add_check_config(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = sub.add_parser(
        "check-config",
        help="validate a config file; list every problem or summarize it",
        description="Validate FILE exactly as `run --config FILE` does (with the BRIDGE_* environment "
        "applied): exit 0 with a one-screen summary, or exit 2 listing every problem with its field "
        "path, value, what is allowed and who set it.",
    )
    parser.add_argument("file", metavar="FILE")
    parser.set_defaults(command=_check_config)


def run_overrides(args: argparse.Namespace) -> dict[str, Any]:
    """Command-line flags as settings overrides (flags win over the file and the environment)."""
    return _flags(args)[0]


def run_override_origins(args: argparse.Namespace) -> dict[tuple[str, ...], str]:
    """The flag that set each override, so a bad value is blamed on the flag."""
    return _flags(args)[1]


def _flags(args: argparse.Namespace) -> tuple[dict[str, Any], dict[tuple[str, ...], str]]:
    overrides: dict[str, Any] = {}
    origins: dict[tuple[str, ...], str] = {}

    def put(path: str, value: Any, flag: str) -> None:
        node = overrides
        *parents, leaf = path.split(".")
        for part in parents:
            node = node.setdefault(part, {})
        node[leaf] = value
        origins[tuple(path.split("."))] = flag

    if args.gateway:
        put("gateway.url", args.gateway, "--gateway")
    if args.gateway_insecure_tls:
        put("gateway.insecure_tls", True, "--gateway-insecure-tls")
    if args.oauth:
        put("gateway.mode", "oauth", "--oauth")
        put("gateway.oauth_file", args.oauth, "--oauth")
    if args.sink:
        put("sink.url", args.sink, "--sink")
    if args.no_kafka_idempotence:
        put("sink.kafka.enable_idempotence", False, "--no-kafka-idempotence")
    if args.market_data:
        put("subscriptions.market_data.conids", args.market_data, "--market-data")
    for flag in ("orders", "executions", "pnl"):
        if getattr(args, flag):
            put(f"subscriptions.{flag}", True, f"--{flag}")
    if args.admin:
        host, _, port = args.admin.rpartition(":")
        put("admin.host", host or "127.0.0.1", "--admin")
        put("admin.port", port, "--admin")
    return overrides, origins


def _run(args: argparse.Namespace) -> int:
    from bridge.config import load_settings
    from bridge.errors import ConfigError
    from bridge.logs import configure_logging

    try:
        config = Path(args.config) if args.config else None
        settings = load_settings(config, run_overrides(args), run_override_origins(args))
    except ConfigError as exc:
        return config_failure("run", exc)
    configure_logging(settings.logging.level, settings.logging.format)
    return runtime.run(_serve(settings), settings.event_loop)


async def _serve(settings: Settings) -> int:
    from bridge.app import Bridge
    from bridge.errors import BridgeError, ConfigError

    try:
        bridge = Bridge(settings)
    except ConfigError as exc:  # e.g. the spool holds another sink's records
        return config_failure("run", exc)
    except ValueError as exc:
        print(f"ibkr-bridge run: {exc}", file=sys.stderr)
        return EXIT_USAGE
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, bridge.stop)
    try:
        await bridge.run()
    except BridgeError as exc:  # worded for the operator already: one line, no traceback
        logging.getLogger("bridge").error("the bridge stopped: %s", exc)
        return EXIT_FAILURE
    except Exception:
        logging.getLogger("bridge").exception("the bridge stopped on an error")
        return EXIT_DATA_LOST if bridge.buffer.lost_critical_events else EXIT_FAILURE
    return EXIT_DATA_LOST if bridge.buffer.lost_critical_events else EXIT_OK  # lost: logged with ids


def _add_run(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = sub.add_parser(
        "run",
        help="run the bridge",
        description="Run the bridge until SIGTERM/SIGINT, then drain. Flags override the config file. "
        "Exit codes: 0 after a clean stop, 1 on a runtime failure, 2 on bad configuration.",
    )
    parser.add_argument("--config", "-c", metavar="FILE", help="YAML config file (see config/ for examples)")
    parser.add_argument("--gateway", metavar="URL", help="gateway base URL, e.g. https://localhost:5000")
    parser.add_argument(
        "--gateway-insecure-tls",
        action="store_true",
        help="accept the loopback gateway's self-signed certificate (TLS verification off)",
    )
    parser.add_argument(
        "--oauth",
        metavar="FILE",
        help="IBKR's Web API over OAuth 1.0a, no gateway: the key set file (oauth.json); "
        "the gateway URL defaults to https://api.ibkr.com",
    )
    parser.add_argument(
        "--sink", metavar="URL", help="kafka://host:port[,host:port], redis://host:port[/db], stdout://, memory://"
    )
    parser.add_argument(
        "--no-kafka-idempotence",
        action="store_true",
        help="for brokers that refuse idempotent producers (sink.kafka.enable_idempotence: false): "
        "a retried batch may then be written twice (deduplicate by the CloudEvents id)",
    )
    parser.add_argument("--market-data", metavar="TARGET[,TARGET...]",
                        help="market data: CONID, CONID@EXCHANGE or a combo SPREAD;;;CONID/RATIO,CONID/RATIO")
    parser.add_argument("--orders", action="store_true", help="subscribe live orders (sor)")
    parser.add_argument("--executions", action="store_true", help="subscribe executions (str)")
    parser.add_argument("--pnl", action="store_true", help="subscribe profit and loss (spl)")
    parser.add_argument("--admin", metavar="HOST:PORT", help="admin HTTP address (default 127.0.0.1:9464)")
    parser.set_defaults(command=_run)


def _demo(args: argparse.Namespace) -> int:
    from bridge.extras import DEMO_MODULES, missing_extra

    missing = missing_extra("demo", DEMO_MODULES)
    if missing:
        print(missing, file=sys.stderr)
        return EXIT_USAGE
    from bridge.demo import main as demo_main

    logging.basicConfig(level=logging.ERROR)
    return demo_main(None if args.keep else args.duration)


def _positive_seconds(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number of seconds") from None
    if not value > 0:
        raise argparse.ArgumentTypeError(f"{text!r} is not allowed: the run time must be more than 0 seconds")
    return value


def _add_demo(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = sub.add_parser(
        "demo",
        help="run simulator, embedded broker and bridge on this machine with a live view",
        description="Start the gateway simulator, an embedded Kafka-protocol broker and the bridge; "
        "show frames/s, events/s per destination, lag and the latest events; "
        "drop the gateway socket half-way; summarize.",
    )
    parser.add_argument("--duration", type=_positive_seconds, default=30.0, metavar="S",
                        help="run time in seconds, more than 0 (default 30)")  # fmt: skip
    parser.add_argument("--keep", action="store_true", help="run until Ctrl-C instead of --duration")
    parser.set_defaults(command=_demo)


def _tail(args: argparse.Namespace) -> int:
    from bridge.config import load_settings
    from bridge.errors import BridgeError, ConfigError

    if args.sink.partition("://")[0] not in ("kafka", "redis", "rediss"):  # tail reads brokers only
        print(f"ibkr-bridge tail: --sink {args.sink!r} is not allowed: kafka://host:port[,host:port], "
              "redis://host:port[/db] or rediss://host:port[/db]", file=sys.stderr)  # fmt: skip
        return EXIT_USAGE
    try:
        config = Path(args.config) if args.config else None
        settings = load_settings(config, {"sink": {"url": args.sink}}, {("sink", "url"): "--sink"})
    except ConfigError as exc:
        return config_failure("tail", exc)
    try:
        asyncio.run(_tail_async(settings, args))
    except KeyboardInterrupt:
        return EXIT_OK
    except BridgeError as exc:
        print(f"ibkr-bridge tail: {exc}", file=sys.stderr)
        return EXIT_FAILURE
    return EXIT_OK


async def _tail_async(settings: Settings, args: argparse.Namespace) -> int:

    from bridge import tail

    destinations = args.destination or tail.default_destinations()
    source: Any  # an async generator of the sink adapter
    if settings.sink.kind == "kafka":
        from bridge.app import kafka_options
        from bridge.sinks.kafka_tail import read_topics

        source = read_topics(kafka_options(settings), destinations, args.from_beginning)
        convert: Callable[[Any], tail.TailedEvent] = lambda record: tail.from_kafka(*record)  # noqa: E731
    else:
        from bridge.app import redis_options
        from bridge.sinks.redis import read_streams

        source = read_streams(redis_options(settings), destinations, args.from_beginning)
        convert = lambda entry: tail.from_redis(*entry)  # noqa: E731
    which = f"events of type {', '.join(args.type)}" if args.type else "events"
    since = "from the oldest retained" if args.from_beginning else "new"
    where = f"{settings.sink.url.partition('://')[0]}://{settings.sink.url.partition('://')[2].rpartition('@')[2]}"
    print(f"ibkr-bridge tail: waiting for {since} {which} on {len(destinations)} destination(s) of "
          f"{where} (Ctrl-C stops)", file=sys.stderr)  # fmt: skip
    # Closed explicitly, also after --count: the consumer stops instead of being left pending.
    async with contextlib.aclosing(source):
        events = (convert(item) async for item in source)
        try:
            return await tail.tail(events, args.type or [], sys.stdout, as_json=args.json, count=args.count)
        finally:
            await events.aclose()


def _add_tail(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = sub.add_parser(
        "tail",
        help="consume the bridge's destinations and pretty-print events",
        description="Read what a consumer sees from Kafka topics or Redis Streams and print one line "
        "per event (or CloudEvents JSON with --json). Without --from-beginning only new events show; "
        "order and execution events need order flow (e.g. `ibkr-bridge sim --order-flow`).",
    )
    parser.add_argument("--sink", required=True, metavar="URL", help="kafka://host:port or redis://host:port[/db]")
    parser.add_argument("--config", "-c", metavar="FILE", help="config file for broker options (SASL, TLS)")
    parser.add_argument("--type", action="append", metavar="TYPE", help="type or part: orders, quote")
    parser.add_argument("--destination", action="append", metavar="NAME", help="topic/stream (default: all)")
    parser.add_argument("--from-beginning", action="store_true", help="start at the oldest retained event")
    parser.add_argument("--count", type=int, metavar="N", help="stop after N events")
    parser.add_argument("--json", action="store_true", help="print structured CloudEvents JSON lines")
    parser.set_defaults(command=_tail)


def _add_spool(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    from bridge.spool_cli import add_spool

    add_spool(sub)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="ibkr-bridge",
        description="Bridge the Interactive Brokers Client Portal Gateway websocket to Kafka topics and "
        "Redis Streams as typed, versioned CloudEvents. Exit codes: 0 success, 1 runtime failure, "
        "2 usage or configuration error. `ibkr-bridge COMMAND --help` describes each command.",
    )
    sub = parser.add_subparsers(dest="name", required=True, metavar="COMMAND")
    for add in (_add_run, _add_demo, _add_tail, _add_check_config, _add_normalize, _add_schemas, _add_sim,
                _add_spool, add_asyncapi_command):
        add(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    command: Command = args.command
    return command(args)


if __name__ == "__main__":
    sys.exit(main())
