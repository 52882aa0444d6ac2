"""The copy snapshotter: a plain copy of the layers, the last resort.

Works on any kernel and filesystem, at the cost of copying the whole image
per sandbox; so it serves image layers only, never the host root.  Layers
are merged bottom to top with overlayfs' whiteout conventions (a 0:0
character device deletes, an ``opaque`` xattr hides the lower directory),
as :mod:`sandboxer.images.layers` writes them.
"""

from __future__ import annotations

import os
import stat

from .. import syscalls
from . import RootfsKind, Snapshotter
from .whiteouts import is_opaque, is_whiteout

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Sequence

__all__ = ["CopySnapshotter", "merge_layer"]

#: an opaque directory: the spelling of overlayfs in a user namespace (``userxattr``), and the privileged one
#: the overlay drivers' markers: they describe a layer, not the merged files
_DRIVER_XATTRS = ("user.overlay.", "trusted.overlay.", "user.fuseoverlayfs.")


def _is_real_dir(path: str) -> bool:
    """A directory, not a symlink to one: merging into a symlink would copy outside the root."""
    try:
        return stat.S_ISDIR(os.lstat(path).st_mode)
    except FileNotFoundError:
        return False


def _remove(path: str) -> None:
    from ..rmtree import rmtree

    rmtree(path)  # a file or a symbolic link too


def merge_layer(layer: str, dest: str) -> None:
    """Apply one unpacked layer onto ``dest`` as overlayfs would show it over what is there.

    A whiteout deletes; an opaque directory replaces the one below instead
    of merging with it; a directory merges only with a real directory;
    anything else replaces what it covers.  Hardlinks within the layer stay
    hardlinks.  Directory attributes are set after their content, deepest
    first, so a read-only directory is still filled and keeps its mtime.
    """
    links: dict[tuple[int, int], str] = {}
    dirs: list[tuple[str, str]] = []
    for dirpath, dirnames, filenames in os.walk(layer):
        rel = os.path.relpath(dirpath, layer)
        out_dir = os.path.normpath(os.path.join(dest, rel))
        if rel != ".":  # the root keeps the snapshotter's attributes, as overlay's upper root does
            if is_opaque(dirpath) or not _is_real_dir(out_dir):
                _remove(out_dir)
                os.mkdir(out_dir, 0o700)
            dirs.append((dirpath, out_dir))
        for name in filenames + [d for d in dirnames if os.path.islink(os.path.join(dirpath, d))]:
            _copy_entry(os.path.join(dirpath, name), os.path.join(out_dir, name), links)
    for src, out in reversed(dirs):
        _copy_attrs(src, out, os.lstat(src))


def _copy_entry(src: str, out: str, links: dict[tuple[int, int], str]) -> None:
    """Replace ``out`` with a copy of the non-directory ``src`` (nothing, for a whiteout)."""
    import shutil

    st = os.lstat(src)
    _remove(out)
    if is_whiteout(st):
        return
    key = (st.st_dev, st.st_ino)
    if key in links:
        os.link(links[key], out, follow_symlinks=False)
        return
    if stat.S_ISLNK(st.st_mode):
        os.symlink(os.readlink(src), out)
    elif stat.S_ISREG(st.st_mode):
        shutil.copyfile(src, out, follow_symlinks=False)
    elif stat.S_ISFIFO(st.st_mode):
        os.mkfifo(out)
    elif stat.S_ISCHR(st.st_mode) or stat.S_ISBLK(st.st_mode):
        os.mknod(out, st.st_mode, st.st_rdev)
    else:
        return  # a socket: meaningless in a copy
    _copy_attrs(src, out, st)
    if st.st_nlink > 1:
        links[key] = out


def _copy_attrs(src: str, out: str, st: os.stat_result) -> None:
    """Owner, mode, xattrs, times, in the order that keeps them all.

    chown clears setuid/setgid and file capabilities, so it goes first;
    changing xattrs or mode does not touch the mtime, set last.
    """
    os.lchown(out, st.st_uid, st.st_gid)
    if not stat.S_ISLNK(st.st_mode):
        os.chmod(out, stat.S_IMODE(st.st_mode))
    try:
        names = os.listxattr(src, follow_symlinks=False)
    except OSError:
        names = []
    for name in names:
        if name.startswith(_DRIVER_XATTRS):
            continue
        try:
            os.setxattr(out, name, os.getxattr(src, name, follow_symlinks=False), follow_symlinks=False)
        except OSError:
            pass  # as shutil.copystat: what the filesystem or namespace refuses is left out
    os.utime(out, ns=(st.st_atime_ns, st.st_mtime_ns), follow_symlinks=False)


class CopySnapshotter(Snapshotter):
    name = "copy"
    priority = 30

    def unusable_reason(self, kind: str, requested: bool = False) -> str | None:
        if kind == RootfsKind.HOST:
            return "the host root is too large to copy; it serves image layers only"
        return None

    def mount(self, lowers: Sequence[str], scratch: str, target: str) -> None:
        root = os.path.join(scratch, "rootfs")
        os.mkdir(root, 0o755)
        for layer in reversed(lowers):  # lowerdir order is top first
            merge_layer(layer, root)
        syscalls.mount(root, target, None, syscalls.MS_BIND | syscalls.MS_REC)
