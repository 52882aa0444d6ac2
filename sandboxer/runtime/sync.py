"""Messages over the set-up pipes between the caller and the sandbox.

One message is one line of tab-separated fields, written with a single
``write`` (shorter than PIPE_BUF, so never interleaved).  Errors travel as
``error <step> <message> <hint> <exit code>`` and are raised in the caller
as :class:`SetupError`; every hand-off waits on a pipe, never a sleep.
"""

from __future__ import annotations

import os

from ..errors import SandboxerError, SetupError

__all__ = ["send", "send_error", "Reader", "error_from_fields", "write_all"]


_FIELD_MAX = 800  # bytes: an error's five fields stay under PIPE_BUF (4096), so one write is one message


def _clean(field: object) -> str:
    text = str(field).replace("\t", " ").replace("\n", " ")
    raw = text.encode()
    return text if len(raw) <= _FIELD_MAX else raw[:_FIELD_MAX - 3].decode(errors="ignore") + "…"


def send(fd: int, *fields: object) -> None:
    """One message, in one write: a field longer than 800 bytes (a path of 4,000) is cut, the line never
    (cut, it lost its newline and the fields after it, and the caller saw no error at all)."""
    os.write(fd, ("\t".join(_clean(f) for f in fields) + "\n").encode())


def write_all(fd: int, data: bytes) -> None:
    """Write all of ``data`` to ``fd`` (a pipe may take it in parts)."""
    while data:
        data = data[os.write(fd, data):]


def send_error(fd: int, err: BaseException, step: str = "set up the sandbox") -> None:
    """Report ``err`` (a SandboxerError keeps its step and hint)."""
    if isinstance(err, SetupError):
        step, message = err.step, err.message.removeprefix(f"{err.step}: ")
    elif isinstance(err, OSError):
        message = err.strerror or str(err)
        if err.filename:
            message = f"{message}: {err.filename}" if str(err.filename) not in message else message
    else:
        message = str(err) or type(err).__name__
    hint = getattr(err, "hint", None) or ""
    code = getattr(err, "exit_code", 125)
    try:
        send(fd, "error", step, message, hint, code)
    except OSError:
        pass  # the caller is gone; nothing to tell


def error_from_fields(fields: list[str]) -> SandboxerError:
    step, message, hint, code = [*fields, "", "", "", "125"][1:5]
    err = SetupError(step, message, hint or None)
    err.exit_code = int(code) if code.isdecimal() else 125
    return err


class Reader:
    """Line reader over a pipe; ``recv()`` returns None at end of file."""

    def __init__(self, fd: int) -> None:
        self.fd = fd
        self._buf = b""

    def recv(self) -> list[str] | None:
        while b"\n" not in self._buf:
            chunk = os.read(self.fd, 4096)
            if not chunk:
                return None
            self._buf += chunk
        line, self._buf = self._buf.split(b"\n", 1)
        return line.decode(errors="replace").split("\t")

    def expect(self, *verbs: str) -> list[str]:
        """The next message, which must be one of ``verbs``; an ``error`` is raised."""
        msg = self.recv()
        if msg is None:
            raise SetupError("set up the sandbox", "the set-up process died unexpectedly",
                             hint="run with --debug for details")
        if msg[0] == "error":
            raise error_from_fields(msg)
        if msg[0] not in verbs:
            raise SetupError("set up the sandbox", f"protocol error: expected {' or '.join(verbs)}, got {msg[0]!r}")
        return msg

    def close(self) -> None:
        os.close(self.fd)
