"""The table and ratios of ``bench_e2e``: medians over repeats per contender and offered load."""

from __future__ import annotations

import statistics
from typing import Any

KEYS = ("frames_per_s", "acks_per_s", "cpu_s_per_100k", "frames_per_cpu_s", "cpu_percent", "runq_wait_percent", "core_others_percent", "p50_ms",
        "p99_ms", "p999_ms", "max_ms", "peak_rss_mb")  # fmt: skip
# a contender that waited for a CPU longer than this share of its window while other work ran on its
# core for as long was starved: its row is marked, and its figures say more about the machine than
# about the contender (a multi-threaded contender also waits behind its own threads: not starvation)
STARVED_WAIT_PERCENT = 10.0


def starved(row: dict[str, Any]) -> bool:
    others = row.get("core_others_percent")
    return (row.get("runq_wait_percent") or 0) > STARVED_WAIT_PERCENT and (
        others is None or others > STARVED_WAIT_PERCENT
    )
PACED = ("idle", "500", "1k", "5k", "20k")
# what the bridge (Kafka; Redis in the same proportions) aims at: % of a core per paced load, p99/p99.9
CPU_TARGETS = {"idle": 1.0, "1k": 8.0, "5k": 20.0, "20k": 40.0}
LATENCY_TARGETS_MS = {"p99_ms": 10.0, "p999_ms": 20.0}
# contender -> name of the bridge's ratio to it; ``bare/kafka`` is the ceiling reference (perf-limits §5)
BASELINES = {"tutorial": "bridge/baseline", "ibind": "bridge/ibind", "bare/kafka": "bridge/bare"}
TARGETS = {"bridge/bare": {"frames_per_s": 2 / 3}}  # the target: the bridge at >= 2/3 of the bare pipeline


def _median(values: list[float | None]) -> float | None:
    present = [v for v in values if v is not None]
    return statistics.median(present) if present else None


def summarize(runs: list[dict[str, Any]]) -> dict[str, Any]:
    rows: dict[str, dict[str, Any]] = {}
    for run in runs:
        row = rows.setdefault(f"{run['contender']} @ {run['load']}", {"contender": run["contender"],
                                                                         "load": run["load"], "runs": []})  # fmt: skip
        row["runs"].append(run)
    table = []
    for row in rows.values():
        group = row.pop("runs")
        medians = {key: _median([r.get(key) for r in group]) for key in KEYS}
        peers = {
            name: _median([r["peer_cpu_percent"][name] for r in group])
            for name in group[0]["peer_cpu_percent"]
        }
        loadavg = _median([r["loadavg"][0] for r in group if "loadavg" in r])
        table.append({**row, **medians, "repeats": len(group), "peer_cpu_percent": peers, "loadavg_1m": loadavg,
                      "conflated": sum(r.get("conflated", 0) for r in group),
                      "verified": all(r["verified"] for r in group)})  # fmt: skip
    return {"rows": table, "ratios": ratios(table), "paced": paced_ratios(table)}


def paced_ratios(table: list[dict[str, Any]]) -> dict[str, Any]:
    """Per paced load: each bridge's % of a core and CPU per frame over the tutorial-style
    contender's and the bare pipeline's in the same run (below 1 is cheaper)."""
    cells = {(row["contender"], row["load"]): row for row in table}
    out: dict[str, Any] = {}
    for load in PACED:
        for bridge in ("bridge/kafka", "bridge/redis"):
            mine = cells.get((bridge, load))
            if mine is None:
                continue
            entry: dict[str, Any] = {"cpu_percent": mine["cpu_percent"]}
            previous = bridge.replace("bridge/", "previous/")  # bench_e2e --previous
            for other, name in (("tutorial", "tutorial"), ("bare/kafka", "bare"), (previous, "previous")):
                theirs = cells.get((other, load))
                if theirs is not None and theirs["cpu_percent"]:
                    entry[f"cpu_vs_{name}"] = mine["cpu_percent"] / theirs["cpu_percent"]
                if theirs is not None and mine["cpu_s_per_100k"] and theirs["cpu_s_per_100k"]:
                    # per frame: fair when a starved machine delivered the contenders different rates
                    entry[f"cpu_per_frame_vs_{name}"] = mine["cpu_s_per_100k"] / theirs["cpu_s_per_100k"]
            out[f"{bridge} @ {load}"] = entry
    return out


