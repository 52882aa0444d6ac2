"""The ``sandbox`` fixture's handle: run commands in a sandbox of the test's own.

Every :meth:`SandboxHandle.run` starts a fresh set of namespaces over the
same writable layer and the same private ``/tmp``, so files written by one
command are there for the next, as in one long-lived container — and
nothing of it reaches the host or outlives the handle.
"""

from __future__ import annotations

import os
import subprocess
import tempfile
from collections.abc import Sequence
from typing import Any

__all__ = ["SandboxHandle"]


class SandboxHandle:
    """A sandbox for one test: on the host root, or in ``image=NAME`` from the store.

    Keywords are those of :class:`sandboxer.SandboxOptions` (``env`` may be a dict).
    """

    def __init__(self, **options: Any) -> None:
        from sandboxer.state import create_locked_dir, state_root

        env = options.pop("env", None) or {}
        self._env = [f"{k}={v}" for k, v in env.items()] if isinstance(env, dict) else list(env)
        self._options = options
        self._dir = os.path.join(state_root(), f"handle-{os.urandom(8).hex()}")
        # locked: a crashed pytest's handles are collected by the next run, live ones never
        self._lock = create_locked_dir(self._dir, ("layers", "tmp"))
        self._upper = os.path.join(self._dir, "layers")
        self._tmp = os.path.join(self._dir, "tmp")
        os.chmod(self._tmp, 0o1777)
        self.closed = False

    def run(self, cmd: Sequence[str], *, check: bool = False, input: bytes | str | None = None,
            timeout: float | None = None, env: dict[str, str] | None = None,
            text: bool | None = None) -> subprocess.CompletedProcess[Any]:
        """Run ``cmd`` in the sandbox; like :func:`subprocess.run` with output captured."""
        from sandboxer import SandboxOptions, Volume, run

        if self.closed:
            raise RuntimeError("this sandbox has been closed")
        as_text = isinstance(input, str) if text is None else text
        data = input.encode() if isinstance(input, str) else (input or b"")
        volumes = [*self._options.get("volumes", ()), Volume(self._tmp, "/tmp", False)]
        opts = SandboxOptions(**{**self._options, "command": list(cmd), "upper_dir": self._upper,
                                 "volumes": volumes, "interactive": True,
                                 "env": [*self._env, *(f"{k}={v}" for k, v in (env or {}).items())]})
        with tempfile.TemporaryFile() as stdin, tempfile.TemporaryFile() as out, \
                tempfile.TemporaryFile() as err:
            stdin.write(data)
            stdin.seek(0)
            status = run(opts, timeout=timeout, stdio=(stdin.fileno(), out.fileno(), err.fileno()),
                         on_notice=lambda _m: None)
            out.seek(0)
            err.seek(0)
            stdout, stderr = out.read(), err.read()
        if status.timed_out:
            raise subprocess.TimeoutExpired(list(cmd), timeout or 0, stdout, stderr)
        result: subprocess.CompletedProcess[Any] = subprocess.CompletedProcess(
            list(cmd), status.code, stdout.decode(errors="replace") if as_text else stdout,
            stderr.decode(errors="replace") if as_text else stderr)
        if check:
            result.check_returncode()
        return result

    def write_file(self, path: str, data: bytes | str, mode: int = 0o644) -> None:
        """Create or replace ``path`` inside the sandbox."""
        self.run(["sh", "-c", 'cat > "$1" && chmod "$2" "$1"', "sh", path, f"{mode:o}"], input=data,
                 check=True)

    def read_file(self, path: str) -> bytes:
        """The contents of ``path`` inside the sandbox."""
        data: bytes = self.run(["cat", path], check=True, text=False).stdout
        return data

    def close(self) -> None:
        """Remove the writable layer and /tmp (files of any of the sandbox's users)."""
        if not self.closed:
            from sandboxer.state import remove_tree

            self.closed = True
            remove_tree(self._dir)
            os.close(self._lock)

    def __enter__(self) -> SandboxHandle:
        return self

    def __exit__(self, *_exc: object) -> None:
        self.close()
