"""JSON without importing the ``json`` package: CPython's C scanner and encoder, driven directly.

``exec``, ``ps``, ``stop`` and ``rm`` read the sandboxes' records, and a
detached sandbox's supervisor writes one before it starts the sandbox, yet
``import json`` compiles the ``re`` patterns of its Python fallbacks (and
loads ``re``, ``enum``, ``functools``): ~8 ms here, a fifth of ``sandboxer
exec`` and on the critical path of ``run -d``.  The C scanner and encoder
those fallbacks stand in for do the whole job; where they are missing (not
CPython), the ``json`` package does it.
"""

from __future__ import annotations

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Callable
    from typing import Any

__all__ = ["loads", "dumps"]

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


def _not_serializable(value: object) -> Any:
    raise TypeError(f"Object of type {type(value).__name__} is not JSON serializable")


def _c_encoder(separators: tuple[str, str], sort_keys: bool) -> Callable[[Any, int], Any] | None:
    try:
        from _json import encode_basestring_ascii, make_encoder
    except ImportError:
        return None
    item, key = separators
    #: what ``json.JSONEncoder.iterencode`` gives it: a fresh dict of circular-reference markers (an
    #: encoding that failed may leave some behind), default, string encoder, indent (none: the C encoder
    #: has no indent), key and item separators, sort_keys, skipkeys, allow_nan
    encoder: Callable[[Any, int], Any] = make_encoder({}, _not_serializable, encode_basestring_ascii, None, key,
                                                      item, sort_keys, False, True)
    return encoder


def dumps(value: Any, *, separators: tuple[str, str] = (", ", ": "), sort_keys: bool = False) -> str:
    """``json.dumps(value, separators=..., sort_keys=...)``, to the byte; what it cannot encode raises
    TypeError, a reference cycle ValueError, as there."""
    encoder = _c_encoder(separators, sort_keys)
    if encoder is None:
        import json

        return json.dumps(value, separators=separators, sort_keys=sort_keys)
    return "".join(encoder(value, 0))
