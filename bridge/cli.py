"""The ``ibkr-bridge`` command line.

Exit codes: 0 success; 1 runtime failure; 2 usage or configuration error.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable, Sequence

EXIT_OK = 0
EXIT_FAILURE = 1
EXIT_USAGE = 2

Command = Callable[[argparse.Namespace], int]


def _add_sim(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    from bridge.sim import cli as sim_cli  # type: ignore[attr-defined,unused-ignore]

    parser = sub.add_parser("sim", help="run the Client Portal Gateway simulator")
    sim_cli.configure_parser(parser)
    parser.set_defaults(command=sim_cli.run)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="ibkr-bridge", description=__doc__)
    sub = parser.add_subparsers(dest="name", required=True, metavar="COMMAND")
    for add in (_add_sim,):
        try:
            add(sub)
        except ImportError:  # a command whose module is not built yet is simply absent
            continue
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    command: Command = args.command
    return command(args)


if __name__ == "__main__":
    sys.exit(main())
