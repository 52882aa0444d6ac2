"""The host programs sandboxer drives, and where they come from.

``shutil.which`` would do, but importing shutil costs ~8 ms on the
``run`` path; this is the same search in a few lines.
"""

from __future__ import annotations

import os

from .errors import HostError

__all__ = ["find", "require", "PACKAGES", "FALLBACK_DIRS"]

#: program -> the Debian/Ubuntu package that ships it
PACKAGES = {
    "newuidmap": "uidmap", "newgidmap": "uidmap",
    "fuse-overlayfs": "fuse-overlayfs",
    "slirp4netns": "slirp4netns", "pasta": "passt", "nft": "nftables",
}
FALLBACK_DIRS = ("/usr/bin", "/bin", "/usr/sbin", "/sbin")


def find(name: str) -> str | None:
    """The executable ``name`` on $PATH (then the usual system dirs), or None."""
    search = os.environ.get("PATH", os.defpath).split(os.pathsep)  # os.get_exec_path's, without its warnings import
    for d in (*search, *FALLBACK_DIRS):
        path = os.path.join(d, name)
        if os.access(path, os.X_OK) and not os.path.isdir(path):
            return path
    return None


def require(name: str) -> str:
    """Like :func:`find`, but a missing program is a :class:`HostError` with the fix."""
    path = find(name)
    if path is None:
        package = PACKAGES.get(name, name)
        raise HostError(f"{name} not found", hint=f"install the {package} package (sudo apt-get install {package})")
    return path