def ratios(table: list[dict[str, Any]]) -> dict[str, Any]:
    """bridge (Kafka) over each other contender, flat out: frames/s and frames per CPU-second."""
    burst = {row["contender"]: row for row in table if row["load"] == "burst"}
    bridge = burst.get("bridge/kafka")
    out: dict[str, Any] = {}
    for contender, name in {**BASELINES, "previous/kafka": "bridge/previous"}.items():
        other = burst.get(contender)
        if bridge is None or other is None:
            continue
        out[name] = {key: bridge[key] / other[key] for key in ("frames_per_s", "frames_per_cpu_s")
                     if bridge[key] and other[key]}  # fmt: skip
    return out


def _fmt(value: float | None, spec: str) -> str:
    return "-" if value is None else format(value, spec)


def print_table(summary: dict[str, Any]) -> None:
    header = (f"{'contender':<14} {'load':>5} {'frames/s':>9} {'acks/s':>7} {'% core':>6} {'CPU-s/100k':>10} {'frames/CPU-s':>12} "
              f"{'p50 ms':>7} {'p99 ms':>7} {'p99.9 ms':>8} {'RSS MB':>7} {'sim/tansu/redis CPU%':>21} "
              f"{'loadavg':>7} {'wait%':>5} {'other%':>6} ok")  # fmt: skip
    print(header)
    print("-" * len(header))
    for row in summary["rows"]:
        peers = row["peer_cpu_percent"]
        peer_text = "/".join(f"{peers[name]:.0f}" for name in ("sim", "tansu", "redis"))
        print(f"{row['contender']:<14} {row['load']:>5} {_fmt(row['frames_per_s'], ',.0f'):>9} "
              f"{_fmt(row['acks_per_s'], ',.0f'):>7} {_fmt(row['cpu_percent'], '.1f'):>6} {_fmt(row['cpu_s_per_100k'], '.2f'):>10} {_fmt(row['frames_per_cpu_s'], ',.0f'):>12} "
              f"{_fmt(row['p50_ms'], '.2f'):>7} {_fmt(row['p99_ms'], '.2f'):>7} {_fmt(row['p999_ms'], '.2f'):>8} "
              f"{_fmt(row['peak_rss_mb'], '.0f'):>7} {peer_text:>21} {_fmt(row.get('loadavg_1m'), '.2f'):>7} "
              f"{_fmt(row.get('runq_wait_percent'), '.0f'):>5} {_fmt(row.get('core_others_percent'), '.0f'):>6} "
              f"{'yes' if row['verified'] else 'NO'}{' STARVED' if starved(row) else ''}")  # fmt: skip
    for name, values in summary["ratios"].items():
        parts = ", ".join(f"{key} {value:.2f}x" if value < 10 else f"{key} {value:.1f}x"
                          for key, value in values.items())  # fmt: skip
        targets = ", ".join(f"{key} >= {value:.2f}x" for key, value in TARGETS.get(name, {}).items())
        print(f"{name} (flat out): {parts}" + (f"  (target {targets})" if targets else ""))
    for name, entry in summary["paced"].items():
        load = name.rsplit(" @ ", 1)[1]
        parts = [f"{entry['cpu_percent']:.1f} % of a core" + (f" (target ~{CPU_TARGETS[load]:g} %)"
                                                              if load in CPU_TARGETS else "")]  # fmt: skip
        parts += [f"{key.replace('_vs_', ' vs ')} {value:.2f}x" for key, value in entry.items() if key != "cpu_percent"]
        print(f"{name}: " + ", ".join(parts))
