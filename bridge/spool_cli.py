"""``ibkr-bridge spool status DIR``: what a spool holds and the sink it belongs to (exit 2 on bad usage)."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from bridge.delivery.spool_identity import inspect
from bridge.errors import ConfigError


def _spool_status(args: argparse.Namespace) -> int:
    directory = Path(args.dir)
    if not directory.is_dir():
        print(f"ibkr-bridge spool status: {directory} is not a directory", file=sys.stderr)
        return 2
    try:
        report = inspect(directory)
    except ConfigError as exc:
        print(f"ibkr-bridge spool status: {len(exc.problems)} problem(s):", file=sys.stderr)
        for problem in exc.problems:
            print(f"  - {problem}", file=sys.stderr)
        return 2
    print(json.dumps(report.to_json(), indent=2) if args.json else report.render())
    return 0


def add_spool(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = sub.add_parser(
        "spool",
        help="inspect an on-disk spool",
        description="Inspect the spool of undelivered critical records (delivery.spool_dir).",
    )
    actions = parser.add_subparsers(dest="action", required=True, metavar="ACTION")
    status = actions.add_parser(
        "status",
        help="segments, undelivered records by destination and type, and the sink the spool belongs to",
        description="Show what a spool holds without acknowledging anything: segments, bytes, "
        "undelivered records by destination and by event type, and the sink (kind, servers, "
        "destinations) its records were written for. Run it while no bridge uses the directory.",
    )
    status.add_argument("dir", metavar="DIR", help="the spool directory (delivery.spool_dir)")
    status.add_argument("--json", action="store_true", help="print the report as JSON")
    status.set_defaults(command=_spool_status)
