"""The Linux system calls Python 3.11's standard library lacks, over ctypes' C core.

This is the only module that calls libc.  Each wrapper raises ``OSError``
with the errno and a message that says what was being done, so a failure
deep in sandbox set-up still reads as a sentence.

It drives ``_ctypes``, the C half of ctypes, directly: ``import ctypes``
builds its ~50 Python-level types at import, ~2.5 ms of every command's
start (a tenth of ``sandboxer exec``), for the five C types and one
function type used here.  Structures travel as ``struct``-packed bytes in
char buffers.
"""

from __future__ import annotations

import _ctypes
import fcntl
import os
import struct

__all__ = [
    "CLONE_NEWNS", "CLONE_NEWCGROUP", "CLONE_NEWUTS", "CLONE_NEWIPC",
    "CLONE_NEWUSER", "CLONE_NEWPID", "CLONE_NEWNET", "CLONE_NEWTIME",
    "MS_RDONLY", "MS_NOSUID", "MS_NODEV", "MS_NOEXEC", "MS_REMOUNT",
    "MS_BIND", "MS_MOVE", "MS_REC", "MS_PRIVATE", "MS_SLAVE", "MS_SHARED",
    "MS_STRICTATIME", "MS_RELATIME", "MS_NOATIME", "MS_NODIRATIME",
    "MNT_DETACH",
    "unshare", "setns", "mount", "umount", "pivot_root", "sethostname",
    "prctl", "capget", "capset", "seccomp_set_filter", "ioctl_int",
    "set_pdeathsig", "set_no_new_privs", "cap_bound_drop", "cap_ambient_clear",
    "cap_ambient_raise", "set_keepcaps", "statfs_flags", "mount_setattr_rdonly_recursive",
    "interface_up", "malloc_trim", "cloexec_from", "close_inherited", "personality", "blank_environment",
    "join_session_keyring", "set_dumpable",
]

CLONE_NEWNS = 0x00020000
CLONE_NEWCGROUP = 0x02000000
CLONE_NEWUTS = 0x04000000
CLONE_NEWIPC = 0x08000000
CLONE_NEWUSER = 0x10000000
CLONE_NEWPID = 0x20000000
CLONE_NEWNET = 0x40000000
CLONE_NEWTIME = 0x00000080

MS_RDONLY = 1
MS_NOSUID = 2
MS_NODEV = 4
MS_NOEXEC = 8
MS_SYNCHRONOUS = 16
MS_REMOUNT = 32
MS_MANDLOCK = 64
MS_DIRSYNC = 128
MS_NOATIME = 1024
MS_NODIRATIME = 2048
MS_BIND = 4096
MS_MOVE = 8192
MS_REC = 16384
MS_SILENT = 32768
MS_UNBINDABLE = 1 << 17
MS_PRIVATE = 1 << 18
MS_SLAVE = 1 << 19
MS_SHARED = 1 << 20
MS_RELATIME = 1 << 21
MS_STRICTATIME = 1 << 24
MNT_DETACH = 2

PR_SET_PDEATHSIG = 1
PR_SET_KEEPCAPS = 8
PR_SET_SECCOMP = 22
PR_CAPBSET_DROP = 24
PR_SET_NO_NEW_PRIVS = 38
PR_CAP_AMBIENT = 47
PR_CAP_AMBIENT_RAISE = 2
PR_CAP_AMBIENT_CLEAR_ALL = 4

SECCOMP_SET_MODE_FILTER = 1
SECCOMP_FILTER_FLAG_TSYNC = 1
SECCOMP_FILTER_FLAG_LOG = 2
SECCOMP_FILTER_FLAG_SPEC_ALLOW = 4

_LINUX_CAPABILITY_VERSION_3 = 0x20080522

_NR = {  # syscalls without a libc wrapper in glibc 2.36
    "x86_64": {"pivot_root": 155, "seccomp": 317, "keyctl": 250},
    "aarch64": {"pivot_root": 41, "seccomp": 277, "keyctl": 219},
}[os.uname().machine]

class _Char(_ctypes._SimpleCData):
    _type_ = "c"


class _Int(_ctypes._SimpleCData):
    _type_ = "i"


class _Long(_ctypes._SimpleCData):
    _type_ = "l"


class _ULong(_ctypes._SimpleCData):
    _type_ = "L"


class _CharP(_ctypes._SimpleCData):  # bytes or None (NULL)
    _type_ = "z"


