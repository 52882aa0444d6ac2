"""Read, validate and resolve seccomp profiles (OCI ``linux.seccomp`` objects).

Validation happens before compilation so that a bad profile fails with the
JSON path of the mistake (``linux.seccomp.syscalls[3].action: ...``) rather
than with a KeyError deep inside the compiler.  Unknown keys are ignored, as
the OCI spec requires of runtimes.

Docker-style profiles add per-entry ``includes``/``excludes`` filters and a
top-level ``archMap``; :func:`resolve` evaluates them for one capability set,
machine and kernel and returns the plain OCI object that goes into
config.json.  The compiler refuses unresolved profiles, because compiling
one would silently grant every conditional entry.
"""

from __future__ import annotations

import functools
import json
import os
import re
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any, NoReturn

from sandboxer.errors import ConfigError, HostError

__all__ = [
    "ACTIONS", "ARCHITECTURES", "FLAGS", "MACHINES", "OPERATORS",
    "default_profile", "load_profile", "machine", "resolve", "validate",
]

DEFAULT_PATH_PREFIX = "linux.seccomp"
DEFAULT_PROFILE_FILE = Path(__file__).resolve().parent.parent / "data" / "seccomp-default.json"

#: the SECCOMP_RET_* value of each action (ERRNO and TRACE add errnoRet)
ACTIONS: dict[str, int] = {
    "SCMP_ACT_KILL": 0x00000000,  # = KILL_THREAD, libseccomp's historic name
    "SCMP_ACT_KILL_THREAD": 0x00000000,
    "SCMP_ACT_KILL_PROCESS": 0x80000000,
    "SCMP_ACT_TRAP": 0x00030000,
    "SCMP_ACT_ERRNO": 0x00050000,
    "SCMP_ACT_TRACE": 0x7FF00000,
    "SCMP_ACT_LOG": 0x7FFC0000,
    "SCMP_ACT_ALLOW": 0x7FFF0000,
}
#: the largest errnoRet of the actions that take one (the kernel caps errnos at 4095)
ACTION_DATA_MAX = {"SCMP_ACT_ERRNO": 4095, "SCMP_ACT_TRACE": 0xFFFF}
EPERM = 1

OPERATORS = frozenset({
    "SCMP_CMP_NE", "SCMP_CMP_LT", "SCMP_CMP_LE", "SCMP_CMP_EQ",
    "SCMP_CMP_GE", "SCMP_CMP_GT", "SCMP_CMP_MASKED_EQ",
})
ARCHITECTURES = frozenset({
    "SCMP_ARCH_X86", "SCMP_ARCH_X86_64", "SCMP_ARCH_X32", "SCMP_ARCH_ARM",
    "SCMP_ARCH_AARCH64", "SCMP_ARCH_MIPS", "SCMP_ARCH_MIPS64", "SCMP_ARCH_MIPS64N32",
    "SCMP_ARCH_MIPSEL", "SCMP_ARCH_MIPSEL64", "SCMP_ARCH_MIPSEL64N32", "SCMP_ARCH_PPC",
    "SCMP_ARCH_PPC64", "SCMP_ARCH_PPC64LE", "SCMP_ARCH_S390", "SCMP_ARCH_S390X",
    "SCMP_ARCH_PARISC", "SCMP_ARCH_PARISC64", "SCMP_ARCH_RISCV64",
})
#: OCI flag names; they are also the constant names in sandboxer.syscalls
FLAGS = frozenset({
    "SECCOMP_FILTER_FLAG_TSYNC", "SECCOMP_FILTER_FLAG_LOG", "SECCOMP_FILTER_FLAG_SPEC_ALLOW",
})
_UNSUPPORTED = {
    "SCMP_ACT_NOTIFY": "user-space notification (seccomp agents) is not implemented",
    "SECCOMP_FILTER_FLAG_WAIT_KILLABLE_RECV": "it only applies to SCMP_ACT_NOTIFY, which is not implemented",
}

