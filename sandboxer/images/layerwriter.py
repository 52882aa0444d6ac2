"""Writing image layers: a RUN's overlay upper directory, a COPY/ADD, a WORKDIR, as layer tarballs.

Layer directories and upper directories hold files owned by the user's
subordinate ids, which the user cannot always read or even traverse
(``/root`` is 0700, owned by "root" = the user's first subuid).  So every
writer runs as root of a user namespace mapped like a sandbox's
(:func:`as_mapped_root`), where those files have their image owners.

The tarballs are deterministic for the same input: entries sorted by path
(parents first), whole-second mtimes, no atime/ctime, no user or group
names.  Owners, modes (setuid included), symlinks, hardlinks and the
``user.*`` and ``security.capability`` xattrs are kept; the overlay
drivers' own bookkeeping never is.

What the drivers leave in an upper directory (checked on this project's
kernel 6.18 and fuse-overlayfs 1.10):

- kernel overlayfs (``userxattr``): a deleted file is a 0:0 character
  device; a directory that replaced a lower one has
  ``user.overlay.opaque=y``; copied-up entries carry ``user.overlay.origin``
  and the root ``user.overlay.impure``/``uuid`` (dropped);
- fuse-overlayfs: the same 0:0 devices (or ``.wh.NAME`` files where mknod
  fails); an opaque directory gets ``user.fuseoverlayfs.opaque=y`` *and* a
  ``.wh..wh..opq`` file *and* a 0:0 device named ``.wh..opq``.

Each becomes what the OCI image spec says: ``.wh.NAME`` for a deletion,
``.wh..wh..opq`` for an opaque directory.
"""

from __future__ import annotations

import json
import os
import stat
import tarfile
from collections.abc import Callable, Iterator, Sequence
from typing import IO, Any, TypeVar

from ..errors import SandboxerError
from ..records import record
from ..storage.whiteouts import is_opaque, is_whiteout
from .context import Source
from .layers import OPAQUE_MARKER, WHITEOUT_PREFIX
from .merged import MergedView

__all__ = ["LayerWriteError", "CopyJob", "as_mapped_root", "write_upper_diff", "write_copy",
           "write_workdir"]

#: markers of an opaque directory in an upper dir: kernel overlay, fuse-overlayfs
#: fuse-overlayfs's second opaque marker: a whiteout device named ".wh..opq"
_FUSE_OPAQUE_DEVICE = WHITEOUT_PREFIX + ".opq"
#: a whiteout as an xattr on an empty file (kernel 6.7+, for lower layers)
_WHITEOUT_XATTR = "user.overlay.whiteout"
#: the overlay drivers' bookkeeping: never part of an image
_DRIVER_XATTRS = ("user.overlay.", "user.fuseoverlayfs.", "user.containers.", "trusted.overlay.")
#: overlay features that would make an upper dir unreadable as a plain tree
_UNSUPPORTED_XATTRS = {"user.overlay.metacopy": "metacopy", "user.overlay.redirect": "redirect_dir"}
_RESULT_LIMIT = 4000
_T = TypeVar("_T")


class LayerWriteError(SandboxerError):
    """A layer could not be written (the message says which step and path)."""


# -- running as mapped root ----------------------------------------------------------------------


def as_mapped_root(fn: Callable[..., _T], *args: object) -> _T:
    """``fn(*args)`` in a child that is root of a mapped user namespace; its (JSON) result comes back.

    An exception in the child is raised here as a :class:`LayerWriteError`
    with the same message and hint.  The result must be small (it travels
    over a pipe that is read after the child exits).
    """
    from ..runtime.userns import mapped_root_reply

    data = mapped_root_reply(_report, fn, args)
    if not data:
        raise LayerWriteError("the layer-writing process died", hint="run with --debug, or report a bug")
    record: dict[str, Any] = json.loads(data)
    if "error" in record:
        raise LayerWriteError(record["error"], hint=record.get("hint"))
    result: _T = record["result"]
    return result


