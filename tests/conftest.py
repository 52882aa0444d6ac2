"""Shared helpers: run the real ``sandboxer`` command the way a user does."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path

import pytest

_BIN = os.path.join(os.path.dirname(sys.executable), "sandboxer")
SANDBOXER = [_BIN] if os.path.exists(_BIN) else [sys.executable, "-m", "sandboxer"]


def sandboxer(*args: str, input: str | None = None, timeout: float = 60,
              env: dict[str, str] | None = None, check: bool = False) -> subprocess.CompletedProcess[str]:
    """Run ``sandboxer ARGS`` and capture its output as text."""
    proc = subprocess.run([*SANDBOXER, *args], input=input, capture_output=True, text=True,
                          timeout=timeout, env=env, stdin=None if input is not None else subprocess.DEVNULL)
    if check and proc.returncode != 0:
        raise AssertionError(f"sandboxer {' '.join(args)} exited {proc.returncode}:\n{proc.stderr}")
    return proc


def sh(script: str, *opts: str, **kw: object) -> subprocess.CompletedProcess[str]:
    """``sandboxer run OPTS -- sh -c SCRIPT``."""
    return sandboxer("run", *opts, "--", "sh", "-c", script, **kw)  # type: ignore[arg-type]


def has_subids() -> bool:
    from sandboxer.runtime.userns import default_idmap

    return not default_idmap().single


needs_subids = pytest.mark.skipif(not has_subids() and os.getuid() != 0,
                                  reason="this user has no /etc/subuid range")
unprivileged = pytest.mark.skipif(os.getuid() == 0, reason="proves rootless behaviour; run as a normal user")


def state_entries() -> Sequence[str]:
    from sandboxer.state import state_root

    return [e for e in os.listdir(state_root()) if len(e) == 64]


@pytest.fixture
def home_tmp() -> object:
    """A scratch directory under $HOME: the sandbox masks the host's /tmp."""
    base = os.path.join(os.path.expanduser("~"), ".sandboxer-test")
    os.makedirs(base, exist_ok=True)
    path = os.path.join(base, f"t{os.getpid()}-{os.urandom(4).hex()}")
    os.mkdir(path)
    yield path
    shutil.rmtree(path, ignore_errors=True)


@contextmanager
def busybox_store(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """A private image store (SANDBOXER_DATA_DIR=<root>/data) holding sandboxer-test/busybox,
    built offline by images/busybox.py and imported; <root>/busybox.tar stays for tests to reuse."""
    root = tmp_path_factory.mktemp("store")
    tarball = root / "busybox.tar"
    recipe = Path(__file__).resolve().parent.parent / "images" / "busybox.py"
    subprocess.run([sys.executable, str(recipe), str(tarball)], check=True)
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("SANDBOXER_DATA_DIR", str(root / "data"))
        sandboxer("import", str(tarball), "sandboxer-test/busybox", check=True)
        yield root
