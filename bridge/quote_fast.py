"""The quote fast path's one home: :class:`~bridge.events.Quote` built and read slot by slot,
generated from its dataclass fields (pure).

Quotes are the bulk of the traffic. The frozen dataclass's ``__init__`` goes through
``object.__setattr__`` per field and orjson walks a slotted dataclass field by field; the two
functions here do the same work in about half the time. They are generated once, at import, from
``Quote``'s own field list, so a field added to ``Quote`` reaches them without another edit.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import Any

from bridge.events import Quote

QUOTE_FIELDS: tuple[str, ...] = tuple(f.name for f in dataclasses.fields(Quote))


def _generate(source: str, name: str, namespace: dict[str, Any]) -> Callable[..., Any]:
    # The source is built from Quote's own field names, nothing else.
    exec(compile(source, f"<generated {name}>", "exec"), namespace)
    function: Callable[..., Any] = namespace[name]
    return function


_params = ", ".join(QUOTE_FIELDS)
_setters = {f"_set_{name}": getattr(Quote, name).__set__ for name in QUOTE_FIELDS}
new_quote: Callable[..., Quote] = _generate(
    f"def new_quote({_params}):\n"
    "    quote = _new(_Quote)\n"
    + "".join(f"    _set_{name}(quote, {name})\n" for name in QUOTE_FIELDS)
    + "    return quote\n",
    "new_quote",
    {"_new": object.__new__, "_Quote": Quote, **_setters},
)
new_quote.__doc__ = """``Quote(...)`` with every field given positionally, in field order: the slots are
filled directly (the same result, still frozen afterwards)."""

quote_fields: Callable[[Quote], dict[str, Any]] = _generate(
    "def quote_fields(quote):\n    return {" + ", ".join(f"{n!r}: quote.{n}" for n in QUOTE_FIELDS) + "}\n",
    "quote_fields",
    {},
)
quote_fields.__doc__ = """The quote's fields as a new dict, in field order (what orjson writes for it)."""
del _params, _setters
