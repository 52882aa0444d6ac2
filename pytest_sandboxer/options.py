"""The ``sandbox`` marker's keywords: merged, checked, turned into sandbox options.

Markers apply as pytest users expect: a test's own marker, then its class's,
then its module's (``pytestmark``), then the ini defaults — the nearest one
wins, keyword by keyword.  Every mistake (an unknown keyword, a wrong type,
a volume source or seccomp profile that does not exist, an unknown
capability or user) is found at collection time and named with the test and
the keyword; what only a sandbox's set-up can tell (a user of an image, a
malformed seccomp profile) fails the test, never skips it.
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

__all__ = ["MarkerError", "SandboxConfig", "KEYWORDS", "REQUIREMENTS", "from_markers"]

#: what ``require=[...]`` can ask for
REQUIREMENTS = ("userns", "pid", "mount", "network", "ipc", "uts", "seccomp", "no_new_privs", "cgroup")
#: ``seccomp=`` values that name no file
_SECCOMP_BUILTIN = ("default", "unconfined")
_SIZE = re.compile(r"^\d+(\.\d+)?\s*([kmgt]i?b?|b)?$", re.IGNORECASE)


class MarkerError(Exception):
    """A bad ``sandbox`` marker; the message names the keyword."""


def _str(value: object) -> bool:
    return isinstance(value, str)


def _hostname(value: object) -> bool:
    return isinstance(value, str) and len(value.encode()) <= 64  # the kernel's HOST_NAME_MAX


def _strings(value: object) -> bool:
    return isinstance(value, (list, tuple)) and all(isinstance(v, str) for v in value)


def _volumes(value: object) -> bool:
    return isinstance(value, (list, tuple)) and all(
        isinstance(v, str) or (isinstance(v, (list, tuple)) and len(v) in (2, 3)) for v in value)


def _env(value: object) -> bool:
    return isinstance(value, Mapping) and all(isinstance(k, str) and isinstance(v, str) for k, v in value.items())


def _number(value: object) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and value > 0


def _bool(value: object) -> bool:
    return isinstance(value, bool)


def _user(value: object) -> bool:
    return (isinstance(value, int) and not isinstance(value, bool) and value >= 0) or _str(value)


def _memory(value: object) -> bool:
    return (isinstance(value, int) and not isinstance(value, bool) and value > 0) or (
        isinstance(value, str) and bool(_SIZE.match(value.strip())))


def _cpus(value: object) -> bool:
    if isinstance(value, str):
        try:
            value = float(value)
        except ValueError:
            return False
    return _number(value)


def _pids(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value > 0


def _require(value: object) -> bool:
    return isinstance(value, (list, tuple)) and all(v in REQUIREMENTS for v in value)


def _seccomp(value: object) -> bool:
    return isinstance(value, str) and (value in _SECCOMP_BUILTIN or os.path.isfile(value))


def _accepted_by(module: str, parser: str, shape: Any = _str, *more: object) -> Any:
    """A keyword check: a value of the right ``shape`` that sandboxer's own ``module.parser(value, *more)``
    accepts (imported when used)."""

    def check(value: object) -> bool:
        import importlib

        from sandboxer.errors import UsageError

        if not shape(value):
            return False
        try:
            getattr(importlib.import_module(module), parser)(value, *more)
        except UsageError:
            return False
        return True

    return check


_network = _accepted_by("sandboxer.network", "parse_network")
_image = _accepted_by("sandboxer.images.reference", "parse_reference")
_capabilities = _accepted_by("sandboxer.sandbox", "capability_set", _strings, ())  # (cap_add, cap_drop)


#: keyword -> (check, what a valid value looks like)
KEYWORDS: dict[str, tuple[Any, str]] = {
    "network": (_network, '"none", "host", "pasta" or "slirp4netns" (either with ":allow_host_loopback=true"), '
                          "or the name of a network made with 'sandboxer network create'"),
    "volumes": (_volumes, 'a list of "SRC:DST[:ro|rw]" strings or (src, dst[, "ro"]) tuples'),
    "writable": (_strings, "a list of host paths"),
    "env": (_env, "a dict of str to str"),
    "hostname": (_hostname, "a string of at most 64 bytes"),
    "user": (_user, 'a uid, or "UID[:GID]" with numbers or names'),
    "timeout": (_number, "a positive number of seconds"),
    "read_only": (_bool, "True or False"),
    "cap_add": (_capabilities, 'a list of capability names, e.g. ["NET_ADMIN"] (see capabilities(7))'),
    "cap_drop": (_capabilities, 'a list of capability names, e.g. ["NET_RAW"] (see capabilities(7))'),
    "seccomp": (_seccomp, '"default", "unconfined" or the path of an existing profile'),
    "memory": (_memory, 'a size such as "256M" or a number of bytes'),
    "cpus": (_cpus, "a positive number of CPUs, e.g. 1.5"),
    "pids": (_pids, "a positive number of processes"),
    "require": (_require, f"a list drawn from {', '.join(REQUIREMENTS)}"),
    "image": (_image, "an image name from the store, e.g. \"sandboxer-test/busybox\""),
}


@dataclass
class SandboxConfig:
    """One test's sandbox, merged from its markers and the defaults."""

    network: str = "none"
    volumes: list[tuple[str, str, bool]] = field(default_factory=list)  # (source, destination, read-only)
    env: dict[str, str] = field(default_factory=dict)
    hostname: str | None = None
    user: str | None = None
    timeout: float | None = None
    read_only: bool = False
    cap_add: list[str] = field(default_factory=list)
    cap_drop: list[str] = field(default_factory=list)
    seccomp: str = "default"
    memory: str | int | None = None
    cpus: float | None = None
    pids: int | None = None
    require: list[str] = field(default_factory=list)
    image: str | None = None

    @property
    def limits(self) -> dict[str, object]:
        return {k: v for k, v in (("memory", self.memory), ("cpus", self.cpus), ("pids", self.pids))
                if v is not None}


