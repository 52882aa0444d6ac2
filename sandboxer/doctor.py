"""``sandboxer doctor``: what this host gives a rootless sandbox, and the fix for what it doesn't.

Reading the host (:meth:`HostFacts.probe`) is kept apart from judging it (the
pure ``_check_*`` functions behind :func:`run_checks`), so every verdict and
fix text can be tested on made-up facts without breaking a real machine.
Imports stay cheap: the runtime imports :func:`probe_userns_blocker` to
explain a failed start, so ``shutil``, ``pwd``, ``json``, ``argparse`` and
the ctypes syscalls are imported only where they are used.
"""

from __future__ import annotations

import dataclasses
import errno
import os
import stat
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from functools import partial
from typing import Literal

from sandboxer.errors import HostError

__all__ = [
    "ESSENTIAL",
    "Check",
    "HostFacts",
    "Status",
    "cgroup_mounts",
    "delegation_root",
    "file_caps_permitted",
    "healthy",
    "kernel_version",
    "main",
    "probe_userns_blocker",
    "read_id_ranges",
    "render_json",
    "render_text",
    "run_checks",
    "userns_blocker",
]

Status = Literal["works", "degraded", "missing"]

#: Checks whose ``missing`` makes ``sandboxer doctor`` exit 1: without them no
#: sandbox starts (user namespaces, a root filesystem for the host root, the
#: id-map helpers when there are subordinate ranges to map), or one would
#: start with less isolation than asked for (seccomp), which sandboxer never
#: does silently.  The rest only take away features (limits, networking, ids).
ESSENTIAL = frozenset({"user-namespaces", "storage", "newuidmap", "newgidmap", "seccomp"})

#: Enough ids for the users of a typical image (nobody is 65534).
MIN_SUBIDS = 65536
#: The first kernel that mounts overlayfs inside a user namespace.
OVERLAY_MIN_KERNEL = (5, 11)
#: The controllers that ``--memory``, ``--pids-limit`` and ``--cpus`` need.
LIMIT_CONTROLLERS = ("cpu", "memory", "pids")

_CAP_SETGID = 6
_CAP_SETUID = 7


@dataclass(frozen=True)
class Check:
    """One verdict: ``fix`` is a command or instruction (may span lines), None when nothing to do."""

    name: str
    status: Status
    detail: str
    fix: str | None = None


