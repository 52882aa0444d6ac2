"""Finding and calling plugins, without paying for it on every run.

Importing pluggy costs ~17 ms and scanning installed distributions for
entry points ~30 ms — together more than a whole sandbox start.  So:

* :data:`hookimpl` is a marker that sets the attribute pluggy reads
  (``sandboxer_impl``), so built-ins are marked without importing pluggy;
* the entry points of the ``sandboxer`` group are cached, keyed by the
  modification times of the ``sys.path`` directories (installing or removing
  a package changes them) — a few environments' worth in one file, so that
  a pytest run and the command line, whose ``sys.path`` differ, do not
  evict each other — and held in memory once read;
* :func:`call` dispatches to the built-ins (and in-process plugins given to
  :func:`register`) directly when no third-party plugin is installed — the
  same functions pluggy would call, in the same order — and through a real
  ``pluggy.PluginManager`` otherwise.
"""

from __future__ import annotations

import os
import sys

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Callable
    from typing import Any

    import pluggy

__all__ = ["hookimpl", "plugin_manager", "call", "external_entry_points", "register"]

_BUILTINS = ("sandboxer.builtins",)
_CACHE_VERSION = "2"
#: how many environments (``sys.path`` keys) the cache file remembers
_CACHE_KEYS = 8


def hookimpl(func: Callable[..., Any] | None = None, *, tryfirst: bool = False, trylast: bool = False) -> Any:
    """Mark a hook implementation (equivalent to ``pluggy.HookimplMarker("sandboxer")``)."""

    def mark(f: Callable[..., Any]) -> Callable[..., Any]:
        f.sandboxer_impl = {  # type: ignore[attr-defined]
            "wrapper": False, "hookwrapper": False, "optionalhook": False,
            "tryfirst": tryfirst, "trylast": trylast, "specname": None,
        }
        return f

    return mark(func) if func is not None else mark


def _cache_path() -> str:
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return os.path.join(base, "sandboxer", "entry-points")


def _path_key() -> str:
    parts = [_CACHE_VERSION]
    for entry in sys.path:
        try:
            parts.append(f"{entry}:{os.stat(entry or '.').st_mtime_ns}")
        except OSError:
            parts.append(f"{entry}:-")
    return "|".join(parts)


#: (sys.path as it was, what was found for it): a pytest process calls hooks for every test
_memo: tuple[tuple[str, ...], list[tuple[str, str]]] | None = None


def external_entry_points() -> list[tuple[str, str]]:
    """(name, "module:attr") of the installed ``sandboxer`` entry points, cached."""
    global _memo
    if _memo is not None and _memo[0] == tuple(sys.path):
        return _memo[1]
    path_now = tuple(sys.path)
    key = _path_key()
    path = _cache_path()
    blocks: list[list[str]] = []
    try:
        with open(path) as f:
            blocks = [block.splitlines() for block in f.read().split("\n\n") if block.strip()]
    except OSError:
        pass
    found: list[tuple[str, str]]
    for lines in blocks:
        if lines[0] == key:
            found = [(name, value) for name, _, value in (line.partition("=") for line in lines[1:]) if value]
            _memo = (path_now, found)
            return found
    from importlib.metadata import entry_points

    found = sorted((ep.name, ep.value) for ep in entry_points(group="sandboxer"))
    _memo = (path_now, found)
    kept = [lines for lines in blocks if lines[0].startswith(_CACHE_VERSION + "|")][:_CACHE_KEYS - 1]
    if "\n" in key:
        return found  # a sys.path entry with a line break: not worth a file format that survives it
    try:
        os.makedirs(os.path.dirname(path), exist_ok=True)
        tmp = f"{path}.{os.getpid()}"
        with open(tmp, "w") as f:
            f.write("\n\n".join("\n".join(lines) for lines in [[key, *(f"{n}={v}" for n, v in found)], *kept])
                    + "\n")
        os.replace(tmp, path)
    except OSError:
        pass  # a read-only home only costs the scan next time
    return found


_pm: pluggy.PluginManager | None = None


def plugin_manager() -> pluggy.PluginManager:
    """The process-wide plugin manager with built-ins and entry-point plugins."""
    global _pm
    if _pm is None:
        import importlib

        import pluggy

        from . import hookspecs

        pm = pluggy.PluginManager("sandboxer")
        pm.add_hookspecs(hookspecs)
        for name in _BUILTINS:
            pm.register(importlib.import_module(name), name=name)
        for name, value in external_entry_points():
            module, _, attr = value.partition(":")
            obj: Any = importlib.import_module(module.strip())
            for part in filter(None, attr.strip().split(".")):
                obj = getattr(obj, part)
            pm.register(obj, name=name)
        for plugin, local_name in _local:
            pm.register(plugin, name=local_name)
        _pm = pm
    return _pm


#: in-process plugins registered before the plugin manager exists (the supervisor's own hooks)
_local: list[tuple[object, str | None]] = []


def register(plugin: object, name: str | None = None) -> None:
    """Register an in-process plugin (the supervisor's own hooks).

    Without a plugin manager yet it joins the built-ins on the fast path — a supervisor does not
    import pluggy (~20 ms before its sandbox starts, and its memory for the sandbox's lifetime).
    """
    if _pm is None:
        _local.append((plugin, name))
    else:
        _pm.register(plugin, name=name)


def call(hook: str, **kwargs: Any) -> list[Any]:
    """Call hook ``hook`` on every plugin; results in pluggy's order (LIFO, tryfirst)."""
    if _pm is None and not external_entry_points():
        return _call_builtins(hook, kwargs)
    return list(getattr(plugin_manager().hook, hook)(**kwargs))


def _call_builtins(hook: str, kwargs: dict[str, Any]) -> list[Any]:
    for name in _BUILTINS:
        __import__(name)  # what importlib.import_module does, without loading importlib and warnings
    impls = []
    plugins = [sys.modules[name] for name in _BUILTINS] + [p for p, _ in _local]
    for plugin in reversed(plugins):  # pluggy calls the last registered first
        impl = getattr(plugin, hook, None)
        if impl is not None and hasattr(impl, "sandboxer_impl"):
            impls.append(impl)
    impls.sort(key=lambda f: (not f.sandboxer_impl["tryfirst"], f.sandboxer_impl["trylast"]))
    results = []
    for impl in impls:
        result = impl(**kwargs)
        if result is not None:
            results.append(result)
    return results
