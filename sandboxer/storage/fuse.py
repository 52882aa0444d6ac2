"""fuse-overlayfs: an overlay served by a userspace daemon.

Copes with lower layers whose owners are unmapped (the host root): a
copied-up file becomes owned by the overflow id instead of failing.  We open
``/dev/fuse`` and mount it ourselves, then hand the fd to the daemon as
``/dev/fd/N`` (libfuse 3.3+), so the mount exists before the daemon starts:
no readiness wait, and the daemon runs in the foreground as our child with
``PR_SET_PDEATHSIG`` — it cannot outlive the sandbox.
"""

from __future__ import annotations

import os

from .. import signals, syscalls
from ..errors import SetupError
from ..programs import find
from . import Snapshotter
from .overlay import _upper_work

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Sequence

__all__ = ["FuseOverlay"]

#: With one lower layer (the host root), ``static_nlink``: a directory's link count reads 1, as on btrfs,
#: instead of 2 + its subdirectories.  Counting them makes the daemon read in full every directory it
#: is asked to stat — /proc, /dev and /sys too, as PID 1 mounts over them — which halves its cost per
#: sandbox (~13.7 → ~6.6 ms here); find takes 1 as "unknown" and still descends.  Not with several
#: layers: fuse-overlayfs 1.10 then stops honouring a lower layer's opaque directories on lookup
#: (test_layers), and a single layer has nothing below it to hide.
_ONE_LOWER_OPTIONS = ",static_nlink"


class FuseOverlay(Snapshotter):
    name = "fuse-overlayfs"
    priority = 20

    def __init__(self) -> None:
        self._binary: str | None = None

    def unusable_reason(self, kind: str, requested: bool = False) -> str | None:
        self._binary = find("fuse-overlayfs")
        if self._binary is None:
            return "fuse-overlayfs is not installed (sudo apt-get install fuse-overlayfs)"
        if not os.access("/dev/fuse", os.R_OK | os.W_OK):
            return "/dev/fuse is not accessible (sudo chmod 0666 /dev/fuse)"
        return None

    def mount(self, lowers: Sequence[str], scratch: str, target: str) -> None:
        upper, work = _upper_work(scratch)
        fd = os.open("/dev/fuse", os.O_RDWR | os.O_CLOEXEC)  # the daemon inherits it explicitly
        try:
            syscalls.mount("fuse-overlayfs", target, "fuse.fuse-overlayfs", syscalls.MS_NOSUID | syscalls.MS_NODEV,
                           f"fd={fd},rootmode=40000,user_id=0,group_id=0,allow_other")
            argv = ["fuse-overlayfs", "-f", "-o",
                    f"lowerdir={':'.join(lowers)},upperdir={upper},workdir={work}"
                    + (_ONE_LOWER_OPTIONS if len(lowers) == 1 else ""), f"/dev/fd/{fd}"]
            _spawn_daemon(self._binary or find("fuse-overlayfs") or "fuse-overlayfs", argv, fd, target)
        finally:
            os.close(fd)


def _spawn_daemon(path: str, argv: list[str], keep_fd: int, target: str) -> None:
    """Fork+exec the daemon with a death signal tied to this process.

    The daemon gets a mount namespace of its own: the sandbox's later
    ``pivot_root`` moves the root of every process in the sandbox's
    namespace, which would turn the daemon's ``lowerdir=/`` into the overlay
    itself.  Its copy of the overlay mount is dropped, so the unmount in the
    sandbox's namespace ends the FUSE connection.
    """
    parent = os.getpid()
    pid = os.fork()
    if pid == 0:  # pragma: no cover - child
        try:
            syscalls.set_pdeathsig(signals.SIGKILL)
            if os.getppid() != parent:
                os._exit(1)
            syscalls.unshare(syscalls.CLONE_NEWNS)
            syscalls.umount(target, syscalls.MNT_DETACH)
            os.set_inheritable(keep_fd, True)
            devnull = os.open("/dev/null", os.O_RDWR)
            os.dup2(devnull, 0)
            os.dup2(devnull, 1)
            os.dup2(devnull, 2)  # it chatters about ignored options; failures show as mount errors
            os.execv(path, argv)
        finally:
            os._exit(127)
    # the daemon reports nothing on success; a failed exec shows at first access
    if os.waitpid(pid, os.WNOHANG) != (0, 0):
        raise SetupError("start fuse-overlayfs", "the daemon exited at once")
