"""The sandbox's mount table: the config's mounts, /dev, masks, pivot_root.

Runs in the sandbox's PID 1 before it execs (a fresh ``/proc`` must be
mounted from inside the new PID namespace).  Every destination is resolved
inside the new root with symlinks confined to it, so a hostile rootfs
cannot redirect a mount onto the host.
"""

from __future__ import annotations

import errno
import os
import stat

from .. import syscalls as sc
from ..errors import SetupError
from ..records import record
from ..symlinks import follow_links

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Iterable

__all__ = [
    "MASKED_PATHS", "READONLY_PATHS", "MountSpec", "parse_options", "secure_join", "mount_all", "setup_dev",
    "mask_paths", "readonly_paths", "pivot_into", "DEFAULT_DEVICES", "PROPAGATION", "add_devices",
    "write_sysctls",
]

#: kernel interfaces hidden from the sandbox: they leak host details or poke hardware
MASKED_PATHS: tuple[str, ...] = (
    "/proc/acpi", "/proc/asound", "/proc/kcore", "/proc/keys",
    "/proc/latency_stats", "/proc/timer_list", "/proc/timer_stats",
    "/proc/sched_debug", "/sys/firmware", "/proc/scsi",
    "/sys/devices/virtual/powercap",
)
#: kernel interfaces the sandbox may read but not change
READONLY_PATHS: tuple[str, ...] = (
    "/proc/bus", "/proc/fs", "/proc/irq", "/proc/sys", "/proc/sysrq-trigger",
)

#: device nodes bound from the host into a tmpfs /dev (rootless cannot mknod)
DEFAULT_DEVICES = ("null", "zero", "full", "random", "urandom", "tty")

_DEV_LINKS = (("fd", "/proc/self/fd"), ("stdin", "/proc/self/fd/0"),
              ("stdout", "/proc/self/fd/1"), ("stderr", "/proc/self/fd/2"),
              ("ptmx", "pts/ptmx"), ("core", "/proc/kcore"))

# option -> (set flags, clear flags)
_FLAG_OPTIONS: dict[str, tuple[int, int]] = {
    "ro": (sc.MS_RDONLY, 0), "rw": (0, sc.MS_RDONLY),
    "nosuid": (sc.MS_NOSUID, 0), "suid": (0, sc.MS_NOSUID),
    "nodev": (sc.MS_NODEV, 0), "dev": (0, sc.MS_NODEV),
    "noexec": (sc.MS_NOEXEC, 0), "exec": (0, sc.MS_NOEXEC),
    "sync": (sc.MS_SYNCHRONOUS, 0), "async": (0, sc.MS_SYNCHRONOUS),
    "dirsync": (sc.MS_DIRSYNC, 0), "remount": (sc.MS_REMOUNT, 0),
    "mand": (sc.MS_MANDLOCK, 0), "nomand": (0, sc.MS_MANDLOCK),
    "atime": (0, sc.MS_NOATIME), "noatime": (sc.MS_NOATIME, 0),
    "diratime": (0, sc.MS_NODIRATIME), "nodiratime": (sc.MS_NODIRATIME, 0),
    "relatime": (sc.MS_RELATIME, 0), "norelatime": (0, sc.MS_RELATIME),
    "strictatime": (sc.MS_STRICTATIME, 0), "nostrictatime": (0, sc.MS_STRICTATIME),
    "bind": (sc.MS_BIND, 0), "rbind": (sc.MS_BIND | sc.MS_REC, 0),
}
PROPAGATION = {
    "private": sc.MS_PRIVATE, "rprivate": sc.MS_PRIVATE | sc.MS_REC,
    "slave": sc.MS_SLAVE, "rslave": sc.MS_SLAVE | sc.MS_REC,
    "shared": sc.MS_SHARED, "rshared": sc.MS_SHARED | sc.MS_REC,
    "unbindable": sc.MS_UNBINDABLE, "runbindable": sc.MS_UNBINDABLE | sc.MS_REC,
}
# statfs ST_* bits that a bind remount inside a user namespace must keep
_LOCKED_ST = ((1, sc.MS_RDONLY), (2, sc.MS_NOSUID), (4, sc.MS_NODEV), (8, sc.MS_NOEXEC),
              (1024, sc.MS_NOATIME), (2048, sc.MS_NODIRATIME), (4096, sc.MS_RELATIME))


