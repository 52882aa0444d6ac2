"""Compiled programs cached on disk, and installing them.

Two ways in:

* :func:`default_bpf` is the fast path every ``sandboxer run`` takes: the
  shipped default profile resolved for a capability set.  Its cache key is
  built from the *identity* of the files the program depends on (the
  profile, the compiler, the tables: their mtime and size), the caps, the
  machine, the kernel release and the package version, so a hit reads one
  small file and needs neither the JSON parser nor the compiler.  This
  module imports only ``os`` and ``zlib`` at import time and nothing else
  on a hit; keep it that way (``tests/test_seccomp.py`` checks).
* :func:`cached_bpf` takes any plain OCI profile, keyed by its content
  (sha256 of its canonical JSON); it is the general path for custom profiles.

Entry format (both)::

    sandboxer-seccomp-bpf-2\\n
    <len(key)> <flags> <len(program)> <crc32(key + program)>\\n
    key program

The full key is stored and compared, so a file-name collision is a miss,
never a wrong program; the checksum makes a torn or corrupted file a miss
too.  The cache is an optimisation only: an unreadable, corrupt or
unwritable entry means compiling again, never an error.
"""

from __future__ import annotations

import os
import zlib

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Callable, Iterable, Mapping
    from typing import Any

__all__ = ["cached_bpf", "default_bpf", "filter_flags", "load"]

_MAGIC = b"sandboxer-seccomp-bpf-2"
_HERE = os.path.dirname(os.path.abspath(__file__))
#: what a compiled default program depends on besides its arguments ("..", not
#: normpath: the kernel resolves it after symlinks, as profile.py's Path.resolve does)
_SOURCES: tuple[str, ...] = (
    os.path.join(_HERE, "..", "data", "seccomp-default.json"),
    os.path.join(_HERE, "compiler.py"),
    os.path.join(_HERE, "profile.py"),
    os.path.join(_HERE, "syscall_tables.py"),
    os.path.join(_HERE, "cache.py"),
)


# --- public API --------------------------------------------------------------

def default_bpf(caps: Iterable[str], arch: str | None = None) -> tuple[bytes, int]:
    """``(program, seccomp flags)`` of ``resolve(default_profile(), caps, arch)``, cached.

    ``caps`` are capability names as :func:`~sandboxer.seccomp.resolve` takes
    them (``CAP_SYS_ADMIN`` or ``sys_admin``); ``arch`` defaults to this
    machine.  A hit costs a few stat calls and one small read.
    """
    have = sorted({_cap_name(c) for c in caps})
    uname = os.uname()
    native = arch or uname.machine
    stamps = _source_stamps()
    directory = _cache_dir()
    if stamps is None or directory is None:
        return _compile_default(have, native, uname.release)
    key = _default_key(stamps, have, native, uname.release)
    name = f"default-{zlib.crc32(key):08x}{zlib.adler32(key):08x}.bpf"
    return _cached(directory, name, key, lambda: _compile_default(have, native, uname.release))


def cached_bpf(profile: Mapping[str, Any], arch: str | None = None) -> bytes:
    """:func:`~sandboxer.seccomp.compile_bpf`, with results kept under $XDG_CACHE_HOME/sandboxer/seccomp.

    Compiling says on stderr which syscall names it skipped (unknown to the
    ABIs filtered): once, since the next call with this profile is a hit.
    """
    from sandboxer.seccomp import compiler
    from sandboxer.seccomp.profile import machine

    native = machine(arch)

    def build() -> tuple[bytes, int]:
        bpf = compiler.compile_bpf(profile, native)
        _say_unknown(compiler.unknown_names(profile, native), native)  # valid now: compile_bpf validated it
        return bpf, filter_flags(profile)

    key = _profile_key(profile, native)
    directory = _cache_dir()
    if key is None or directory is None:
        return build()[0]
    return _cached(directory, f"{key}.bpf", key.encode(), build)[0]


def load(profile: Mapping[str, Any], arch: str | None = None) -> None:
    """Compile ``profile`` (through the cache) and install it on this thread.

    The kernel requires no_new_privs or CAP_SYS_ADMIN; setting either is the
    caller's decision (OCI ``process.noNewPrivileges``).
    """
    from sandboxer import syscalls

    syscalls.seccomp_set_filter(cached_bpf(profile, arch), filter_flags(profile))


def filter_flags(profile: Mapping[str, Any]) -> int:
    """The seccomp(2) flags bits for a validated profile's ``flags``."""
    from sandboxer import syscalls
    from sandboxer.seccomp.profile import FLAGS

    # the OCI flag names are the kernel's constant names
    bits = {name: getattr(syscalls, name) for name in FLAGS}
    return sum({bits[name] for name in profile.get("flags", [])})


# --- keys ---------------------------------------------------------------------

