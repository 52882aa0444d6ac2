"""The one error hierarchy of sandboxer.

Every error a user can cause or meet carries a one-line message and, where
there is one, a ``hint`` that says how to fix it.  The CLI prints both and
exits non-zero; the traceback is shown only with ``--debug``.
"""

from __future__ import annotations

__all__ = [
    "SandboxerError",
    "UsageError",
    "ConfigError",
    "SetupError",
    "HostError",
]


class SandboxerError(Exception):
    """Base class: ``str(err)`` is the one-line message, ``err.hint`` the fix."""

    #: exit status the CLI uses for this error (Docker's 125: the sandbox never ran)
    exit_code = 125

    def __init__(self, message: str, hint: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.hint = hint

    def __str__(self) -> str:
        return self.message


class UsageError(SandboxerError):
    """A command-line or API mistake: bad option value, missing argument."""


class ConfigError(SandboxerError):
    """A malformed or unsupported OCI config; ``path`` is the JSON path of the problem."""

    def __init__(self, path: str, message: str, hint: str | None = None) -> None:
        super().__init__(f"{path}: {message}" if path else message, hint)
        self.path = path


class HostError(SandboxerError):
    """The host cannot give what was asked (no user namespaces, missing helper, …)."""


class SetupError(SandboxerError):
    """A step of sandbox set-up failed; ``step`` names it (e.g. ``"mount /proc"``)."""

    def __init__(self, step: str, message: str, hint: str | None = None) -> None:
        super().__init__(f"{step}: {message}", hint)
        self.step = step
