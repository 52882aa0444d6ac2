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
        self._servers: list[tuple[str, subprocess.Popen[bytes]]] = []

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

    def start(self, cmd: Sequence[str], *, ports: Sequence[int | str] = (), timeout: float = 30.0,
              name: str | None = None) -> str:
        """Start ``cmd`` in the background — a server — in a sandbox of its own; returns its name.

        It gets this handle's image, environment and network (unless the
        handle names one: pasta where installed, else slirp4netns, so
        ``ports`` can be published) but not its writable layer.  ``ports``
        (container ports, ``"5353/udp"`` for UDP) are published on free ports
        of 127.0.0.1 (UDP through pasta keeps its number): see :meth:`port`.
        On a user-defined network, ``name`` (default: a unique one) is what
        the network's other sandboxes reach it by; :attr:`ip` is its address.
        It is stopped when the handle closes.
        """
        import sys
        import time

        from sandboxer.errors import UsageError
        from sandboxer.network import MODES, preferred_stack
        from sandboxer.state import running_record

        name = name or f"handle-server-{os.urandom(6).hex()}"
        network = self._options.get("network") or preferred_stack()
        ready = "ports" if ports else "network" if network.partition(":")[0] not in MODES else None
        argv = [sys.executable, "-m", "sandboxer", "run", "--name", name, "--network", network]
        for port in ports:
            argv += ["-p", f"127.0.0.1::{port}"]
        argv += [arg for e in self._env for arg in ("-e", e)]
        image = self._options.get("image")
        argv += [image, *cmd] if image else ["--", *cmd]
        proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                                stderr=subprocess.PIPE, preexec_fn=_die_with_parent)
        self._servers.append((name, proc))
        deadline = time.monotonic() + timeout
        while True:  # running once its state dir names it, its ports are published and it has its address
            try:  # (its state dir: the one our process made, not another sandbox's of that name)
                ours = (running_record(name, "lock") or "").strip() == str(proc.pid)
                if ours and (ready is None or running_record(name, ready) is not None):
                    return name
            except UsageError:
                pass
            if proc.poll() is not None:
                err = proc.stderr.read().decode(errors="replace").strip() if proc.stderr else ""
                raise RuntimeError(f"the background sandbox exited at once: {err.splitlines()[-1] if err else ''}")
            if time.monotonic() > deadline:
                raise TimeoutError(f"the background sandbox {name} did not start within {timeout}s")
            time.sleep(0.01)

    def port(self, container_port: int | str, name: str | None = None) -> int:
        """The host port (on 127.0.0.1) published for ``container_port`` of the latest (or named) server."""
        import json

        from sandboxer.state import running_record

        if not self._servers:
            raise RuntimeError("no server started: use sandbox.start(cmd, ports=[...]) first")
        server = name or self._servers[-1][0]
        wanted, _, proto = str(container_port).partition("/")
        for mapping in json.loads(running_record(server, "ports") or "[]"):
            if str(mapping["container_port"]) == wanted and mapping["proto"] == (proto or "tcp"):
                return int(mapping["host_port"])
        raise KeyError(f"{server} publishes no port {container_port}")

    @property
    def ip(self) -> str:
        """The address of the latest server (:meth:`start`) on its user-defined network."""
        return self.ip_of()

    def ip_of(self, name: str | None = None) -> str:
        """The address of the latest (or named) server on its user-defined network."""
        import json

        from sandboxer.state import running_record

        if not self._servers:
            raise RuntimeError("no server started: use sandbox.start(cmd) on a user-defined network first")
        server = name or self._servers[-1][0]
        record = running_record(server, "network")
        if record is None:
            raise RuntimeError(f"{server} is not on a user-defined network (network={self._options.get('network')!r})")
        return str(json.loads(record)["address"])

    def close(self) -> None:
        """Stop background servers; remove the writable layer and /tmp (files of any of the sandbox's users)."""
        for _, proc in self._servers:
            proc.kill()  # its sandbox dies with it: PDEATHSIG and the PID namespace
            proc.wait()
            if proc.stderr:
                proc.stderr.close()
        self._servers.clear()
        if not self.closed:
            from sandboxer.state import remove_tree

            self.closed = True
            remove_tree(self._dir)
            os.close(self._lock)

    def __enter__(self) -> SandboxHandle:
        return self

    def __exit__(self, *_exc: object) -> None:
        self.close()


def _die_with_parent() -> None:
    """In the forked child before exec: a SIGKILLed pytest takes its background sandboxes along."""
    import signal

    from sandboxer import syscalls

    syscalls.set_pdeathsig(signal.SIGKILL)
