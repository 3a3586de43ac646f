"""``python -m bridge.sim``: the same as ``ibkr-bridge sim``."""

from __future__ import annotations

import argparse
import sys

from bridge.sim.cli import configure_parser, run


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bridge.sim", description="gateway simulator")
    configure_parser(parser)
    return run(parser.parse_args(argv))


if __name__ == "__main__":
    sys.exit(main())