class MountSpec(record("MountSpec", "destination source fstype flags propagation data recursive_ro",
                       defaults=(False,))):
    """One mount, parsed: what the kernel is asked for.

    (Records on the ``run`` path are named tuples: importing dataclasses
    alone costs ~15 ms of a ~20 ms start-up budget.)
    """

    destination: str
    source: str | None
    fstype: str | None
    flags: int
    propagation: int
    data: str
    recursive_ro: bool

    __slots__ = ()

    @property
    def is_bind(self) -> bool:
        return bool(self.flags & sc.MS_BIND)


def parse_options(destination: str, source: str | None, fstype: str | None,
                  options: Iterable[str]) -> MountSpec:
    """Split mount options into flags, propagation and filesystem data."""
    flags, propagation, data, rro = 0, 0, [], False
    for opt in options:
        if opt in _FLAG_OPTIONS:
            on, off = _FLAG_OPTIONS[opt]
            flags = (flags | on) & ~off
        elif opt in PROPAGATION:
            propagation |= PROPAGATION[opt]
        elif opt == "rro":
            flags |= sc.MS_RDONLY
            rro = True
        else:
            data.append(opt)
    if fstype == "bind":
        flags |= sc.MS_BIND
        fstype = None
    return MountSpec(destination, source, fstype, flags, propagation, ",".join(data), rro)


def secure_join(root: str, path: str) -> str:
    """``root/path`` with every symlink resolved as if ``root`` were ``/``.

    A link that climbs out with ``..`` or points at an absolute path stays
    inside ``root``; missing components are kept as they are (to be created).
    """
    def link_at(done: list[str], part: str, _last: bool) -> str | None:
        try:
            return os.readlink(os.path.join(root, *done, part))
        except OSError:  # no link (or nothing) there: kept as it is
            return None

    resolved = follow_links(path, link_at, lambda: OSError(errno.ELOOP, f"too many symlinks under {path}", path))
    return os.path.join(root, *resolved)


def _ensure_target(target: str, as_file: bool) -> None:
    """Create a mount point (a directory, or an empty file for file binds)."""
    if os.path.lexists(target):
        return
    os.makedirs(os.path.dirname(target), exist_ok=True)
    if as_file:
        os.close(os.open(target, os.O_CREAT | os.O_WRONLY | os.O_CLOEXEC, 0o644))
    else:
        os.mkdir(target, 0o755)


def _locked_flags(path: str) -> int:
    st_flags = sc.statfs_flags(path)
    return sum(ms for st, ms in _LOCKED_ST if st_flags & st)


def remount_readonly(target: str, extra: int = 0) -> None:
    """Bind-remount ``target`` read-only, keeping the flags the kernel locked."""
    flags = sc.MS_BIND | sc.MS_REMOUNT | sc.MS_RDONLY | _locked_flags(target) | extra
    sc.mount(None, target, None, flags & ~sc.MS_REC)


def mount_one(root: str, m: MountSpec) -> None:
    """Mount ``m`` under ``root``; errors name the destination."""
    target = secure_join(root, m.destination)
    try:
        if m.is_bind:
            assert m.source is not None
            st = os.stat(m.source)
            _ensure_target(target, not stat.S_ISDIR(st.st_mode))
            sc.mount(m.source, target, None, sc.MS_BIND | (m.flags & sc.MS_REC))
            extra = m.flags & ~(sc.MS_BIND | sc.MS_REC)
            if extra:
                sc.mount(None, target, None, sc.MS_BIND | sc.MS_REMOUNT | _locked_flags(target) | extra)
            if m.recursive_ro:
                sc.mount_setattr_rdonly_recursive(target)
        else:
            _ensure_target(target, False)
            try:
                sc.mount(m.source or m.fstype, target, m.fstype, m.flags, m.data or None)
            except OSError as e:
                if e.errno != errno.EPERM:
                    raise
                if m.fstype == "sysfs":  # a sysfs needs a network namespace we own: bind the host's instead
                    sc.mount("/sys", target, None, sc.MS_BIND | sc.MS_REC)
                elif m.fstype in ("cgroup", "cgroup2") and m.flags & sc.MS_RDONLY:
                    # no cgroup mount in a user namespace (v1, or a cgroup namespace we don't own): the
                    # host's tree read-only, as rootless runc binds it
                    sc.mount("/sys/fs/cgroup", target, None, sc.MS_BIND | sc.MS_REC)
                else:
                    raise
                sc.mount_setattr_rdonly_recursive(target)
        if m.propagation:
            sc.mount(None, target, None, m.propagation)
    except OSError as e:
        what = f"mount {m.source or m.fstype} on {m.destination}"
        hint: str | None = "check that the source exists and is readable" if m.is_bind else None
        if e.errno == errno.EROFS:  # making the mount point, on a root bound read-only
            hint = "the mount point must exist on a read-only root (--read-only): mount onto an existing path"
        raise SetupError(what, e.strerror or str(e), hint) from e


