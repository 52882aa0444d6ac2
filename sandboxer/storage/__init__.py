"""Snapshotters: a writable root filesystem over read-only lower layers.

A snapshotter runs inside the sandbox's user and mount namespaces (as the
namespace's root) and mounts ``lowers`` + a private upper layer at
``target``.  The upper and work directories live in ``scratch``, a tmpfs
private to the sandbox's mount namespace, so they vanish with it even when
every process is SIGKILLed.

The built-ins are plugins of the ``sandboxer_snapshotters`` hook
(:mod:`sandboxer.hookspecs`); :func:`choose` picks the first usable one in
preference order, or the one asked for by name.
"""

from __future__ import annotations

from ..errors import HostError, UsageError

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Sequence

__all__ = ["Snapshotter", "RootfsKind", "choose"]


class RootfsKind:
    HOST = "host"    #: the host's ``/`` (owned by host root: unmapped in the sandbox)
    LAYERS = "layers"  #: unpacked image layers (owned by the user's subordinate ids)


class Snapshotter:
    """What a storage driver provides; see the module docstring for where it runs.

    The built-ins subclass it; a plugin's driver may, or just provide the
    same attributes and methods.
    """

    #: the name users pass to ``--storage-driver``
    name: str
    #: lower number = preferred when choosing automatically
    priority: int

    def unusable_reason(self, kind: str, requested: bool = False) -> str | None:
        """Why this driver can't serve a rootfs of ``kind`` here, or None if it can.

        ``requested`` is true when the user named this driver: a driver that
        works with limits (kernel overlay on the host root) accepts then.

        Runs in the caller before anything is forked, so it must be cheap
        (stat calls, no subprocesses).
        """

    def mount(self, lowers: Sequence[str], scratch: str, target: str) -> None:
        """Mount the overlay at ``target``; ``scratch`` is an empty private tmpfs.

        Any helper process it starts must die with the calling process
        (``PR_SET_PDEATHSIG``) so nothing outlives the sandbox.
        """
        raise NotImplementedError


def choose(kind: str, requested: str | None = None) -> Snapshotter:
    """The snapshotter for a rootfs of ``kind``: the one named, else the best usable."""
    from ..plugins import call

    drivers = sorted((d for group in call("sandboxer_snapshotters") for d in group),
                     key=lambda d: d.priority)
    if requested is not None:
        for d in drivers:
            if d.name == requested:
                reason = d.unusable_reason(kind, requested=True)
                if reason:
                    raise HostError(f"storage driver {requested!r} is unusable here: {reason}",
                                    hint="run 'sandboxer doctor', or pick another --storage-driver")
                return d
        raise UsageError(f"unknown storage driver {requested!r}",
                         hint="choose one of: " + ", ".join(d.name for d in drivers))
    reasons = []
    for d in drivers:
        reason = d.unusable_reason(kind)
        if reason is None:
            return d
        reasons.append(f"{d.name}: {reason}")
    from ..doctor import probe_userns_blocker  # inside another sandbox, blocked user namespaces are the cause

    raise probe_userns_blocker() or HostError(
        "no usable storage driver (" + "; ".join(reasons) + ")",
        hint="install fuse-overlayfs and make /dev/fuse accessible (see 'sandboxer doctor')")
