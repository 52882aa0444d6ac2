"""Removing a directory tree that a sandbox wrote, however deep.

``shutil.rmtree`` recurses once per level: a sandbox that nests 1,100
directories (``mkdir d && cd d`` in a loop) made it raise RecursionError,
and so made its own upper layer — and every later ``rm``, ``rmi`` or
``image prune`` that met it — impossible to remove.  This walks the tree
with a list instead, holding one directory descriptor at a time (a deep
tree would exhaust descriptors, and its paths ``PATH_MAX``): it goes down
by name relative to the open directory, never following a symbolic link,
and back up through ``..``, checking that it arrives where it came from.
"""

from __future__ import annotations

import errno
import os

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Callable

__all__ = ["rmtree"]

_DIR_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC


def rmtree(path: str, *, dir_fd: int | None = None, ignore_errors: bool = False) -> None:
    """Remove ``path`` (relative to ``dir_fd`` if given) and everything below it.

    A symbolic link is removed, never followed.  With ``ignore_errors``, what can't be removed
    (permissions) stays and the rest goes; else the first OSError is raised.  A missing ``path``
    is not an error.
    """
    try:
        fd = os.open(path, _DIR_FLAGS, dir_fd=dir_fd)
    except FileNotFoundError:
        return
    except OSError as e:
        if e.errno not in (errno.ENOTDIR, errno.ELOOP):  # else a file, or a symbolic link (O_NOFOLLOW)
            if ignore_errors:
                return
            raise
        _quietly(ignore_errors, os.unlink, path, dir_fd=dir_fd)
        return
    try:
        _empty(fd, ignore_errors)
    finally:
        os.close(fd)
    _quietly(ignore_errors, os.rmdir, path, dir_fd=dir_fd)


def _empty(top: int, ignore_errors: bool) -> None:
    """Remove everything inside the directory open at ``top`` (left open, where it was)."""
    fd = os.dup(top)
    #: the way back up: per level, the (st_dev, st_ino) of the directory above, the name of the one we
    #: entered, and the subdirectories of the one above still to visit
    above: list[tuple[tuple[int, int], str, list[str]]] = []
    try:
        pending = _clear_files(fd, ignore_errors)
        while True:
            if pending:
                name = pending.pop()
                try:
                    child = os.open(name, _DIR_FLAGS, dir_fd=fd)
                except FileNotFoundError:
                    continue
                except OSError:
                    if not ignore_errors:
                        raise
                    continue
                st = os.fstat(fd)
                above.append(((st.st_dev, st.st_ino), name, pending))
                os.close(fd)
                fd = child
                pending = _clear_files(fd, ignore_errors)
                continue
            if not above:
                return
            identity, name, pending = above.pop()
            parent = os.open("..", _DIR_FLAGS, dir_fd=fd)
            os.close(fd)
            fd = parent
            st = os.fstat(fd)
            if (st.st_dev, st.st_ino) != identity:  # moved meanwhile: we are elsewhere now, and stop
                if ignore_errors:
                    return
                raise OSError(f"a directory was moved while its tree was being removed (at {name!r})")
            _quietly(ignore_errors, os.rmdir, name, dir_fd=fd)
    finally:
        os.close(fd)


def _clear_files(fd: int, ignore_errors: bool) -> list[str]:
    """Unlink every non-directory in the directory open at ``fd``; return its subdirectories' names."""
    subdirs = []
    try:
        with os.scandir(fd) as entries:
            names = [(entry.name, entry.is_dir(follow_symlinks=False)) for entry in entries]
    except OSError:
        if not ignore_errors:
            raise
        return []
    for name, is_dir in names:
        if is_dir:
            subdirs.append(name)
        else:
            _quietly(ignore_errors, os.unlink, name, dir_fd=fd)
    return subdirs


def _quietly(ignore_errors: bool, fn: Callable[..., None], name: str, *, dir_fd: int | None) -> None:
    try:
        fn(name, dir_fd=dir_fd)
    except FileNotFoundError:
        pass
    except OSError:
        if not ignore_errors:
            raise