@dataclass(frozen=True)
class HostFacts:
    """Everything the checks look at, read once from the host.

    Each field is a plain value so that tests can state a whole machine in
    one constructor call; ``None`` means "absent or unreadable".
    """

    user: str
    uid: int
    # user namespaces
    unprivileged_userns_clone: int | None  # Debian/Ubuntu sysctl; absent = allowed
    max_user_namespaces: int | None
    apparmor_restrict_unprivileged_userns: int | None  # Ubuntu 23.10+
    apparmor_label: str | None  # this process's AppArmor confinement, e.g. "unconfined"
    userns_errno: int | None  # unshare(CLONE_NEWUSER) in a child: 0 = worked, None = not tried
    # /etc/subuid, /etc/subgid: the caller's (start, count) ranges
    subuid_ranges: tuple[tuple[int, int], ...]
    subgid_ranges: tuple[tuple[int, int], ...]
    # the id-map helpers
    newuidmap_path: str | None
    newuidmap_setuid_root: bool
    newuidmap_file_caps: int  # permitted capability mask from security.capability
    newgidmap_path: str | None
    newgidmap_setuid_root: bool
    newgidmap_file_caps: int
    # storage
    kernel_release: str
    overlay_in_kernel: bool  # "overlay" listed in /proc/filesystems
    fuse_overlayfs_path: str | None
    dev_fuse_rw: bool
    # network
    slirp4netns_path: str | None
    pasta_path: str | None
    dev_net_tun_rw: bool
    nft_path: str | None  # user-defined networks' NAT and isolation (nftables)
    # cgroups
    cgroup2_mount: str | None  # where cgroup2 is mounted, /sys/fs/cgroup preferred
    cgroup_v1: bool  # any cgroup v1 hierarchy mounted
    cgroup_path: str | None  # the "0::" line of /proc/self/cgroup
    delegated_cgroup: str | None  # see delegation_root()
    delegated_controllers: tuple[str, ...] | None  # its cgroup.controllers
    delegated_cgroup_writable: bool
    # the systemd user manager
    dbus_session_bus_address: str | None
    runtime_bus_socket: bool  # $XDG_RUNTIME_DIR/bus is a socket
    runtime_systemd_dir: bool  # $XDG_RUNTIME_DIR/systemd exists
    # seccomp
    seccomp_in_status: bool  # /proc/self/status has "Seccomp:"
    seccomp_filters_in_status: bool  # ... and "Seccomp_filters:"
    seccomp_actions_avail: str | None  # /proc/sys/kernel/seccomp/actions_avail
    # XDG_RUNTIME_DIR
    xdg_runtime_dir: str | None
    xdg_runtime_dir_owner: int | None  # None: does not exist
    xdg_runtime_dir_mode: int | None  # permission bits

    @classmethod
    def probe(cls, root: str = "/") -> HostFacts:
        """Read the facts of this host, with every path taken under ``root``.

        A ``root`` other than ``/`` points the reads at a fake tree (tests);
        the environment (PATH, XDG_RUNTIME_DIR, ...) still comes from
        ``os.environ``, its paths looked up under ``root`` too.  The unshare
        probe runs only for the real root: a fake tree has no kernel to ask.
        """
        import pwd
        import shutil

        def at(path: str) -> str:
            return os.path.join(root, path.lstrip("/"))

        env = os.environ
        uid = os.getuid()
        try:
            user = pwd.getpwuid(uid).pw_name
        except KeyError:
            user = env.get("USER") or str(uid)

        from .programs import FALLBACK_DIRS  # where sandboxer itself looks after $PATH (sbin is off a user's)

        dirs = [*env.get("PATH", os.defpath).split(os.pathsep), *FALLBACK_DIRS]
        search = os.pathsep.join(at(d) for d in dirs if d)

        def which(name: str) -> str | None:
            return shutil.which(name, path=search)

        newuidmap, newgidmap = which("newuidmap"), which("newgidmap")
        status = (_read(at("/proc/self/status")) or "").splitlines()
        cgroup2_mount, cgroup_v1 = cgroup_mounts(_read(at("/proc/self/mountinfo")) or "")
        cgroup_path = next((line[3:] for line in (_read(at("/proc/self/cgroup")) or "").splitlines()
                            if line.startswith("0::")), None)
        delegated = delegation_root(cgroup_path, uid) if cgroup2_mount and cgroup_path else None
        delegated_dir = (at(os.path.join(cgroup2_mount, delegated.lstrip("/")))
                         if cgroup2_mount and delegated else None)
        controllers = _read(os.path.join(delegated_dir, "cgroup.controllers")) if delegated_dir else None
        runtime_dir = env.get("XDG_RUNTIME_DIR") or None
        runtime_stat = _stat(at(runtime_dir)) if runtime_dir else None

        return cls(
            user=user,
            uid=uid,
            unprivileged_userns_clone=_read_int(at("/proc/sys/kernel/unprivileged_userns_clone")),
            max_user_namespaces=_read_int(at("/proc/sys/user/max_user_namespaces")),
            apparmor_restrict_unprivileged_userns=_read_int(
                at("/proc/sys/kernel/apparmor_restrict_unprivileged_userns")),
            apparmor_label=(_read(at("/proc/self/attr/apparmor/current"))
                            or _read(at("/proc/self/attr/current"))),
            userns_errno=_try_unshare_user() if os.path.realpath(root) == "/" else None,
            subuid_ranges=tuple(read_id_ranges(at("/etc/subuid"), user, uid)),
            subgid_ranges=tuple(read_id_ranges(at("/etc/subgid"), user, uid)),
            newuidmap_path=newuidmap,
            newuidmap_setuid_root=_setuid_root(newuidmap),
            newuidmap_file_caps=_file_caps(newuidmap),
            newgidmap_path=newgidmap,
            newgidmap_setuid_root=_setuid_root(newgidmap),
            newgidmap_file_caps=_file_caps(newgidmap),
            kernel_release=_read(at("/proc/sys/kernel/osrelease")) or "",
            overlay_in_kernel="overlay" in (_read(at("/proc/filesystems")) or "").split(),
            fuse_overlayfs_path=which("fuse-overlayfs"),
            dev_fuse_rw=os.access(at("/dev/fuse"), os.R_OK | os.W_OK),
            slirp4netns_path=which("slirp4netns"),
            pasta_path=which("pasta"),
            dev_net_tun_rw=os.access(at("/dev/net/tun"), os.R_OK | os.W_OK),
            nft_path=which("nft"),
            cgroup2_mount=cgroup2_mount,
            cgroup_v1=cgroup_v1,
            cgroup_path=cgroup_path,
            delegated_cgroup=delegated,
            delegated_controllers=tuple(controllers.split()) if controllers is not None else None,
            delegated_cgroup_writable=delegated_dir is not None and os.access(delegated_dir, os.W_OK),
            dbus_session_bus_address=env.get("DBUS_SESSION_BUS_ADDRESS") or None,
            runtime_bus_socket=runtime_dir is not None and _is_socket(at(os.path.join(runtime_dir, "bus"))),
            runtime_systemd_dir=(runtime_dir is not None
                                 and os.path.isdir(at(os.path.join(runtime_dir, "systemd")))),
            seccomp_in_status=any(line.startswith("Seccomp:") for line in status),
            seccomp_filters_in_status=any(line.startswith("Seccomp_filters:") for line in status),
            seccomp_actions_avail=_read(at("/proc/sys/kernel/seccomp/actions_avail")),
            xdg_runtime_dir=runtime_dir,
            xdg_runtime_dir_owner=runtime_stat.st_uid if runtime_stat else None,
            xdg_runtime_dir_mode=stat.S_IMODE(runtime_stat.st_mode) if runtime_stat else None,
        )


