"""Paths in an image's unpacked layers, looked up as the overlay will merge them.

What the builder writes over an image (COPY, WORKDIR) and what ``run`` and
the builder read from it (``/etc/passwd``, ``/etc/group``) must land or be
found where they will be inside the sandbox: whiteouts delete, opaque
directories hide what is below, and a symbolic link resolves inside the
image — never on the host, where ``<layer>/etc -> /etc`` would lead.
"""

from __future__ import annotations

import os
import stat

from ..errors import SandboxerError
from ..storage.whiteouts import is_opaque, is_whiteout
from ..symlinks import follow_links

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Sequence

__all__ = ["MergedView", "ImagePathError", "read_image_file"]


class ImagePathError(SandboxerError):
    """A path that cannot be resolved in the image (a symlink loop, a file where a directory must be)."""


class MergedView:
    """Look paths up in unpacked layers (top first) as overlayfs would merge them: whiteouts
    delete, opaque directories hide what is below, symlinks resolve inside the image."""

    def __init__(self, lowers: Sequence[str]) -> None:
        self.lowers = list(lowers)

    def lookup(self, parts: Sequence[str]) -> tuple[str, os.stat_result] | None:
        """(host path, lstat) of the entry at ``parts``, whose parents must be directories; or None."""
        if not parts:
            return (self.lowers[0], os.lstat(self.lowers[0])) if self.lowers else None
        for layer in self.lowers:
            cut = False  # this layer hides the layers below at some parent
            present = True
            for i in range(1, len(parts)):
                p = os.path.join(layer, *parts[:i])
                try:
                    st = os.lstat(p)
                except FileNotFoundError:
                    present = False
                    break
                if not stat.S_ISDIR(st.st_mode):
                    return None  # a whiteout or a non-directory parent: nothing below it in this view
                if is_opaque(p):
                    cut = True
            if present:
                leaf = os.path.join(layer, *parts)
                if os.path.lexists(leaf):
                    st = os.lstat(leaf)
                    return None if is_whiteout(st) else (leaf, st)
            if cut:
                return None
        return None

    def resolve(self, path: str, follow_last: bool = True) -> list[str]:
        """The components of ``path`` with every symlink resolved inside the image (``..`` stops at /)."""
        def link_at(done: list[str], part: str, last: bool) -> str | None:
            found = self.lookup([*done, part])
            if found is None:
                return None
            if stat.S_ISLNK(found[1].st_mode) and (not last or follow_last):
                return os.readlink(found[0])
            if not last and not stat.S_ISDIR(found[1].st_mode):
                raise ImagePathError(f"/{'/'.join([*done, part])} is not a directory in the image",
                                     hint="give a path whose parents are directories in the image")
            return None

        return follow_links(path, link_at, lambda: ImagePathError(
            f"too many levels of symbolic links in {path}", hint="the image's symbolic links go round in a loop"))


def read_image_file(lowers: Sequence[str], path: str, limit: int = 1 << 20) -> str | None:
    """The text of the regular file at ``path`` in the image (at most ``limit`` bytes); None if the
    image has none there, if it is no regular file, or if it can't be resolved."""
    view = MergedView(lowers)
    try:
        found = view.lookup(view.resolve(path))
    except ImagePathError:
        return None
    if found is None or not stat.S_ISREG(found[1].st_mode):
        return None
    try:  # a layer's parents were checked as directories: only the leaf could be swapped, and may not
        fd = os.open(found[0], os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
    except OSError:
        return None
    with os.fdopen(fd, "rb") as f:
        return f.read(limit).decode("utf-8", "replace")
