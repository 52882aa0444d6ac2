"""sandboxer: rootless, daemonless sandboxes for test isolation.

The public API is small: describe a sandbox with :class:`SandboxOptions`,
run it with :func:`run`, and catch :class:`SandboxerError` (its ``hint``
says how to fix what went wrong).  Names are imported lazily, so importing
``sandboxer`` costs nothing until one is used.
"""

from __future__ import annotations

TYPE_CHECKING = False
__all__ = [
    "SandboxOptions", "Volume", "ExitStatus", "run", "run_bundle",
    "SandboxerError", "UsageError", "ConfigError", "SetupError", "HostError",
]
__version__ = "0.1.0"

_LAZY = {
    "SandboxOptions": "sandboxer.sandbox", "Volume": "sandboxer.sandbox",
    "run": "sandboxer.sandbox", "run_bundle": "sandboxer.sandbox",
    "ExitStatus": "sandboxer.runtime.process",
    "SandboxerError": "sandboxer.errors", "UsageError": "sandboxer.errors",
    "ConfigError": "sandboxer.errors", "SetupError": "sandboxer.errors",
    "HostError": "sandboxer.errors",
}

if TYPE_CHECKING:
    from typing import Any

    from .errors import ConfigError, HostError, SandboxerError, SetupError, UsageError
    from .runtime.process import ExitStatus
    from .sandbox import SandboxOptions, Volume, run, run_bundle


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'sandboxer' has no attribute {name!r}")