# --- reading helpers (public ones are reused by the runtime) -----------------

def read_id_ranges(path: str | os.PathLike[str], user: str, uid: int) -> list[tuple[int, int]]:
    """The ``(start, count)`` ranges of ``path`` (/etc/subuid format) that belong to the caller.

    A line's owner matches by user name or by numeric uid, as shadow's
    newuidmap does; comments, blank and malformed lines are skipped, and a
    missing file has no ranges.
    """
    ranges = []
    for line in (_read(os.fspath(path)) or "").splitlines():
        owner, _, rest = line.strip().partition(":")
        start, _, count = rest.partition(":")
        if owner in (user, str(uid)) and start.isdecimal() and count.isdecimal() and int(count) > 0:
            ranges.append((int(start), int(count)))
    return ranges


def file_caps_permitted(raw: bytes) -> int:
    """The permitted capability mask of a ``security.capability`` xattr value (0 if unparsable).

    The layout is ``struct vfs_cap_data``: a little-endian revision word, then
    (permitted, inheritable) pairs: one for revision 1, two (low and high 32
    capabilities) for revisions 2 and 3.
    """
    if len(raw) < 12:
        return 0
    permitted = int.from_bytes(raw[4:8], "little")
    if raw[3] >= 2 and len(raw) >= 16:
        permitted |= int.from_bytes(raw[12:16], "little") << 32
    return permitted


def cgroup_mounts(mountinfo: str) -> tuple[str | None, bool]:
    """From /proc/self/mountinfo text: (where cgroup2 is mounted, whether any cgroup v1 is).

    /sys/fs/cgroup wins when cgroup2 is mounted in several places; a
    systemd "hybrid" host has v1 controllers plus cgroup2 at
    /sys/fs/cgroup/unified.
    """
    cgroup2: list[str] = []
    v1 = False
    for line in mountinfo.splitlines():
        before, _, after = line.partition(" - ")  # mount fields - fstype source options
        fields, fstype = before.split(), (after.split() or [""])[0]
        if fstype == "cgroup2" and len(fields) >= 5:
            cgroup2.append(fields[4])
        elif fstype == "cgroup":
            v1 = True
    mount = "/sys/fs/cgroup" if "/sys/fs/cgroup" in cgroup2 else (cgroup2[0] if cgroup2 else None)
    return mount, v1