def _report(fn: Callable[..., object], args: tuple[object, ...], out_fd: int) -> None:
    """The child's side: run, then write one JSON record (result or error).  Never raises."""
    from .. import signals, syscalls

    record: dict[str, object]
    try:
        syscalls.set_pdeathsig(signals.SIGKILL)
        record = {"result": fn(*args)}
    except SandboxerError as e:
        record = {"error": e.message[:_RESULT_LIMIT], "hint": e.hint}
    except OSError as e:
        where = f" ({e.filename})" if e.filename else ""
        record = {"error": f"{e.strerror or e}{where}"[:_RESULT_LIMIT],
                  "hint": "the filesystem of the image store refused it"}
    except BaseException as e:
        record = {"error": f"{type(e).__name__}: {e}"[:_RESULT_LIMIT],
                  "hint": "this is a bug in sandboxer; please report it"}
    os.write(out_fd, json.dumps(record).encode())


# -- the image so far, as overlay would show it ---------------------------------------------------


# -- tar entries -----------------------------------------------------------------------------------


class _Entry(record("_Entry", "info source")):
    """A tar member and where its data comes from: a host path, an open file (an archive's member), or None."""

    info: tarfile.TarInfo
    source: str | IO[bytes] | None
    __slots__ = ()


def _xattrs(path: str) -> dict[str, str]:
    """The xattrs an image keeps, as pax headers; the drivers' own ones are dropped."""
    try:
        names = os.listxattr(path, follow_symlinks=False)
    except OSError:
        return {}
    out = {}
    for name in sorted(names):
        if name in _UNSUPPORTED_XATTRS:
            raise LayerWriteError(f"{path}: the overlay wrote {_UNSUPPORTED_XATTRS[name]} data, which a layer "
                                  "cannot hold", hint="build with --storage-driver fuse-overlayfs")
        if name.startswith(_DRIVER_XATTRS) or not (name.startswith("user.") or name == "security.capability"):
            continue
        try:
            value = os.getxattr(path, name, follow_symlinks=False)
        except OSError:
            continue
        out[f"SCHILY.xattr.{name}"] = value.decode("utf-8", "surrogateescape")
    return out


def _info(name: str, st: os.stat_result, *, owner: tuple[int, int] | None = None, mode: int | None = None,
          mtime: int | None = None) -> tarfile.TarInfo:
    ti = tarfile.TarInfo(name)
    ti.mode = stat.S_IMODE(st.st_mode) if mode is None else mode
    ti.uid, ti.gid = owner if owner is not None else (st.st_uid, st.st_gid)
    ti.mtime = int(st.st_mtime) if mtime is None else mtime
    if stat.S_ISDIR(st.st_mode):
        ti.type = tarfile.DIRTYPE
    elif stat.S_ISLNK(st.st_mode):
        ti.type = tarfile.SYMTYPE
        ti.mode = 0o777
    elif stat.S_ISFIFO(st.st_mode):
        ti.type = tarfile.FIFOTYPE
    else:
        ti.type = tarfile.REGTYPE
        ti.size = st.st_size
    return ti


def _new_dir(name: str, owner: tuple[int, int], mtime: int) -> tarfile.TarInfo:
    ti = tarfile.TarInfo(name)
    ti.type, ti.mode, ti.mtime = tarfile.DIRTYPE, 0o755, mtime
    ti.uid, ti.gid = owner
    return ti


def _marker(name: str, mtime: int) -> tarfile.TarInfo:
    """A whiteout or opaque marker: an empty regular file, as Docker writes them."""
    ti = tarfile.TarInfo(name)
    ti.mode, ti.mtime = 0o600, mtime
    return ti


def _write(out_fd: int, entries: Iterator[_Entry]) -> int:
    """Write the entries as a PAX tar to ``out_fd``; returns how many were written."""
    count = 0
    with os.fdopen(os.dup(out_fd), "wb") as raw, tarfile.open(
            fileobj=raw, mode="w", format=tarfile.PAX_FORMAT, encoding="utf-8", errors="surrogateescape") as tar:
        links: dict[tuple[int, int], str] = {}
        for entry in entries:
            ti, source = entry.info, entry.source
            if source is None:
                tar.addfile(ti)
            elif not isinstance(source, str):
                tar.addfile(ti, source)
            elif ti.type == tarfile.SYMTYPE:
                ti.linkname = os.readlink(source)
                tar.addfile(ti)
            elif ti.type != tarfile.REGTYPE:
                tar.addfile(ti)
            else:
                _add_file(tar, ti, source, links)
            count += 1
    return count


