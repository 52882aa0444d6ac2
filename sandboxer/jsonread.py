"""Parsing JSON without importing the ``json`` package.

``exec``, ``ps``, ``stop`` and ``rm`` read the sandboxes' records and nothing
else JSON, yet ``import json`` compiles the ``re`` patterns of its Python
fallbacks (and loads ``re``, ``enum``, ``functools``): ~8 ms here, a fifth of
``sandboxer exec``.  The C scanner those fallbacks stand in for does the
whole parse; this module drives it directly.  Writing still uses ``json``.
"""

from __future__ import annotations

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Callable
    from typing import Any

__all__ = ["loads"]

_WHITESPACE = " \t\n\r"


class _Options:
    """What the C scanner reads off ``json.JSONDecoder``: its defaults."""

    strict = True
    object_hook = None
    object_pairs_hook = None
    parse_float = float
    parse_int = int
    parse_constant = float  # NaN, Infinity, -Infinity: float() spells them the same


def _c_scanner() -> Callable[[str, int], tuple[Any, int]] | None:
    try:
        from _json import make_scanner
    except ImportError:  # an interpreter without CPython's accelerator
        return None
    options: Any = _Options()  # any object with JSONDecoder's attributes; typeshed names one class
    scanner: Callable[[str, int], tuple[Any, int]] = make_scanner(options)
    return scanner


_scan = _c_scanner()


def loads(text: str) -> Any:
    """``json.loads(text)`` for a str; malformed text raises ValueError, as there."""
    if _scan is None:
        import json

        return json.loads(text)
    start = len(text) - len(text.lstrip(_WHITESPACE))
    try:
        value, end = _scan(text, start)
    except StopIteration as e:  # no value where one must start: the scanner's signal, with the offset
        raise ValueError(f"expecting a JSON value at offset {e.value}") from None
    if text[end:].strip(_WHITESPACE):
        raise ValueError(f"extra data at offset {end}")
    return value