def delegation_root(cgroup: str, uid: int) -> str:
    """The cgroup systemd delegates to the user: ``user@UID.service`` above ``cgroup``, else ``cgroup``.

    Scopes the runtime creates hang off the user manager, so its controllers
    (not those of the terminal's own scope) are what limits can use.
    """
    parts = cgroup.split("/")
    unit = f"user@{uid}.service"
    return "/".join(parts[: parts.index(unit) + 1]) if unit in parts else cgroup


def kernel_version(release: str) -> tuple[int, int] | None:
    """``(major, minor)`` of a kernel release string such as ``"6.1.0-18-amd64"``."""
    major, _, rest = release.partition(".")
    minor = rest[: len(rest) - len(rest.lstrip("0123456789"))]
    return (int(major), int(minor)) if major.isdecimal() and minor else None


def _read(path: str) -> str | None:
    try:
        with open(path, encoding="utf-8", errors="replace") as f:
            return f.read().strip("\0\n ")
    except OSError:
        return None


def _read_int(path: str) -> int | None:
    text = _read(path)
    try:
        return int(text) if text is not None else None
    except ValueError:
        return None


def _stat(path: str) -> os.stat_result | None:
    try:
        return os.stat(path)
    except OSError:
        return None


def _is_socket(path: str) -> bool:
    st = _stat(path)
    return st is not None and stat.S_ISSOCK(st.st_mode)


def _setuid_root(path: str | None) -> bool:
    st = _stat(path) if path else None
    return st is not None and st.st_uid == 0 and bool(st.st_mode & stat.S_ISUID)


def _file_caps(path: str | None) -> int:
    """Permitted file capabilities of ``path``; no xattr, or a filesystem without them, is none."""
    if not path:
        return 0
    try:
        return file_caps_permitted(os.getxattr(path, "security.capability"))
    except OSError:
        return 0


def _try_unshare_user() -> int | None:
    """Fork a child that unshares a user namespace; return its errno (0: it worked).

    A child, because unshare(CLONE_NEWUSER) changes the caller for good and
    fails in a threaded process.  The errno comes back as the exit status,
    so no pipe is needed.
    """
    try:
        from sandboxer import syscalls
    except (ImportError, OSError, KeyError):  # KeyError: an architecture syscalls doesn't know
        return None
    try:
        pid = os.fork()
    except OSError:
        return None
    if pid == 0:
        code = 255
        try:
            syscalls.unshare(syscalls.CLONE_NEWUSER)
            code = 0
        except OSError as exc:
            code = exc.errno or 255
        finally:
            os._exit(code)  # no Python clean-up (atexit, buffered output) in the child
    code = os.waitstatus_to_exitcode(os.waitpid(pid, 0)[1])
    return errno.EPERM if code < 0 else code  # killed (seccomp SIGSYS): a denial too


# --- judging -----------------------------------------------------------------

_RAISE_USERNS_LIMIT = "sudo sysctl -w user.max_user_namespaces=15000"
#: (fact field, value that disables, sysctl setting as shown, hint)
_USERNS_SYSCTLS = (
    ("unprivileged_userns_clone", 0, "kernel.unprivileged_userns_clone=0",
     "sudo sysctl -w kernel.unprivileged_userns_clone=1"),
    ("max_user_namespaces", 0, "user.max_user_namespaces=0", _RAISE_USERNS_LIMIT),
)
_USERNS_ERRNO_HINTS = {
    errno.EPERM: "a container or seccomp policy forbids user namespaces: run sandboxer on the host, "
                 "or allow unshare(CLONE_NEWUSER) in that policy",
    errno.ENOSPC: f"the user namespace limit is reached: raise it with {_RAISE_USERNS_LIMIT}",
}