def _add_file(tar: tarfile.TarFile, ti: tarfile.TarInfo, path: str, links: dict[tuple[int, int], str]) -> None:
    """A regular file; a second name of an inode already written becomes a hardlink to the first."""
    st = os.lstat(path)
    key = (st.st_dev, st.st_ino)
    if st.st_nlink > 1 and key in links:
        ti.type, ti.linkname, ti.size = tarfile.LNKTYPE, links[key], 0
        tar.addfile(ti)
        return
    if st.st_nlink > 1:
        links[key] = ti.name
    with open(path, "rb") as f:
        if os.fstat(f.fileno()).st_size != ti.size:
            raise LayerWriteError(f"{path} changed size while it was being copied")
        tar.addfile(ti, f)


# -- RUN: an overlay upper directory ---------------------------------------------------------------


def write_upper_diff(upper: str, out_fd: int, fuse: bool) -> int:
    """Write the changes an overlay upper directory holds as a layer tar; returns the entry count.

    ``fuse``: fuse-overlayfs wrote it, so ``.wh.*`` names are its markers;
    under kernel overlayfs they are files a command made, which no layer
    can hold (they would read as whiteouts), so they are refused.
    """
    return _write(out_fd, _upper_entries(upper, "", fuse))


def _upper_entries(directory: str, prefix: str, fuse: bool) -> Iterator[_Entry]:
    """The tar entries of an upper directory, each directory before its content (depth first, by name).

    Walked with a list, not recursion: a RUN may nest directories deeper than Python's recursion limit.
    """
    stack = [_directory_entries(directory, prefix, fuse)]
    while stack:
        if not stack[-1]:
            stack.pop()
            continue
        entry, subdirectory = stack[-1].pop()
        yield entry
        if subdirectory is not None:
            stack.append(_directory_entries(subdirectory, entry.info.name, fuse))


def _directory_entries(directory: str, prefix: str, fuse: bool) -> list[tuple[_Entry, str | None]]:
    """One directory's entries for :func:`_upper_entries`, last first: with each subdirectory's host path."""
    names = sorted(os.listdir(directory))
    opaque = bool(prefix) and (is_opaque(directory) or (fuse and (OPAQUE_MARKER in names
                                                                     or _FUSE_OPAQUE_DEVICE in names)))
    children: list[tuple[str, str | None]] = []  # (name in the tar, host path; None: a whiteout)
    for name in names:
        path = os.path.join(directory, name)
        if name.startswith(WHITEOUT_PREFIX):
            if not fuse:
                raise LayerWriteError(f"the command created /{prefix + '/' if prefix else ''}{name}: names "
                                      f"starting with {WHITEOUT_PREFIX} cannot be stored in an image layer",
                                      hint="rename the file in the RUN command")
            if name not in (OPAQUE_MARKER, _FUSE_OPAQUE_DEVICE):
                children.append((name, None))  # fuse-overlayfs's whiteout file, where mknod failed
            continue
        st = os.lstat(path)
        if is_whiteout(st) or (stat.S_ISREG(st.st_mode) and st.st_size == 0 and _has_xattr(path, _WHITEOUT_XATTR)):
            children.append((WHITEOUT_PREFIX + name, None))
        else:
            children.append((name, path))
    out: list[tuple[_Entry, str | None]] = []
    if opaque:
        out.append((_Entry(_marker(f"{prefix}/{OPAQUE_MARKER}", int(os.lstat(directory).st_mtime)), None), None))
    for name, child in sorted(children):
        full = f"{prefix}/{name}" if prefix else name
        if child is None:
            out.append((_Entry(_marker(full, int(os.lstat(directory).st_mtime)), None), None))
            continue
        st = os.lstat(child)
        if stat.S_ISSOCK(st.st_mode) or stat.S_ISCHR(st.st_mode) or stat.S_ISBLK(st.st_mode):
            continue  # sockets are meaningless in an image; devices cannot be made rootless
        info = _info(full, st)
        info.pax_headers = _xattrs(child)
        out.append((_Entry(info, child), child if stat.S_ISDIR(st.st_mode) else None))
    out.reverse()
    return out


def _has_xattr(path: str, name: str) -> bool:
    try:
        os.getxattr(path, name, follow_symlinks=False)
        return True
    except OSError:
        return False


# -- COPY / ADD -------------------------------------------------------------------------------------


