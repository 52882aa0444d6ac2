"""Start Debian's docker-registry (the CNCF distribution server) on 127.0.0.1, for tests and benchmarks.

Plain HTTP on a free port, storage in a directory of the caller's, optional
htpasswd basic auth.  Nothing here talks to anything but loopback.
"""

from __future__ import annotations

import json
import shutil
import socket
import subprocess
import time
from pathlib import Path

__all__ = ["REGISTRY", "free_port", "start_registry"]

REGISTRY = shutil.which("docker-registry") or "/usr/bin/docker-registry"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def start_registry(root: Path, htpasswd: Path | None = None,
                   timeout: float = 20.0) -> tuple[subprocess.Popen[bytes], str]:
    """(the server process, "127.0.0.1:PORT"); the caller kills the process."""
    root.mkdir(parents=True, exist_ok=True)
    port = free_port()
    config: dict[str, object] = {
        "version": 0.1, "log": {"level": "warn"},
        "storage": {"filesystem": {"rootdirectory": str(root / "data")}, "delete": {"enabled": True}},
        "http": {"addr": f"127.0.0.1:{port}"},
    }
    if htpasswd is not None:
        config["auth"] = {"htpasswd": {"realm": "test", "path": str(htpasswd)}}
    (root / "config.json").write_text(json.dumps(config))  # YAML is a superset of JSON
    proc = subprocess.Popen([REGISTRY, "serve", str(root / "config.json")], stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + timeout
    while True:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.2):
                return proc, f"127.0.0.1:{port}"
        except OSError:
            if time.monotonic() > deadline or proc.poll() is not None:
                proc.kill()
                raise RuntimeError(f"docker-registry did not start on 127.0.0.1:{port}") from None
            time.sleep(0.05)