def userns_blocker(facts: HostFacts) -> HostError | None:
    """Why no sandbox can start on this host, as one error with its fix; None when user namespaces work.

    The runtime and the pytest plugin raise this to explain a failed start.
    A sysctl that disables user namespaces is named only if the unshare
    probe failed or did not run, since root may create them regardless.
    AppArmor's restriction is checked even when the probe worked: there
    unshare succeeds, but the namespace gets no capabilities.
    """
    if facts.userns_errno != 0:
        for field, bad, setting, hint in _USERNS_SYSCTLS:
            if getattr(facts, field) == bad:
                return HostError(f"user namespaces are disabled: {setting}", hint=hint)
    label = (facts.apparmor_label or "unconfined").split()[0]
    if facts.apparmor_restrict_unprivileged_userns == 1 and facts.uid != 0 and label == "unconfined":
        return HostError(
            "unprivileged user namespaces are restricted by AppArmor: "
            "kernel.apparmor_restrict_unprivileged_userns=1",
            hint="install an AppArmor profile for sandboxer that allows `userns,`, or "
                 "sudo sysctl -w kernel.apparmor_restrict_unprivileged_userns=0")
    if facts.userns_errno:
        err = facts.userns_errno
        return HostError(
            f"cannot create a user namespace: unshare(CLONE_NEWUSER) failed with "
            f"{errno.errorcode.get(err, err)} ({os.strerror(err)})",
            hint=_USERNS_ERRNO_HINTS.get(err, "run `sandboxer doctor` for what else this host lacks"))
    return None


def probe_userns_blocker() -> HostError | None:
    """:func:`userns_blocker` of this host, probed now: the runtime's explanation of a failed start.

    Inside another sandbox (user namespaces forbidden, no /dev/fuse) a start
    fails at storage or at unshare first; this names the real cause.  It
    forks and reads the host, so it belongs on error paths only.
    """
    return userns_blocker(HostFacts.probe())


def _check_user_namespaces(f: HostFacts) -> Check:
    blocker = userns_blocker(f)
    if blocker:
        return Check("user-namespaces", "missing", blocker.message, blocker.hint)
    how = "unshare(CLONE_NEWUSER) works" if f.userns_errno == 0 else "allowed by the sysctls (not probed)"
    return Check("user-namespaces", "works", how)


_SUBID_FIX = "sudo usermod --add-subuids 100000-165535 --add-subgids 100000-165535 $USER"


def _check_id_ranges(kind: Literal["subuid", "subgid"], f: HostFacts) -> Check:
    ranges: tuple[tuple[int, int], ...] = getattr(f, f"{kind}_ranges")
    if not ranges:
        return Check(kind, "degraded",
                     f"no range for {f.user} in /etc/{kind}: sandboxes map only your own id", _SUBID_FIX)
    size = sum(count for _, count in ranges)
    spans = ", ".join(f"{start}-{start + count - 1}" for start, count in ranges)
    if size < MIN_SUBIDS:
        return Check(kind, "degraded",
                     f"only {size} ids for {f.user} ({spans}): images that use higher ids fail", _SUBID_FIX)
    return Check(kind, "works", f"{size} ids for {f.user} ({spans})")


def _check_map_helper(name: Literal["newuidmap", "newgidmap"], cap: int, f: HostFacts) -> Check:
    """Runs map the subordinate ranges through the helpers whenever both files give one (root maps
    its own ids): then a broken helper fails every run, by design never a silent single-id map."""
    path: str | None = getattr(f, f"{name}_path")
    cap_name = "cap_setuid" if cap == _CAP_SETUID else "cap_setgid"
    if f.uid != 0 and f.subuid_ranges and f.subgid_ranges:
        status: Status = "missing"
        effect = "every run fails (it maps your ranges in /etc/subuid and /etc/subgid)"
    else:
        status, effect = "degraded", "sandboxes get a single-id map"
    if path is None:
        return Check(name, status, f"not found on PATH: {effect}", "sudo apt-get install uidmap")
    if getattr(f, f"{name}_setuid_root"):
        return Check(name, "works", f"{path} is setuid root")
    if getattr(f, f"{name}_file_caps") >> cap & 1:
        return Check(name, "works", f"{path} has {cap_name}")
    return Check(name, status, f"{path} is neither setuid root nor has {cap_name}: {effect}",
                 f"sudo chmod u+s {path}  (or: sudo setcap {cap_name}+ep {path})")