class _VoidP(_ctypes._SimpleCData):  # an address as an int
    _type_ = "P"


class _Function(_ctypes.CFuncPtr):
    """A libc function returning a C int, as ``ctypes.CDLL(None, use_errno=True)`` makes them: errno
    is saved after each call for :func:`_ctypes.get_errno`.  Without argtypes, an int goes as a C int
    (sign-extended to a register), bytes as a pointer, None as NULL."""

    _flags_ = _ctypes.FUNCFLAG_CDECL | _ctypes.FUNCFLAG_USE_ERRNO
    _restype_ = _Int


class _Libc:
    """The process's own symbols (``dlopen(NULL)``): glibc's, whatever its soname."""

    _handle = _ctypes.dlopen(None, _ctypes.RTLD_LOCAL)  # type: ignore[arg-type]  # NULL: as ctypes.CDLL(None)

    def __getattr__(self, name: str) -> _Function:
        function = _Function((name, self))  # type: ignore[arg-type]  # any object with _handle; AttributeError if no symbol
        setattr(self, name, function)
        return function


def _buffer(data: bytes) -> _ctypes.Array:
    """A C char array holding a copy of ``data``, for a pointer argument: the kernel may write into it
    (``.raw`` reads it back); ``_ctypes.addressof`` gives its address."""
    array: _ctypes.Array = (_Char * len(data)).from_buffer_copy(data)
    return array


_libc = _Libc()
_libc.mount.argtypes = (_CharP, _CharP, _CharP, _ULong, _CharP)
_libc.umount2.argtypes = (_CharP, _Int)
_libc.unshare.argtypes = (_Int,)
_libc.setns.argtypes = (_Int, _Int)
_libc.sethostname.argtypes = (_CharP, _ULong)
_libc.prctl.argtypes = (_Int, _ULong, _ULong, _ULong, _ULong)
_libc.ioctl.argtypes = (_Int, _ULong, _Long)
_libc.personality.argtypes = (_ULong,)
_libc.memset.argtypes = (_VoidP, _Int, _ULong)
_libc.syscall.restype = _Long


def _check(ret: int, what: str, path: str | None = None) -> int:
    if ret < 0:
        err = _ctypes.get_errno()
        raise OSError(err, f"{what}: {os.strerror(err)}", path)
    return ret


def _b(s: str | bytes | None) -> bytes | None:
    return s.encode() if isinstance(s, str) else s


def unshare(flags: int) -> None:
    """unshare(2): move this process into new namespaces."""
    _check(_libc.unshare(flags), "unshare")


def setns(fd: int, nstype: int = 0) -> None:
    """setns(2): join the namespace open at ``fd``."""
    _check(_libc.setns(fd, nstype), "setns")


def mount(source: str | None, target: str, fstype: str | None = None,
          flags: int = 0, data: str | None = None) -> None:
    """mount(2); the error names the target and the filesystem type."""
    ret = _libc.mount(_b(source), _b(target), _b(fstype), flags, _b(data))
    if ret < 0:
        err = _ctypes.get_errno()
        kind = fstype or ("bind" if flags & MS_BIND else "remount" if flags & MS_REMOUNT else "propagation")
        raise OSError(err, f"mount {kind} on {target}: {os.strerror(err)}", target)


def umount(target: str, flags: int = 0) -> None:
    """umount2(2)."""
    _check(_libc.umount2(_b(target), flags), f"umount {target}", target)


def pivot_root(new_root: str, put_old: str) -> None:
    """pivot_root(2) (no glibc wrapper)."""
    _check(_libc.syscall(_NR["pivot_root"], _b(new_root), _b(put_old)), f"pivot_root to {new_root}")


def sethostname(name: str) -> None:
    raw = name.encode()
    _check(_libc.sethostname(raw, len(raw)), f"sethostname {name!r}")


def prctl(option: int, arg2: int = 0, arg3: int = 0, arg4: int = 0, arg5: int = 0) -> int:
    return _check(_libc.prctl(option, arg2, arg3, arg4, arg5), f"prctl({option})")


def set_pdeathsig(sig: int) -> None:
    """Ask the kernel to send ``sig`` to this process when its parent dies."""
    prctl(PR_SET_PDEATHSIG, sig)


PR_SET_DUMPABLE = 4