def _parse_volume(spec: object) -> tuple[str, str, bool]:
    if isinstance(spec, str):
        parts = spec.split(":")
        if len(parts) == 2:
            parts.append("rw")
        if len(parts) != 3 or parts[2] not in ("ro", "rw"):
            raise MarkerError(f"volumes: invalid volume {spec!r} (use SRC:DST[:ro|rw])")
        src, dst, mode = parts
    else:
        items = list(spec)  # type: ignore[call-overload]
        src, dst, mode = items[0], items[1], items[2] if len(items) > 2 else "rw"
    src = os.path.abspath(str(src))
    if not os.path.exists(src):
        raise MarkerError(f"volumes: source {src} does not exist")
    if not str(dst).startswith("/"):
        raise MarkerError(f"volumes: destination {dst!r} is not absolute")
    return src, os.path.normpath(str(dst)), mode == "ro"


def merge(keyword_sets: Iterable[Mapping[str, object]]) -> dict[str, object]:
    """Merge keyword dicts given nearest first: the nearest value of each keyword wins."""
    merged: dict[str, object] = {}
    for kwargs in keyword_sets:
        for key, value in kwargs.items():
            merged.setdefault(key, value)
    return merged


def from_markers(keyword_sets: Sequence[Mapping[str, object]], defaults: Mapping[str, object]) -> SandboxConfig:
    """Check and merge the keywords (nearest first) over ``defaults`` (the ini/command line)."""
    merged = merge([*keyword_sets, defaults])
    for key, value in merged.items():
        if key not in KEYWORDS:
            raise MarkerError(f"unknown keyword {key!r} (known: {', '.join(sorted(KEYWORDS))})")
        check, expected = KEYWORDS[key]
        if value is not None and not check(value):
            raise MarkerError(f"{key}={value!r}: expected {expected}")
    config = SandboxConfig()
    for key, value in merged.items():
        if value is None:
            continue
        if key == "volumes":
            config.volumes.extend(_parse_volume(v) for v in value)  # type: ignore[attr-defined]
        elif key == "writable":
            for path in value:  # type: ignore[attr-defined]
                config.volumes.append(_parse_volume((path, path, "rw")))
        elif key == "user":
            config.user = str(value)
        elif key == "cpus":
            config.cpus = float(value)  # type: ignore[arg-type]
        elif key in ("cap_add", "cap_drop", "require"):
            setattr(config, key, list(value))  # type: ignore[call-overload]
        elif key == "env":
            config.env = dict(value)  # type: ignore[call-overload]
        elif key == "seccomp" and value not in _SECCOMP_BUILTIN:
            config.seccomp = os.path.abspath(str(value))  # a sandbox is planned elsewhere (the pool's cwd is /)
        else:
            setattr(config, key, value)
    if config.user is not None and config.image is None:
        _check_host_user(config.user)
    return config


def _check_host_user(user: str) -> None:
    """``user=`` names must exist on the host root (an image's own accounts are read when it runs)."""
    import grp
    import pwd

    name, _, group = user.partition(":")
    for kind, value, lookup, where in (("user", name, pwd.getpwnam, "/etc/passwd"),
                                       ("group", group, grp.getgrnam, "/etc/group")):
        if value and not value.isdecimal():
            try:
                lookup(value)
            except KeyError:
                raise MarkerError(f"user={user!r}: no {kind} {value!r} on this host "
                                  f"(use a numeric UID[:GID] or a name from {where})") from None
