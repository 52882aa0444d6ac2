"""Capabilities: cut every set to what the config grants, then switch user.

The order is runc's: drop the bounding set while still privileged, keep the
permitted set across the uid switch (``PR_SET_KEEPCAPS``), then set
effective/permitted/inheritable and finally the ambient set.
"""

from __future__ import annotations

import os

from .. import syscalls
from ..errors import SetupError

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Iterable

__all__ = ["CAPABILITIES", "DEFAULT_CAPS", "mask", "last_cap", "drop_bounding", "switch_user_and_set_caps"]

# Linux capability names in bit order: the index is the capability number.
_CAP_NAMES = (
    "CHOWN", "DAC_OVERRIDE", "DAC_READ_SEARCH", "FOWNER", "FSETID", "KILL",
    "SETGID", "SETUID", "SETPCAP", "LINUX_IMMUTABLE", "NET_BIND_SERVICE",
    "NET_BROADCAST", "NET_ADMIN", "NET_RAW", "IPC_LOCK", "IPC_OWNER",
    "SYS_MODULE", "SYS_RAWIO", "SYS_CHROOT", "SYS_PTRACE", "SYS_PACCT",
    "SYS_ADMIN", "SYS_BOOT", "SYS_NICE", "SYS_RESOURCE", "SYS_TIME",
    "SYS_TTY_CONFIG", "MKNOD", "LEASE", "AUDIT_WRITE", "AUDIT_CONTROL",
    "SETFCAP", "MAC_OVERRIDE", "MAC_ADMIN", "SYSLOG", "WAKE_ALARM",
    "BLOCK_SUSPEND", "AUDIT_READ", "PERFMON", "BPF", "CHECKPOINT_RESTORE",
)
#: capability name ("CAP_CHOWN") -> capability number (bit in the cap sets)
CAPABILITIES: dict[str, int] = {f"CAP_{n}": i for i, n in enumerate(_CAP_NAMES)}

#: Docker's default capability set, the one most images are written against
DEFAULT_CAPS: tuple[str, ...] = tuple(f"CAP_{n}" for n in (
    "CHOWN", "DAC_OVERRIDE", "FSETID", "FOWNER", "MKNOD", "NET_RAW", "SETGID",
    "SETUID", "SETFCAP", "SETPCAP", "NET_BIND_SERVICE", "SYS_CHROOT", "KILL",
    "AUDIT_WRITE",
))


def mask(names: Iterable[str]) -> int:
    """The bit mask of capability names (``CAP_CHOWN`` …)."""
    bits = 0
    for name in names:
        bits |= 1 << CAPABILITIES[name]
    return bits


def last_cap() -> int:
    try:
        with open("/proc/sys/kernel/cap_last_cap") as f:
            return int(f.read())
    except OSError:
        return 40


def drop_bounding(keep: int) -> None:
    """Remove from the bounding set every capability not in ``keep``."""
    for cap in range(last_cap() + 1):
        if not keep & (1 << cap):
            try:
                syscalls.cap_bound_drop(cap)
            except OSError as e:
                raise SetupError("drop capabilities", f"bounding set, cap {cap}: {e.strerror}") from e


def switch_user_and_set_caps(uid: int, gid: int, groups: list[int], *, effective: int,
                             permitted: int, inheritable: int, ambient: int,
                             set_groups: bool) -> None:
    """Become ``uid:gid`` and leave exactly the given capability sets."""
    try:
        syscalls.set_keepcaps(True)
        if set_groups:
            os.setgroups(groups)
        os.setresgid(gid, gid, gid)
        os.setresuid(uid, uid, uid)
        syscalls.set_keepcaps(False)
    except OSError as e:
        raise SetupError(f"switch to user {uid}:{gid}", e.strerror or str(e),
                         hint="the id must be mapped in the sandbox's user namespace") from e
    try:
        syscalls.capset(effective & permitted, permitted, inheritable)
        syscalls.cap_ambient_clear()
        for cap in range(64):
            if ambient & (1 << cap):
                syscalls.cap_ambient_raise(cap)
    except OSError as e:
        raise SetupError("set capabilities", e.strerror or str(e)) from e
