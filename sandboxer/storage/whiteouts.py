"""How overlay drivers mark deletions in a layer directory, read in one place.

A whiteout is a 0:0 character device; an opaque directory carries an
``opaque`` xattr set to ``y``: ``user.overlay.opaque`` for kernel overlayfs
in a user namespace (and what the layer unpacker writes),
``trusted.overlay.opaque`` for a privileged one, ``user.fuseoverlayfs.opaque``
for fuse-overlayfs's own upper directories.
"""

from __future__ import annotations

import os
import stat

__all__ = ["OPAQUE_XATTRS", "is_whiteout", "is_opaque"]

OPAQUE_XATTRS = ("user.overlay.opaque", "trusted.overlay.opaque", "user.fuseoverlayfs.opaque")


def is_whiteout(st: os.stat_result) -> bool:
    return stat.S_ISCHR(st.st_mode) and st.st_rdev == 0


def is_opaque(path: str) -> bool:
    """True if any driver's opaque marker on ``path`` (not followed if a symlink) says ``y``."""
    for name in OPAQUE_XATTRS:
        try:
            if os.getxattr(path, name, follow_symlinks=False) == b"y":
                return True
        except OSError:
            pass
    return False