def _check_overlay(f: HostFacts) -> Check:
    if not f.overlay_in_kernel:
        return Check("overlay", "missing", "overlay is not in /proc/filesystems",
                     "sudo modprobe overlay  (and add overlay to /etc/modules)")
    version = kernel_version(f.kernel_release)
    if version is None or version < OVERLAY_MIN_KERNEL:
        return Check("overlay", "missing",
                     f"kernel {f.kernel_release or '(unknown)'} is older than 5.11: "
                     "no overlayfs inside a user namespace",
                     "upgrade to Linux 5.11 or later, or use fuse-overlayfs")
    return Check("overlay", "works", f"kernel {f.kernel_release} mounts overlayfs in a user namespace")


def _unmet(*requirements: tuple[bool, str, str]) -> tuple[str, str] | None:
    """The joined (problems, fixes) of the ``(met, problem, fix)`` requirements not met; None if all are."""
    unmet = [(problem, fix) for met, problem, fix in requirements if not met]
    if not unmet:
        return None
    return "; ".join(p for p, _ in unmet), "\n".join(fix for _, fix in unmet)


def _check_fuse_overlayfs(f: HostFacts) -> Check:
    unmet = _unmet(
        (f.fuse_overlayfs_path is not None, "fuse-overlayfs not found on PATH",
         "sudo apt-get install fuse-overlayfs"),
        (f.dev_fuse_rw, "/dev/fuse is not readable and writable by you",
         "sudo chmod 0666 /dev/fuse  (or sudo modprobe fuse if it does not exist)"),
    )
    if unmet:
        return Check("fuse-overlayfs", "missing", *unmet)
    return Check("fuse-overlayfs", "works", f"{f.fuse_overlayfs_path} with /dev/fuse")


def _check_storage(f: HostFacts) -> Check:
    """The snapshotter a host-root run (``run -- CMD``) gets: only fuse-overlayfs serves the host root.

    The kernel overlay refuses it in a user namespace (locked submounts), the
    copy driver too (far too large); both still serve image layers.
    """
    fuse, overlay = _check_fuse_overlayfs(f), _check_overlay(f)
    if fuse.status == "works":
        return Check("storage", "works", "fuse-overlayfs")
    images = "the kernel overlay" if overlay.status == "works" else "the (slow) copy driver"
    return Check("storage", "missing",
                 f"no driver for the host root ({fuse.detail}): `run -- CMD` fails; "
                 f"images still run on {images}, and `run --read-only` needs none", fuse.fix)


def _check_network(f: HostFacts) -> Check:
    helpers = [name for name, path in (("pasta", f.pasta_path), ("slirp4netns", f.slirp4netns_path)) if path]
    unmet = _unmet(
        (bool(helpers), "neither slirp4netns nor pasta found on PATH",
         "sudo apt-get install passt  (or slirp4netns)"),
        (f.dev_net_tun_rw, "/dev/net/tun is not readable and writable by you",
         "sudo chmod 0666 /dev/net/tun  (or sudo modprobe tun if it does not exist)"),
    )
    if unmet:
        problems, fixes = unmet
        return Check("network", "degraded", f"{problems}: only --network none/host", fixes)
    return Check("network", "works", f"{' and '.join(helpers)} with /dev/net/tun")


def _check_user_networks(f: HostFacts) -> Check:
    unmet = _unmet(
        (f.slirp4netns_path is not None, "slirp4netns not found", "sudo apt-get install slirp4netns"),
        (f.nft_path is not None, "nft not found", "sudo apt-get install nftables"),
        (f.dev_net_tun_rw, "/dev/net/tun is not readable and writable by you", "sudo chmod 0666 /dev/net/tun"),
    )
    if unmet:
        problems, fixes = unmet
        return Check("user-networks", "degraded",
                     f"{problems}: sandboxes on a user-defined network reach each other, nothing else", fixes)
    return Check("user-networks", "works", "bridges in a per-user namespace; out through slirp4netns and nft")


_UNIFIED_FIX = ("resource limits need the unified cgroup v2 hierarchy:\n"
                "add systemd.unified_cgroup_hierarchy=1 to the kernel command line\n"
                "(GRUB_CMDLINE_LINUX in /etc/default/grub, then sudo update-grub) and reboot")