class CopyJob(record("CopyJob", "sources dest owner mode extract mtime")):
    """What one COPY/ADD writes: ``dest`` is absolute (a trailing ``/`` means "into this directory"),
    ``owner`` the ``--chown`` ids (None: 0:0), ``mode`` the ``--chmod`` (None: the source's), ``extract``
    unpacks local tar archives (ADD), ``mtime`` is given to directories the copy creates."""

    sources: list[Source]
    dest: str
    owner: tuple[int, int] | None
    mode: int | None
    extract: bool
    mtime: int
    __slots__ = ()


def write_copy(job: CopyJob, lowers: Sequence[str], out_fd: int, what: str) -> int:
    """Write the layer of a COPY/ADD over the image ``lowers``; returns the entry count."""
    view = MergedView(lowers)
    owner = job.owner or (0, 0)
    into = job.dest.endswith("/") or len(job.sources) > 1
    dest = view.resolve(job.dest)
    found = view.lookup(dest)
    dest_is_dir = not dest or (found is not None and stat.S_ISDIR(found[1].st_mode))
    if found is not None and not dest_is_dir and (into or any(s.is_dir for s in job.sources)):
        raise LayerWriteError(f"{what}: {job.dest} exists in the image and is not a directory")
    for src in job.sources:
        for name in [src.name, *(e.rel for e in src.entries)]:
            if any(part.startswith(WHITEOUT_PREFIX) for part in name.split("/")):
                raise LayerWriteError(f"{what}: {name}: names starting with {WHITEOUT_PREFIX} cannot be stored "
                                      "in an image layer", hint="rename the file, or exclude it in .containerignore")
    files: dict[tuple[str, ...], _Entry] = {}
    archives: list[tuple[list[str], str]] = []
    for src in job.sources:
        if src.is_dir:
            for e in src.entries:
                parts = (*dest, *e.rel.split("/"))
                if stat.S_ISDIR(e.st.st_mode):
                    _refuse_over_a_link(view, parts, what)
                files[parts] = _Entry(_info("/".join(parts), e.st, owner=owner, mode=_mode(job.mode, e.st)), e.path)
            continue
        if job.extract and _is_archive(src.path):
            archives.append((dest, src.path))
            continue
        if into or dest_is_dir:
            parts = (*dest, os.path.basename(src.name))
        else:  # a file named dest: a symlink there is replaced, not followed
            parts = (*view.resolve(os.path.dirname(job.dest)), os.path.basename(job.dest))
        files[parts] = _Entry(_info("/".join(parts), src.st, owner=owner, mode=_mode(job.mode, src.st)), src.path)
    need: set[tuple[str, ...]] = set()
    for parts in files:
        need.update(parts[:i] for i in range(1, len(parts)))
    if archives or any(s.is_dir for s in job.sources):
        need.update(tuple(dest[:i]) for i in range(1, len(dest) + 1))
    for parts in need - files.keys():
        files[parts] = _existing_or_new_dir(view, parts, owner, job.mtime, what)
    return _write(out_fd, _chain(sorted(files.items()), archives, what))


def _refuse_over_a_link(view: MergedView, parts: tuple[str, ...], what: str) -> None:
    """A directory of the source where the image has a symbolic link (``/lib -> usr/lib``): written as
    is, it would replace the link and hide what it leads to.  Refused, as BuildKit refuses it."""
    found = view.lookup(list(parts))
    if found is not None and stat.S_ISLNK(found[1].st_mode):
        target = os.readlink(found[0])
        raise LayerWriteError(f"{what}: /{'/'.join(parts)} is a symbolic link in the image (to {target}): "
                              "a directory cannot be copied over it",
                              hint="copy into where the link leads instead")


def _mode(mode: int | None, st: os.stat_result) -> int | None:
    return None if mode is None or stat.S_ISLNK(st.st_mode) else mode


def _existing_or_new_dir(view: MergedView, parts: tuple[str, ...], owner: tuple[int, int], mtime: int,
                         what: str) -> _Entry:
    """A parent directory: as the image has it (a layer's entry must not change its owner or mode), or new."""
    found = view.lookup(list(parts))
    name = "/".join(parts)
    if found is None:
        return _Entry(_new_dir(name, owner, mtime), None)
    path, st = found
    if not stat.S_ISDIR(st.st_mode):
        raise LayerWriteError(f"{what}: /{name} exists in the image and is not a directory")
    info = _info(name, st)
    info.pax_headers = _xattrs(path)
    return _Entry(info, None)