def mount_all(root: str, mounts: Iterable[MountSpec]) -> None:
    for m in mounts:
        mount_one(root, m)
        if m.destination == "/dev" and m.fstype == "tmpfs":
            setup_dev(root)


def setup_dev(root: str, console: str | None = None) -> None:
    """Fill a fresh tmpfs /dev: host device nodes bound in, the usual links."""
    dev = os.path.join(root, "dev")
    for name in DEFAULT_DEVICES:
        target = os.path.join(dev, name)
        _ensure_target(target, True)
        try:
            sc.mount(f"/dev/{name}", target, None, sc.MS_BIND)
        except OSError as e:
            raise SetupError(f"bind /dev/{name}", e.strerror or str(e)) from e
    for name, link in _DEV_LINKS:
        path = os.path.join(dev, name)
        if not os.path.lexists(path):
            os.symlink(link, path)
    for sub in ("pts", "shm", "mqueue"):
        os.makedirs(os.path.join(dev, sub), exist_ok=True)


def add_devices(root: str, devices: Iterable[tuple[str, str]]) -> None:
    """OCI ``linux.devices``: the host's node bound in at the same path, or a new FIFO."""
    for path, how in devices:
        target = secure_join(root, path)
        try:
            if how == "fifo":
                os.makedirs(os.path.dirname(target), exist_ok=True)
                if not os.path.lexists(target):
                    os.mkfifo(target, 0o666)
            else:
                _ensure_target(target, True)
                sc.mount(path, target, None, sc.MS_BIND)
        except OSError as e:
            raise SetupError(f"add device {path}", e.strerror or str(e)) from e


def write_sysctls(root: str, sysctls: Iterable[tuple[str, str, bool]]) -> None:
    """OCI ``linux.sysctl``, through the /proc under ``root`` (the writer's namespaces decide which)."""
    for name, value, _ in sysctls:
        try:
            with open(secure_join(root, f"/proc/sys/{name}"), "w") as f:
                f.write(value)
        except OSError as e:
            hint = {errno.ENOENT: "this kernel has no such key (or /proc is not mounted in the container)",
                    errno.EINVAL: "the kernel refused the value"}.get(e.errno or 0)
            raise SetupError(f"set sysctl {name.replace('/', '.')}", e.strerror or str(e), hint=hint) from e


def bind_console(root: str, pty_slave: str) -> None:
    """Bind the sandbox's terminal onto /dev/console, as runc does for terminals."""
    target = os.path.join(root, "dev/console")
    _ensure_target(target, True)
    sc.mount(pty_slave, target, None, sc.MS_BIND)


def mask_paths(root: str, paths: Iterable[str]) -> None:
    """Hide each path: /dev/null over files, an empty read-only tmpfs over dirs."""
    null = os.path.join(root, "dev/null")
    for path in paths:
        target = secure_join(root, path)
        try:
            st = os.stat(target)
        except OSError:
            continue  # nothing there to hide
        try:
            if stat.S_ISDIR(st.st_mode):
                sc.mount("tmpfs", target, "tmpfs", sc.MS_RDONLY, "size=0,mode=0555")
            else:
                sc.mount(null, target, None, sc.MS_BIND)
        except OSError as e:
            raise SetupError(f"mask {path}", e.strerror or str(e)) from e


def readonly_paths(root: str, paths: Iterable[str]) -> None:
    for path in paths:
        target = secure_join(root, path)
        if not os.path.exists(target):
            continue
        try:
            sc.mount(target, target, None, sc.MS_BIND | sc.MS_REC)
            remount_readonly(target)
        except OSError as e:
            raise SetupError(f"make {path} read-only", e.strerror or str(e)) from e


def pivot_into(root: str) -> None:
    """Make ``root`` the root directory and detach the old one entirely."""
    try:
        os.chdir(root)
        sc.pivot_root(".", ".")
        sc.umount(".", sc.MNT_DETACH)
        os.chdir("/")
    except OSError as e:
        raise SetupError("pivot_root", e.strerror or str(e)) from e