def _check_cgroup_v2(f: HostFacts) -> Check:
    if f.cgroup2_mount == "/sys/fs/cgroup" and not f.cgroup_v1:
        return Check("cgroup-v2", "works", "cgroup2 at /sys/fs/cgroup (unified hierarchy)")
    if f.cgroup2_mount and f.cgroup_v1:
        detail = f"hybrid hierarchy: controllers on cgroup v1, cgroup2 only at {f.cgroup2_mount}"
    elif f.cgroup_v1:
        detail = "cgroup v1 only"
    elif f.cgroup2_mount:
        detail = f"cgroup2 mounted at {f.cgroup2_mount}, not /sys/fs/cgroup"
    else:
        detail = "no cgroup filesystem mounted"
    return Check("cgroup-v2", "missing", detail, _UNIFIED_FIX)


_USER_SESSION_FIX = "loginctl enable-linger $USER, then log in again (a login session, not su or sudo)"
_DELEGATE_FIX = ("create /etc/systemd/system/user@.service.d/delegate.conf containing\n"
                 "  [Service]\n"
                 "  Delegate=cpu cpuset io memory pids\n"
                 "then run sudo systemctl daemon-reload and log in again")


def _check_cgroup_delegation(f: HostFacts) -> Check:
    name = "cgroup-delegation"
    if _check_cgroup_v2(f).status != "works":
        return Check(name, "missing", "needs the unified cgroup v2 hierarchy", "fix cgroup-v2 first")
    where = f.delegated_cgroup or "(unknown cgroup)"
    if f.delegated_controllers is None:
        return Check(name, "missing", f"cannot read cgroup.controllers of {where}", _DELEGATE_FIX)
    if not f.delegated_cgroup_writable:
        return Check(name, "missing", f"{where} is not delegated to you (not writable)", _USER_SESSION_FIX)
    lacking = [c for c in LIMIT_CONTROLLERS if c not in f.delegated_controllers]
    if not lacking:
        return Check(name, "works", f"{' '.join(LIMIT_CONTROLLERS)} delegated at {where}")
    status: Status = "missing" if len(lacking) == len(LIMIT_CONTROLLERS) else "degraded"
    return Check(name, status, f"{' '.join(lacking)} not delegated at {where}: those limits fail",
                 _DELEGATE_FIX)


def _check_systemd_user(f: HostFacts) -> Check:
    """The ``systemd`` cgroup driver asks the user manager, over the session bus, for a delegated scope."""
    if not (f.dbus_session_bus_address or f.runtime_bus_socket):
        detail = "no session bus (DBUS_SESSION_BUS_ADDRESS unset, no $XDG_RUNTIME_DIR/bus)"
    elif not f.runtime_systemd_dir:
        detail = "no systemd user manager ($XDG_RUNTIME_DIR/systemd does not exist)"
    else:
        return Check("systemd-user", "works", "user manager reachable over D-Bus")
    return Check("systemd-user", "missing", detail, _USER_SESSION_FIX)


def _check_seccomp(f: HostFacts) -> Check:
    if not f.seccomp_in_status:
        detail = "the kernel has no seccomp (no Seccomp: in /proc/self/status)"
    elif not (f.seccomp_filters_in_status or f.seccomp_actions_avail is not None):
        detail = "the kernel has no seccomp filter mode"
    else:
        return Check("seccomp", "works", "filter mode available")
    return Check("seccomp", "missing", detail,
                 "use a kernel built with CONFIG_SECCOMP=y and CONFIG_SECCOMP_FILTER=y")