def set_dumpable(dumpable: bool) -> None:
    """A non-dumpable process can't be traced, nor its /proc/PID/fd, mem or environ opened, by a process
    without CAP_SYS_PTRACE in its memory's user namespace: what a sandboxer helper that joins a
    sandbox must be until it execs (runc's CVE-2016-9962).  An execve makes it dumpable again."""
    prctl(PR_SET_DUMPABLE, 1 if dumpable else 0)


def set_no_new_privs() -> None:
    prctl(PR_SET_NO_NEW_PRIVS, 1)


def set_keepcaps(on: bool) -> None:
    prctl(PR_SET_KEEPCAPS, int(on))


def cap_bound_drop(cap: int) -> None:
    prctl(PR_CAPBSET_DROP, cap)


def cap_ambient_clear() -> None:
    prctl(PR_CAP_AMBIENT, PR_CAP_AMBIENT_CLEAR_ALL)


def cap_ambient_raise(cap: int) -> None:
    prctl(PR_CAP_AMBIENT, PR_CAP_AMBIENT_RAISE, cap)


_CAP_HEADER = struct.Struct("Ii")  # struct __user_cap_header_struct: version, pid (0: this thread)
_CAP_DATA = struct.Struct("6I")   # struct __user_cap_data_struct[2]: effective, permitted, inheritable x2


def capget() -> tuple[int, int, int]:
    """Return this thread's (effective, permitted, inheritable) as 64-bit masks."""
    data = _buffer(bytes(_CAP_DATA.size))
    _check(_libc.capget(_buffer(_CAP_HEADER.pack(_LINUX_CAPABILITY_VERSION_3, 0)), data), "capget")
    eff_lo, prm_lo, inh_lo, eff_hi, prm_hi, inh_hi = _CAP_DATA.unpack(data.raw)
    return eff_lo | eff_hi << 32, prm_lo | prm_hi << 32, inh_lo | inh_hi << 32


def capset(effective: int, permitted: int, inheritable: int) -> None:
    """Set this thread's capability sets from 64-bit masks."""
    low, high = 0xFFFFFFFF, 32
    data = _CAP_DATA.pack(effective & low, permitted & low, inheritable & low,
                          effective >> high & low, permitted >> high & low, inheritable >> high & low)
    _check(_libc.capset(_buffer(_CAP_HEADER.pack(_LINUX_CAPABILITY_VERSION_3, 0)), _buffer(data)), "capset")