def _cap_name(cap: str) -> str:
    """As profile._cap_name, which resolve applies: so equal keys mean equal resolutions."""
    cap = cap.upper()
    return cap if cap.startswith("CAP_") else f"CAP_{cap}"


def _source_stamps() -> list[tuple[int, int]] | None:
    """(mtime_ns, size) of each of _SOURCES; None if one cannot be stat'ed."""
    try:
        return [(st.st_mtime_ns, st.st_size) for st in map(os.stat, _SOURCES)]
    except OSError:
        return None


def _default_key(stamps: Iterable[tuple[int, int]], caps: Iterable[str], native: str,
                 release: str) -> bytes:
    """Everything a compiled default program depends on, as bytes (stored whole in the entry)."""
    from sandboxer import __version__

    files = " ".join(f"{mtime}:{size}" for mtime, size in stamps)
    text = "\0".join(("default", __version__, _HERE, files, native, release, ",".join(caps)))
    return text.encode("utf-8", "surrogateescape")


def _profile_key(profile: Mapping[str, Any], native: str) -> str | None:
    """sha256 of everything the program depends on; None if ``profile`` is not JSON data."""
    import hashlib
    import json

    from sandboxer.seccomp.compiler import COMPILER_VERSION
    from sandboxer.seccomp.syscall_tables import TABLES_ID

    try:
        text = json.dumps(profile, sort_keys=True, separators=(",", ":"))
    except (TypeError, ValueError):
        return None  # compile_bpf will explain what is wrong with it
    salt = f"\0{native}\0{COMPILER_VERSION}\0{TABLES_ID}"
    return hashlib.sha256((text + salt).encode()).hexdigest()


# --- compiling ----------------------------------------------------------------

def _say_unknown(names: list[str], native: str, shown: int = 8) -> None:
    """One notice for all the names of a profile that no table here has: a typo, another arch's, a newer kernel's."""
    if not names:
        return
    import sys

    more = f" and {len(names) - shown} more" if len(names) > shown else ""
    print(f"sandboxer: notice: seccomp profile: ignoring syscall names unknown on {native}: "
          f"{', '.join(names[:shown])}{more}", file=sys.stderr)


def _compile_default(caps: list[str], native: str, release: str) -> tuple[bytes, int]:
    """The full path: parse the shipped profile, resolve it, compile it."""
    from sandboxer.seccomp import compiler, profile

    resolved = profile.resolve(profile.default_profile(), caps, native, kernel=release)
    return compiler.compile_bpf(resolved, native), filter_flags(resolved)


# --- entries ------------------------------------------------------------------

def _cache_dir() -> str | None:
    base = os.environ.get("XDG_CACHE_HOME", "")
    if not os.path.isabs(base):  # the XDG spec says to ignore relative paths
        home = os.path.expanduser("~")
        if not os.path.isabs(home):
            return None
        base = os.path.join(home, ".cache")
    return os.path.join(base, "sandboxer", "seccomp")


def _cached(directory: str, name: str, key: bytes,
            build: Callable[[], tuple[bytes, int]]) -> tuple[bytes, int]:
    path = os.path.join(directory, name)
    hit = _read_entry(path, key)
    if hit is not None:
        return hit
    bpf, flags = build()
    _write_entry(path, key, bpf, flags)
    return bpf, flags


def _read_entry(path: str, key: bytes) -> tuple[bytes, int] | None:
    """The entry's (program, flags) if it is intact and for ``key``, else None."""
    try:
        with open(path, "rb") as f:
            data = f.read()
    except OSError:
        return None
    parts = data.split(b"\n", 2)
    if len(parts) != 3 or parts[0] != _MAGIC:
        return None
    try:
        key_size, flags, bpf_size, crc = map(int, parts[1].split(b" "))
    except ValueError:  # also a wrong number of fields
        return None
    body = parts[2]
    if (key_size != len(key) or len(body) != key_size + bpf_size or bpf_size <= 0 or bpf_size % 8
            or zlib.crc32(body) != crc or body[:key_size] != key):
        return None
    return body[key_size:], flags


def _write_entry(path: str, key: bytes, bpf: bytes, flags: int) -> None:
    """Write atomically (temporary file + rename) so readers never see half an entry."""
    body = key + bpf
    header = f"{len(key)} {flags} {len(bpf)} {zlib.crc32(body)}\n".encode()
    directory, name = os.path.split(path)
    tmp = os.path.join(directory, f".{name}.{os.getpid()}.{os.urandom(4).hex()}")
    try:
        os.makedirs(directory, mode=0o700, exist_ok=True)
        with open(tmp, "xb") as f:
            f.write(_MAGIC + b"\n" + header + body)
        os.replace(tmp, path)
    except OSError:  # best effort: an unwritable cache only costs speed
        try:
            os.unlink(tmp)
        except OSError:
            pass