def _check_xdg_runtime_dir(f: HostFacts) -> Check:
    d, owner, mode = f.xdg_runtime_dir, f.xdg_runtime_dir_owner, f.xdg_runtime_dir_mode or 0
    login = "log in through a real session (ssh, or machinectl shell $USER@) so pam_systemd sets it up"
    # never chown or chmod a directory that is not only yours (XDG_RUNTIME_DIR=/tmp): point elsewhere
    elsewhere = "unset XDG_RUNTIME_DIR, or set it to /run/user/$UID (your own, mode 0700)"
    problems = (  # (is it so, problem, fix): the first that is so is reported
        (d is None, "XDG_RUNTIME_DIR is not set", login),
        (owner is None, f"{d} does not exist", login),
        (mode & (stat.S_ISVTX | 0o022) != 0, f"{d} is a shared directory (mode {mode:04o})", elsewhere),
        (owner != f.uid, f"{d} is owned by uid {owner}, not you", elsewhere),
        (mode & 0o777 != 0o700, f"{d} has mode {mode:04o}, not 0700", f"chmod 0700 {d}"),
    )
    for is_so, problem, fix in problems:
        if is_so:
            return Check("xdg-runtime-dir", "degraded",
                         f"{problem}: state goes to a private directory under /tmp", fix)
    return Check("xdg-runtime-dir", "works", f"{d}")


_JUDGES: tuple[Callable[[HostFacts], Check], ...] = (
    _check_user_namespaces,
    partial(_check_id_ranges, "subuid"),
    partial(_check_id_ranges, "subgid"),
    partial(_check_map_helper, "newuidmap", _CAP_SETUID),
    partial(_check_map_helper, "newgidmap", _CAP_SETGID),
    _check_overlay,
    _check_fuse_overlayfs,
    _check_storage,
    _check_network,
    _check_user_networks,
    _check_cgroup_v2,
    _check_cgroup_delegation,
    _check_systemd_user,
    _check_seccomp,
    _check_xdg_runtime_dir,
)


def run_checks(facts: HostFacts) -> list[Check]:
    """Judge ``facts``: one :class:`Check` per capability, in report order (names are stable)."""
    return [judge(facts) for judge in _JUDGES]


def healthy(checks: Sequence[Check]) -> bool:
    """True when no :data:`ESSENTIAL` check is missing: sandboxes can start."""
    return not any(c.status == "missing" and c.name in ESSENTIAL for c in checks)


# --- output ------------------------------------------------------------------

_COLOURS = {"works": "32", "degraded": "33", "missing": "31"}  # green, yellow, red
_STATUS_WIDTH = max(map(len, _COLOURS))


def render_text(checks: Sequence[Check], color: bool | None = None) -> str:
    """One aligned line per check, its fix indented below it.

    ``color=None`` colours the status only when stdout is a terminal and
    NO_COLOR is unset or empty (https://no-color.org).
    """
    if color is None:
        color = sys.stdout.isatty() and not os.environ.get("NO_COLOR")
    name_width = max((len(c.name) for c in checks), default=0)
    indent = " " * (name_width + 2 + _STATUS_WIDTH + 2)
    lines = []
    for c in checks:
        pad = " " * (_STATUS_WIDTH - len(c.status))
        status = f"\033[{_COLOURS[c.status]}m{c.status}\033[0m{pad}" if color else c.status + pad
        lines.append(f"{c.name.ljust(name_width)}  {status}  {c.detail}")
        if c.fix:
            first, *rest = c.fix.splitlines()
            lines.append(f"{indent}fix: {first}")
            lines.extend(f"{indent}     {line}" for line in rest)
    return "\n".join(lines)


def render_json(checks: Sequence[Check]) -> str:
    """``{"ok": bool, "checks": [{name, status, detail, fix, essential}, ...]}``."""
    import json

    return json.dumps({
        "ok": healthy(checks),
        "checks": [dataclasses.asdict(c) | {"essential": c.name in ESSENTIAL} for c in checks],
    }, indent=2)


def main(argv: list[str]) -> int:
    """``sandboxer doctor [--json]``: exit 0 when sandboxes can start here, 1 when not."""
    import argparse

    parser = argparse.ArgumentParser(
        prog="sandboxer doctor",
        description="Check what this host gives a rootless sandbox, and print the fix for what it lacks.")
    parser.add_argument("--json", action="store_true", help="print the checks as JSON")
    args = parser.parse_args(argv)
    checks = run_checks(HostFacts.probe())
    print(render_json(checks) if args.json else render_text(checks))
    return 0 if healthy(checks) else 1