def _chain(entries: list[tuple[tuple[str, ...], _Entry]], archives: list[tuple[list[str], str]],
           what: str) -> Iterator[_Entry]:
    for _, entry in entries:
        yield entry
    for dest, path in archives:
        yield from _archive_entries(dest, path, what)


def _is_archive(path: str) -> bool:
    """A local tar (plain, gzip, bzip2 or xz) that ADD unpacks, as Docker decides: by content."""
    try:
        with tarfile.open(path, "r:*") as tar:
            return tar.next() is not None
    except (tarfile.TarError, OSError, EOFError):
        return False


def _archive_entries(dest: list[str], path: str, what: str) -> Iterator[_Entry]:
    """ADD of an archive: its members below ``dest``, owners and modes as the archive says."""
    links: set[tuple[str, ...]] = set()  # the archive's own symlinks: no later member may go through one
    with tarfile.open(path, "r:*", encoding="utf-8", errors="surrogateescape") as tar:
        for m in tar:
            parts = [p for p in m.name.split("/") if p not in ("", ".")]
            if ".." in parts:
                raise LayerWriteError(f"{what}: {os.path.basename(path)}: member {m.name!r} points outside "
                                      "the destination", hint="the archive is malformed or hostile")
            through = next((parts[:i] for i in range(1, len(parts)) if tuple(parts[:i]) in links), None)
            if through is not None:  # unpacked, it would write wherever the link points (the unpacker refuses it)
                raise LayerWriteError(f"{what}: {os.path.basename(path)}: member {m.name!r} goes through the "
                                      f"symlink {'/'.join(through)!r}", hint="the archive is malformed or hostile")
            if m.issym():
                links.add(tuple(parts))
            elif tuple(parts) in links:
                links.discard(tuple(parts))  # replaced by a directory or file of the same name
            if any(p.startswith(WHITEOUT_PREFIX) for p in parts):
                raise LayerWriteError(f"{what}: {os.path.basename(path)}: member {m.name!r} is a whiteout name",
                                      hint="an archive to unpack must not hold .wh.* names")
            if not parts or not (m.isreg() or m.isdir() or m.issym() or m.islnk() or m.isfifo()):
                continue
            ti = tarfile.TarInfo("/".join([*dest, *parts]))
            ti.type, ti.mode, ti.uid, ti.gid, ti.mtime = m.type, m.mode, m.uid, m.gid, int(m.mtime)
            ti.pax_headers = {k: v for k, v in m.pax_headers.items() if k.startswith("SCHILY.xattr.")}
            if m.islnk():
                target = [p for p in m.linkname.split("/") if p not in ("", ".")]
                if ".." in target:
                    raise LayerWriteError(f"{what}: {os.path.basename(path)}: hardlink {m.name!r} points outside")
                ti.linkname = "/".join([*dest, *target])
            elif m.issym():
                ti.linkname = m.linkname
            if m.isreg():
                ti.size = m.size
                yield _Entry(ti, tar.extractfile(m))
            else:
                yield _Entry(ti, None)


# -- WORKDIR -----------------------------------------------------------------------------------------


def write_workdir(path: str, owner: tuple[int, int], mtime: int, lowers: Sequence[str], out_fd: int,
                  what: str) -> int:
    """The layer that makes the WORKDIR ``path`` exist: 0 entries (nothing written) when it does."""
    view = MergedView(lowers)
    parts = view.resolve(path)
    missing = None
    for i in range(1, len(parts) + 1):
        found = view.lookup(parts[:i])
        if found is None:
            missing = i
            break
        if not stat.S_ISDIR(found[1].st_mode):
            raise LayerWriteError(f"{what}: /{'/'.join(parts[:i])} exists in the image and is not a directory")
    if missing is None:
        return 0
    entries = [_existing_or_new_dir(view, tuple(parts[:i]), (0, 0), mtime, what) for i in range(1, missing)]
    entries += [_Entry(_new_dir("/".join(parts[:i]), owner, mtime), None) for i in range(missing, len(parts) + 1)]
    return _write(out_fd, iter(entries))
