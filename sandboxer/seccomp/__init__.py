"""Seccomp for sandboxer: OCI profiles compiled to classic BPF in pure Python.

The usual flow::

    profile = resolve(default_profile(), caps)   # plain OCI object, goes into config.json
    bpf = cached_bpf(profile)                     # before pivot_root: the cache is on the host
    ...
    syscalls.set_no_new_privs()                   # or hold CAP_SYS_ADMIN
    syscalls.seccomp_set_filter(bpf, filter_flags(profile))   # last step before exec

:func:`load` is ``cached_bpf`` + ``seccomp_set_filter`` in one call, for when
the cache directory is still reachable.  Compiled programs are cached on disk
because a hit (~0.1 ms) is about ten times cheaper than compiling the default
profile (~1 ms), which matters at every sandbox start.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from sandboxer import syscalls
from sandboxer.seccomp.compiler import COMPILER_VERSION, compile_bpf
from sandboxer.seccomp.profile import FLAGS, default_profile, load_profile, machine, resolve
from sandboxer.seccomp.syscall_tables import TABLES_ID

__all__ = [
    "cached_bpf", "compile_bpf", "default_profile", "filter_flags", "load", "load_profile",
    "resolve",
]

#: the OCI flag names are the kernel's constant names
_FLAG_BITS: dict[str, int] = {name: getattr(syscalls, name) for name in FLAGS}

# Cache entry: magic, sha256 of the program, the program.  The digest makes a
# torn or corrupted file detectable, so it is recompiled instead of loaded.
_MAGIC = b"sandboxer-seccomp-bpf-1\n"
_DIGEST_SIZE = 32


def load(profile: Mapping[str, Any], arch: str | None = None) -> None:
    """Compile ``profile`` (through the cache) and install it on this thread.

    The kernel requires no_new_privs or CAP_SYS_ADMIN; setting either is the
    caller's decision (OCI ``process.noNewPrivileges``).
    """
    syscalls.seccomp_set_filter(cached_bpf(profile, arch), filter_flags(profile))


def filter_flags(profile: Mapping[str, Any]) -> int:
    """The seccomp(2) flags bits for a validated profile's ``flags``."""
    return sum({_FLAG_BITS[name] for name in profile.get("flags", [])})


def cached_bpf(profile: Mapping[str, Any], arch: str | None = None) -> bytes:
    """:func:`compile_bpf`, with results kept under $XDG_CACHE_HOME/sandboxer/seccomp.

    The cache is an optimisation only: an unreadable, corrupt or unwritable
    entry means compiling again, never an error.
    """
    native = machine(arch)
    key = _cache_key(profile, native)
    directory = _cache_dir()
    if key is None or directory is None:
        return compile_bpf(profile, native)
    path = directory / f"{key}.bpf"
    bpf = _read_entry(path)
    if bpf is None:
        bpf = compile_bpf(profile, native)
        _write_entry(path, bpf)
    return bpf


def _cache_key(profile: Mapping[str, Any], native: str) -> str | None:
    """sha256 of everything the program depends on; None if ``profile`` is not JSON data."""
    try:
        text = json.dumps(profile, sort_keys=True, separators=(",", ":"))
    except (TypeError, ValueError):
        return None  # compile_bpf will explain what is wrong with it
    salt = f"\0{native}\0{COMPILER_VERSION}\0{TABLES_ID}"
    return hashlib.sha256((text + salt).encode()).hexdigest()


def _cache_dir() -> Path | None:
    base = os.environ.get("XDG_CACHE_HOME", "")
    if not os.path.isabs(base):  # the XDG spec says to ignore relative paths
        home = os.path.expanduser("~")
        if not os.path.isabs(home):
            return None
        base = os.path.join(home, ".cache")
    return Path(base, "sandboxer", "seccomp")


def _read_entry(path: Path) -> bytes | None:
    try:
        data = path.read_bytes()
    except OSError:
        return None
    body = data[len(_MAGIC):]
    digest, bpf = body[:_DIGEST_SIZE], body[_DIGEST_SIZE:]
    if not data.startswith(_MAGIC) or hashlib.sha256(bpf).digest() != digest or not bpf:
        return None
    return bpf


def _write_entry(path: Path, bpf: bytes) -> None:
    """Write atomically (temporary file + rename) so readers never see half an entry."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}.{os.urandom(4).hex()}")
    try:
        path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        with open(tmp, "xb") as f:
            f.write(_MAGIC + hashlib.sha256(bpf).digest() + bpf)
        os.replace(tmp, path)
    except OSError:  # best effort: an unwritable cache only costs speed
        with contextlib.suppress(OSError):
            tmp.unlink(missing_ok=True)