#: machine name -> its native libseccomp architecture; MACHINE_ALIASES maps Go/Docker names
MACHINES = {"x86_64": "SCMP_ARCH_X86_64", "aarch64": "SCMP_ARCH_AARCH64"}
MACHINE_ALIASES = {"x86_64": "x86_64", "amd64": "x86_64", "aarch64": "aarch64", "arm64": "aarch64"}

_U64_MAX = (1 << 64) - 1
_DOCKER_KEYS = ("includes", "excludes")
_VERSION = re.compile(r"(\d+)(?:\.(\d+))?(?:\.(\d+))?")


# --- public API --------------------------------------------------------------

def machine(arch: str | None = None) -> str:
    """The canonical machine name (``x86_64``/``aarch64``) for ``arch``, default this host's."""
    name = arch or os.uname().machine
    if name not in MACHINE_ALIASES:
        raise HostError(f"seccomp: no syscall table for architecture {name!r}",
                        hint="supported: " + ", ".join(MACHINES))
    return MACHINE_ALIASES[name]


def load_profile(path_or_data: str | os.PathLike[str] | dict[str, Any], *,
                 path_prefix: str = DEFAULT_PATH_PREFIX) -> dict[str, Any]:
    """Parse (if a path) and validate an OCI or Docker-style profile; return the dict.

    Docker's ``includes``/``excludes``/``archMap`` are checked and kept, for :func:`resolve`.
    """
    if isinstance(path_or_data, dict):
        data: object = path_or_data
    else:
        data = _read_json(Path(path_or_data), path_prefix)
    return validate(data, path_prefix, docker=True)


def default_profile() -> dict[str, Any]:
    """A fresh copy of the shipped Docker-equivalent profile; :func:`resolve` it before compiling."""
    fresh: dict[str, Any] = _clone(_default_profile())
    return fresh


def resolve(profile: Mapping[str, Any], caps: Iterable[str], arch: str | None = None, *,
            kernel: str | None = None, path_prefix: str = DEFAULT_PATH_PREFIX) -> dict[str, Any]:
    """Apply Docker ``includes``/``excludes``/``archMap`` for ``caps``, ``arch`` and ``kernel``.

    ``caps`` are capability names (``CAP_SYS_ADMIN``; the prefix may be left
    out); ``kernel`` is a release string, default the running kernel's.  The
    result is a new plain OCI object sharing nothing with ``profile``.
    """
    validate(profile, path_prefix, docker=True)
    native = machine(arch)
    have = {_cap_name(c) for c in caps}
    release = _version(kernel or os.uname().release)
    out = {k: _clone(v) for k, v in profile.items() if k not in ("archMap", "syscalls")}
    if "archMap" in profile:
        out["architectures"] = _arches_for(profile["archMap"], native)
    if "syscalls" in profile:
        out["syscalls"] = [_clone({k: v for k, v in entry.items() if k not in _DOCKER_KEYS})
                           for entry in profile["syscalls"]
                           if _applies(entry, have, native, release)]
    return out


def validate(profile: object, path_prefix: str = DEFAULT_PATH_PREFIX, *,
             docker: bool = False) -> dict[str, Any]:
    """Check ``profile`` against the OCI schema; raise ConfigError naming the bad path.

    With ``docker=False`` the Docker-only keys are refused: they must have
    been resolved away before compiling.
    """
    p = path_prefix
    obj = _object(profile, p)
    default = _action(obj.get("defaultAction"), f"{p}.defaultAction")
    _errno_ret(obj, "defaultErrnoRet", default, p)
    if "architectures" in obj:
        _enum_list(obj["architectures"], f"{p}.architectures", ARCHITECTURES, "architecture")
    if "flags" in obj:
        _enum_list(obj["flags"], f"{p}.flags", FLAGS, "flag")
    if "listenerPath" in obj:
        _string(obj["listenerPath"], f"{p}.listenerPath")
    if "listenerMetadata" in obj and "listenerPath" not in obj:
        _fail(f"{p}.listenerMetadata", "must not be set without listenerPath")
    if "archMap" in obj:
        _docker_only(docker, f"{p}.archMap")
        if "architectures" in obj:
            _fail(f"{p}.archMap", "cannot be combined with architectures")
        _arch_map(obj["archMap"], f"{p}.archMap")
    for i, entry in enumerate(_array(obj.get("syscalls", []), f"{p}.syscalls")):
        _syscall(entry, f"{p}.syscalls[{i}]", docker)
    return obj