def seccomp_set_filter(bpf: bytes, flags: int = 0) -> None:
    """Load a classic-BPF seccomp program (``bpf`` is packed sock_filter structs)."""
    if len(bpf) % 8:
        raise ValueError("seccomp program length is not a multiple of 8")
    program = _buffer(bpf)
    fprog = struct.pack("HxxxxxxQ", len(bpf) // 8, _ctypes.addressof(program))  # struct sock_fprog
    _check(_libc.syscall(_NR["seccomp"], SECCOMP_SET_MODE_FILTER, flags, _buffer(fprog)),
           "load seccomp filter")


def ioctl_int(fd: int, request: int, arg: int = 0) -> int:
    """ioctl(2) with an integer argument (TIOCSCTTY and friends)."""
    return _check(_libc.ioctl(fd, request, arg), f"ioctl {request:#x}")


#: struct statfs on 64-bit Linux: f_type, f_bsize, f_blocks, f_bfree, f_bavail, f_files, f_ffree,
#: f_fsid (two ints), f_namelen, f_frsize, f_flags, f_spare[4]
_STATFS = struct.Struct("2l5L2i7l")
_STATFS_FLAGS = 11


def statfs_flags(path: str) -> int:
    """The mount flags (``ST_*`` = ``MS_*`` bits) of the mount holding ``path``.

    A bind remount inside a user namespace must keep the locked flags
    (nosuid, nodev, noexec, …) of the mount it changes, so callers OR them in.
    """
    buf = _buffer(bytes(_STATFS.size))
    _check(_libc.statfs(_b(path), buf), f"statfs {path}", path)
    return int(_STATFS.unpack(buf.raw)[_STATFS_FLAGS])


AT_FDCWD = -100
AT_RECURSIVE = 0x8000
MOUNT_ATTR_RDONLY = 0x1
_NR_MOUNT_SETATTR = 442  # the same number on every architecture


def mount_setattr_rdonly_recursive(path: str) -> None:
    """Make the mount at ``path`` and every mount below it read-only (Linux 5.12+)."""
    attr = struct.pack("4Q", MOUNT_ATTR_RDONLY, 0, 0, 0)  # struct mount_attr: set, clear, propagation, userns_fd
    _check(_libc.syscall(_NR_MOUNT_SETATTR, AT_FDCWD, _b(path), AT_RECURSIVE, _buffer(attr), len(attr)),
           f"make {path} read-only recursively", path)


SIOCGIFFLAGS = 0x8913
SIOCSIFFLAGS = 0x8914
IFF_UP = 0x1


def interface_up(name: str = "lo") -> None:
    """Bring a network interface up (``ip link set lo up``) with two ioctls.

    Netlink would need pyroute2 (150 ms to import); a fresh network
    namespace needs only its loopback up.
    """


    fd = _check(_libc.socket(2, 2 | 0o2000000, 0), "socket(AF_INET)")  # SOCK_DGRAM|SOCK_CLOEXEC
    try:
        req = bytearray(struct.pack("16sH22x", name.encode(), 0))
        fcntl.ioctl(fd, SIOCGIFFLAGS, req)
        flags = struct.unpack_from("H", req, 16)[0] | IFF_UP
        struct.pack_into("H", req, 16, flags)
        fcntl.ioctl(fd, SIOCSIFFLAGS, req)
    finally:
        os.close(fd)


def malloc_trim() -> None:
    """Give the C heap's free memory back to the kernel (a long-lived process after a busy start)."""
    _libc.malloc_trim(0)


CLOSE_RANGE_CLOEXEC = 4


def cloexec_from(low: int) -> None:
    """Mark every descriptor from ``low`` up close-on-exec, so that an exec'd workload gets only
    what was dup'ed below ``low`` — not what sandboxer's own caller left open (a shell's
    ``7</some/dir`` would be a way out of the sandbox).  ``close_range`` (Linux 5.11) in one call;
    else one by one, up to the descriptor limit."""
    try:
        if _libc.close_range(low, 0xFFFFFFFF, CLOSE_RANGE_CLOEXEC) == 0:
            return
    except AttributeError:  # a libc without the wrapper (glibc < 2.34)
        pass
    import resource

    for fd in range(low, min(resource.getrlimit(resource.RLIMIT_NOFILE)[0], 1 << 20)):
        try:
            os.set_inheritable(fd, False)
        except OSError:
            pass  # not open


def close_inherited() -> None:
    """Close the descriptors from 3 up that this process inherited across exec (those without
    close-on-exec: everything Python opens has it): for a process that outlives its caller — a
    supervisor — or runs code that must not reach them — a sandboxed test."""
    try:
        fds = [int(name) for name in os.listdir("/proc/self/fd")]
    except OSError:  # no /proc: the rare OCI root without it
        import resource

        fds = list(range(3, min(resource.getrlimit(resource.RLIMIT_NOFILE)[0], 1 << 16)))
    for fd in fds:
        if fd < 3:
            continue
        try:
            if os.get_inheritable(fd):
                os.close(fd)
        except OSError:
            pass  # the listing's own descriptor, closed by now


def personality(persona: int) -> None:
    """Set the execution domain (``PER_LINUX32``: ``uname -m`` says i686) for this process and its execs."""
    _check(_libc.personality(persona), f"personality({persona:#x})")


def blank_environment() -> None:
    """Zero the environment block this process was started with (``/proc/PID/environ`` reads it).

    A forked process shows its ancestor's environment there — the user's, tokens included — for
    as long as it lives; Python copied it into ``os.environ`` at start-up and needs the block no more.
    """
    with open("/proc/self/stat", "rb") as f:
        fields = f.read().rsplit(b")", 1)[1].split()  # after "PID (comm)": field N is at N - 3
    start, end = int(fields[50 - 3]), int(fields[51 - 3])  # env_start, env_end (proc(5))
    if 0 < start < end:
        _libc.memset(start, 0, end - start)


KEYCTL_JOIN_SESSION_KEYRING = 1


def join_session_keyring() -> None:
    """A new anonymous session keyring for this process and its children, instead of the caller's
    login session's (whose keys a process able to call keyctl could otherwise read)."""
    _check(_libc.syscall(_NR["keyctl"], KEYCTL_JOIN_SESSION_KEYRING, None), "keyctl(JOIN_SESSION_KEYRING)")
