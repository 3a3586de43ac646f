"""What each kind of spool damage costs: an inventory of records, damaged twelve ways, a restart after each.

Run: ``.venv/bin/python -m tests.bench.bench_spool_damage [--records N] [--segment-bytes B] [--json]``

For each variant of :data:`tests.fixtures.spool_damage.VARIANTS` a fresh spool gets the inventory
(7,657 records of 200-900 bytes in about 150 segments by default, the first 10 % acknowledged),
the damage is applied to the files, and the spool is reopened (as a restarted bridge opens it) and
drained. Printed per variant: the entries the damage touched, the records that did not come back
(and how many of them the damage had not touched), records delivered twice, the regions the spool
reported and the records lost it reported (from sequence numbers; ``-``: nothing tells).
Against a checkout of an earlier version (``PYTHONPATH=that/checkout``) it prints what that one lost.
"""

from __future__ import annotations

import argparse
import json
import logging
import tempfile
import time
from pathlib import Path

from tests.fixtures.spool_damage import VARIANTS, build, restart, segment_files


def run(records: int, segment_bytes: int) -> list[dict[str, object]]:
    rows: list[dict[str, object]] = []
    for name, damage in VARIANTS.items():
        with tempfile.TemporaryDirectory() as tmp:
            directory = Path(tmp)
            placed = build(directory, records, segment_bytes, records // 10)
            segments = len(segment_files(directory))
            damaged = damage(directory, placed)
            started = time.perf_counter()
            outcome = restart(directory, segment_bytes, damaged, [p.n for p in placed])
            seconds = time.perf_counter() - started
        reported = [r for r in outcome.reports if r.records_lost is not None]
        rows.append({
            "variant": name,
            "segments": segments,
            "unacknowledged": len(placed),
            "damaged_entries": len(damaged),
            "records_lost": len(outcome.lost),
            "lost_beyond_damage": len(outcome.lost - damaged),
            "duplicates_delivered": len(outcome.replayed) - len(set(outcome.replayed)),
            "regions_reported": len(outcome.reports),
            "reported_lost": sum(r.records_lost for r in reported) if reported else None,
            "restart_and_drain_s": round(seconds, 3),
        })  # fmt: skip
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--records", type=int, default=7_657)
    parser.add_argument("--segment-bytes", type=int, default=31 << 10)
    parser.add_argument("--json", action="store_true", help="print the rows as JSON")
    args = parser.parse_args()
    logging.disable(logging.CRITICAL)  # the previous version logs a traceback per 8 zeroed bytes
    rows = run(args.records, args.segment_bytes)
    if args.json:
        print(json.dumps(rows, indent=2))
        return
    header = (f"{'variant':<38} {'segs':>5} {'damaged':>8} {'lost':>6} {'beyond':>7} {'dups':>5} "
              f"{'regions':>8} {'reported':>9}")  # fmt: skip
    print(header)
    for row in rows:
        reported = "-" if row["reported_lost"] is None else row["reported_lost"]
        print(f"{row['variant']:<38} {row['segments']:>5} {row['damaged_entries']:>8} {row['records_lost']:>6} "
              f"{row['lost_beyond_damage']:>7} {row['duplicates_delivered']:>5} {row['regions_reported']:>8} "
              f"{reported:>9}")  # fmt: skip


if __name__ == "__main__":
    main()