# --- validation helpers ------------------------------------------------------

def _fail(path: str, message: str, hint: str | None = None) -> NoReturn:
    raise ConfigError(path, message, hint)


def _show(value: object) -> str:
    return json.dumps(value) if isinstance(value, str | int | float | bool | None) else type(value).__name__


def _object(value: object, path: str) -> dict[str, Any]:
    if not isinstance(value, dict):
        _fail(path, f"must be an object, not {_show(value)}")
    return value


def _array(value: object, path: str) -> list[Any]:
    if not isinstance(value, list):
        _fail(path, f"must be an array, not {_show(value)}")
    return value


def _string(value: object, path: str) -> str:
    if not isinstance(value, str) or not value:
        _fail(path, f"must be a non-empty string, not {_show(value)}")
    return value


def _uint(value: object, path: str, maximum: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= maximum:
        _fail(path, f"must be an integer from 0 to {maximum}, not {_show(value)}")
    return value


def _enum(value: object, path: str, allowed: Iterable[str], what: str) -> str:
    name = _string(value, path)
    if name in _UNSUPPORTED:
        _fail(path, f"{what} {_show(name)} is unsupported: {_UNSUPPORTED[name]}")
    if name not in allowed:
        _fail(path, f"unknown {what} {_show(name)}", hint="valid: " + ", ".join(sorted(allowed)))
    return name


def _enum_list(value: object, path: str, allowed: Iterable[str], what: str) -> None:
    for i, item in enumerate(_array(value, path)):
        _enum(item, f"{path}[{i}]", allowed, what)


def _action(value: object, path: str) -> str:
    if value is None:
        _fail(path, "is required")
    return _enum(value, path, ACTIONS, "action")


def _errno_ret(obj: dict[str, Any], key: str, action: str, path: str) -> None:
    if key not in obj:
        return
    if action not in ACTION_DATA_MAX:
        _fail(f"{path}.{key}", f"is only valid with SCMP_ACT_ERRNO or SCMP_ACT_TRACE, not {action}")
    _uint(obj[key], f"{path}.{key}", ACTION_DATA_MAX[action])


def _docker_only(docker: bool, path: str) -> None:
    if not docker:
        _fail(path, "Docker-style filter in a plain OCI profile",
              hint="call sandboxer.seccomp.resolve(profile, caps) first")


def _arch_map(value: object, path: str) -> None:
    for i, item in enumerate(_array(value, path)):
        obj = _object(item, f"{path}[{i}]")
        _enum(obj.get("architecture"), f"{path}[{i}].architecture", ARCHITECTURES, "architecture")
        _enum_list(obj.get("subArchitectures", []), f"{path}[{i}].subArchitectures",
                   ARCHITECTURES, "architecture")


def _syscall(value: object, path: str, docker: bool) -> None:
    entry = _object(value, path)
    if "names" not in entry:
        _fail(f"{path}.names", "is required", hint='give a list: "names": ["read", ...]')
    names = _array(entry["names"], f"{path}.names")
    if not names:
        _fail(f"{path}.names", "must contain at least one name")
    for i, name in enumerate(names):
        _string(name, f"{path}.names[{i}]")
    action = _action(entry.get("action"), f"{path}.action")
    _errno_ret(entry, "errnoRet", action, path)
    for i, arg in enumerate(_array(entry.get("args", []), f"{path}.args")):
        _arg(arg, f"{path}.args[{i}]")
    for key in _DOCKER_KEYS:
        if key in entry:
            _docker_only(docker, f"{path}.{key}")
            _filter(entry[key], f"{path}.{key}")


def _arg(value: object, path: str) -> None:
    arg = _object(value, path)
    for key, maximum, required in (("index", 5, True), ("value", _U64_MAX, True),
                                   ("valueTwo", _U64_MAX, False)):
        if key in arg or required:
            _uint(arg.get(key), f"{path}.{key}", maximum)
    _enum(arg.get("op"), f"{path}.op", OPERATORS, "operator")


def _filter(value: object, path: str) -> None:
    obj = _object(value, path)
    for key in ("caps", "arches"):
        for i, item in enumerate(_array(obj.get(key, []), f"{path}.{key}")):
            _string(item, f"{path}.{key}[{i}]")
    if "minKernel" in obj and not _VERSION.fullmatch(_string(obj["minKernel"], f"{path}.minKernel")):
        _fail(f"{path}.minKernel", f'must be a version like "4.8", not {_show(obj["minKernel"])}')


# --- resolution --------------------------------------------------------------

def _cap_name(cap: str) -> str:
    cap = cap.upper()
    return cap if cap.startswith("CAP_") else f"CAP_{cap}"


def _version(release: str) -> tuple[int, ...]:
    """Leading numeric part of a kernel release ("6.1.0-13-amd64" -> (6, 1, 0))."""
    m = _VERSION.match(release)
    return tuple(int(g) for g in m.groups() if g is not None) if m else (0,)


def _arches_for(arch_map: list[dict[str, Any]], native: str) -> list[str]:
    for item in arch_map:
        if item["architecture"] == MACHINES[native]:
            return [item["architecture"], *item.get("subArchitectures", [])]
    return []


def _machines(names: Iterable[str]) -> set[str]:
    return {MACHINE_ALIASES.get(n, n) for n in names}


def _applies(entry: Mapping[str, Any], caps: set[str], native: str,
             kernel: tuple[int, ...]) -> bool:
    """Docker's rule: any matching exclude drops the entry; every include must match."""
    exc = entry.get("excludes", {})
    inc = entry.get("includes", {})
    excluded = (native in _machines(exc.get("arches", []))
                or any(_cap_name(c) in caps for c in exc.get("caps", []))
                or ("minKernel" in exc and kernel >= _version(exc["minKernel"])))
    included = ((not inc.get("arches") or native in _machines(inc["arches"]))
                and all(_cap_name(c) in caps for c in inc.get("caps", []))
                and ("minKernel" not in inc or kernel >= _version(inc["minKernel"])))
    return included and not excluded


# --- reading -----------------------------------------------------------------

def _clone(value: Any) -> Any:
    """Deep copy of JSON data, several times faster than copy.deepcopy."""
    if isinstance(value, dict):
        return {k: _clone(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_clone(v) for v in value]
    return value


def _read_json(path: Path, path_prefix: str) -> object:
    try:
        return json.loads(path.read_bytes())
    except OSError as err:
        _fail(path_prefix, f"cannot read seccomp profile {path}: {err.strerror}")
    except ValueError as err:  # JSONDecodeError, or bad UTF-8
        _fail(path_prefix, f"seccomp profile {path} is not valid JSON: {err}",
              hint='fix it where the error says; a profile is one JSON object, '
                   'e.g. {"defaultAction": "SCMP_ACT_ERRNO", "syscalls": [...]}')


@functools.cache
def _default_profile() -> dict[str, Any]:
    return load_profile(DEFAULT_PROFILE_FILE, path_prefix=f"{DEFAULT_PROFILE_FILE.name}")
