"""The starting config.json that ``sandboxer spec`` writes, after ``runc spec``.

It runs ``sh`` from ``rootfs`` with Docker's default capabilities in a fresh
set of namespaces.  The rootless variant adds a user namespace that maps
container root to the calling user and swaps the two things an unprivileged
user cannot do inside it: mounting devpts with ``gid=5`` (the group is not
mapped) and mounting a fresh sysfs (that needs privilege over the network
namespace's owner), which becomes a read-only rbind of the host's /sys.
"""

from __future__ import annotations

import os

from sandboxer.errors import UsageError
from sandboxer.oci.spec import (
    DEFAULT_CAPS,
    Capabilities,
    IDMapping,
    Linux,
    Mount,
    Namespace,
    Process,
    Rlimit,
    Root,
    Spec,
    dump,
)
from sandboxer.runtime.mounts import MASKED_PATHS, READONLY_PATHS

__all__ = ["MASKED_PATHS", "READONLY_PATHS", "spec_template", "write_template"]

_NOSUID_NOEXEC_NODEV = ["nosuid", "noexec", "nodev"]


def _mounts(rootless: bool) -> list[Mount]:
    devpts = ["nosuid", "noexec", "newinstance", "ptmxmode=0666", "mode=0620"]
    if rootless:
        sys = Mount("/sys", "/sys", "none", ["rbind", *_NOSUID_NOEXEC_NODEV, "ro"])
    else:
        devpts.append("gid=5")  # the tty group, unmapped in a rootless user namespace
        sys = Mount("/sys", "sysfs", "sysfs", [*_NOSUID_NOEXEC_NODEV, "ro"])
    return [
        Mount("/proc", "proc", "proc"),
        Mount("/dev", "tmpfs", "tmpfs", ["nosuid", "strictatime", "mode=755", "size=65536k"]),
        Mount("/dev/pts", "devpts", "devpts", devpts),
        Mount("/dev/shm", "shm", "tmpfs", [*_NOSUID_NOEXEC_NODEV, "mode=1777", "size=65536k"]),
        Mount("/dev/mqueue", "mqueue", "mqueue", list(_NOSUID_NOEXEC_NODEV)),
        sys,
    ]


def spec_template(rootless: bool) -> Spec:
    """A runnable spec like ``runc spec`` (``--rootless``) makes; a fresh object each call."""
    linux = Linux(
        namespaces=[Namespace(t) for t in ("pid", "network", "ipc", "uts", "mount", "cgroup")],
        masked_paths=list(MASKED_PATHS),
        readonly_paths=list(READONLY_PATHS),
    )
    if rootless:
        linux.namespaces.append(Namespace("user"))
        # Effective IDs, as runc uses: the kernel checks them when an
        # unprivileged process writes a one-line uid_map/gid_map.
        linux.uid_mappings = [IDMapping(0, os.geteuid(), 1)]
        linux.gid_mappings = [IDMapping(0, os.getegid(), 1)]
    else:
        linux.resources = {"devices": [{"allow": False, "access": "rwm"}]}
    return Spec(
        process=Process(
            terminal=True,
            args=["sh"],
            env=["PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
                 "TERM=xterm"],
            cwd="/",
            capabilities=Capabilities(bounding=list(DEFAULT_CAPS),
                                      effective=list(DEFAULT_CAPS),
                                      permitted=list(DEFAULT_CAPS)),
            rlimits=[Rlimit("RLIMIT_NOFILE", hard=1024, soft=1024)],
            no_new_privileges=True,
        ),
        root=Root("rootfs", readonly=True),
        hostname="sandboxer",
        mounts=_mounts(rootless),
        linux=linux,
    )


def write_template(bundle_dir: str | os.PathLike[str], rootless: bool,
                   force: bool = False) -> str:
    """Write the template to ``bundle_dir``/config.json and return that path.

    Like ``runc spec`` it will not overwrite an existing config.json unless
    ``force`` is given: that file is usually hand-edited.
    """
    bundle_dir = os.fspath(bundle_dir)
    if not os.path.isdir(bundle_dir):
        raise UsageError(f"bundle directory {bundle_dir} does not exist",
                         hint="create it first, with the root filesystem in rootfs/ inside it")
    path = os.path.join(bundle_dir, "config.json")
    if not force and os.path.lexists(path):
        raise UsageError(f"{path} already exists",
                         hint="remove it first, or use --force to overwrite it")
    return dump(spec_template(rootless), path)
