"""Unpack one image layer tarball into an overlay-ready lower-layer directory, rootless.

The unpacking runs in a forked child that is root of a user namespace mapped
like a sandbox's (``0 -> caller``, ``1..N -> subordinate ids``), so owners,
modes with setuid/setgid/sticky bits, mtimes, hardlinks and xattrs land on
disk as the image says; ``tarfile``'s extraction filters would drop them.

Layer whiteouts become what overlayfs reads in a user namespace
(``userxattr``) and what fuse-overlayfs reads: ``dir/.wh.NAME`` turns into a
0:0 character device ``NAME`` (allowed in a user namespace since Linux 5.8),
``dir/.wh..wh..opq`` into the xattr ``user.overlay.opaque=y`` on ``dir``.

Layers are untrusted.  Every entry is made with ``*at`` calls relative to
directory fds opened component by component with ``O_NOFOLLOW``, starting at
the layer directory, so no symlink or ``..`` can lead a write outside it; a
member that would go through a symlink or outside is refused, never skipped.
The tar is read as a stream: memory stays flat whatever the layer's size.
"""

from __future__ import annotations

import errno
import io
import json
import os
import re
import stat
import tarfile
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from typing import Any, TypeVar, cast

from ..errors import SandboxerError
from ..runtime.userns import IdMap, default_idmap, mapped_root_reply

__all__ = ["LayerError", "LayerStats", "CORRUPT_HINT", "LayerStream", "apply_layer", "layer_codec",
           "MAX_MEMBER_SIZE", "OPAQUE_XATTR"]

#: largest (apparent) size of one file; a sparse member can declare any size for free
MAX_MEMBER_SIZE = 16 << 30
#: what marks an opaque directory for kernel overlayfs with ``userxattr`` and for fuse-overlayfs (>= 1.x)
OPAQUE_XATTR = "user.overlay.opaque"

WHITEOUT_PREFIX = ".wh."
OPAQUE_MARKER = ".wh..wh..opq"
#: xattr prefixes the overlay drivers interpret: a layer must not set them itself
_DRIVER_XATTRS = ("user.overlay.", "user.fuseoverlayfs.", "user.containers.")

_CHUNK = 1 << 20
#: notes kept, and their length: the child's JSON record (non-ASCII escaped: up to 6 bytes a character)
#: must stay well below a pipe's 64 KiB, which nobody reads until the child has exited
_MAX_NOTES, _NOTE_LEN = 20, 200
#: what utime accepts: a 64-bit count of nanoseconds
_NS_RANGE = (-(1 << 63), (1 << 63) - 1)
_DIR_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")
_MAGIC = ((b"\x1f\x8b", "gz"), (b"BZh", "bz2"), (b"\xfd7zXZ\x00", "xz"), (b"\x28\xb5\x2f\xfd", "zst"))
_T = TypeVar("_T")
_HOSTILE = "the image is malformed or hostile; nothing was unpacked outside the layer directory"
CORRUPT_HINT = "the layer blob is damaged or truncated; remove the image and pull it again"


class LayerError(SandboxerError):
    """A layer could not be unpacked; the message names the layer and the member, ``problem`` says
    what was wrong without naming the layer (for a caller that names it its own way)."""

    def __init__(self, message: str, hint: str | None = None, problem: str | None = None) -> None:
        super().__init__(message, hint)
        self.problem = problem or message


@dataclass
class LayerStats:
    """What one layer held: ``files`` counts regular files and fifos, ``whiteouts`` the whiteout members,
    ``opaque_dirs`` the directories marked opaque; ``notes`` says what was skipped."""

    files: int = 0
    dirs: int = 0
    symlinks: int = 0
    hardlinks: int = 0
    whiteouts: int = 0
    opaque_dirs: int = 0
    skipped_devices: int = 0
    notes: list[str] = field(default_factory=list)
    #: the sha256 of the whole uncompressed tar as it was read (the layer's diff-id), ``sha256:HEX``
    diff_id: str = ""


def apply_layer(src: str, dest: str, *, label: str = "") -> LayerStats:
    """Unpack the layer tarball ``src`` (plain, gzip, bzip2, xz, or zstd with ``zstandard``) into ``dest``.

    ``dest`` must be an existing empty directory of the caller; its own
    owner and mode are left alone (the store renames it into place, and
    overlay takes the root's attributes from the upper layer anyway).  On
    error, whatever was written stays inside ``dest``, for the caller to remove.
    """
    name = label or os.path.basename(src)
    src_fd = _open(src, os.O_RDONLY | os.O_CLOEXEC, f"layer {name}: cannot read {src}")
    try:
        codec = layer_codec(src_fd, name)
        dest_fd = _open(dest, _DIR_FLAGS, f"layer {name}: cannot open the layer directory {dest}")
        try:
            if os.listdir(dest_fd):
                raise LayerError(f"layer {name}: the layer directory {dest} is not empty",
                                 hint="unpack into a fresh directory")
            record = _run_unpacker(src_fd, dest_fd, codec)
        finally:
            os.close(dest_fd)
    finally:
        os.close(src_fd)
    if "error" in record:
        raise LayerError(f"layer {name}: {record['error']}", hint=record.get("hint") or None, problem=record["error"])
    return LayerStats(**record["stats"])


def _open(path: str, flags: int, what: str) -> int:
    try:
        return os.open(path, flags)
    except OSError as e:
        raise LayerError(f"{what}: {e.strerror}") from None


def layer_codec(fd: int, name: str) -> str:
    """The compression, from the magic bytes: "gz", "bz2", "xz", "zst", or "" for a plain tar."""
    head = os.pread(fd, 8, 0)
    codec = next((c for magic, c in _MAGIC if head.startswith(magic)), "")
    if codec == "zst":
        try:
            _zstandard()
        except ImportError:
            raise LayerError(f"layer {name} is zstd-compressed and the 'zstandard' module is not installed",
                             hint="pip install zstandard (into sandboxer's environment)") from None
    return codec


def _run_unpacker(src_fd: int, dest_fd: int, codec: str) -> dict[str, Any]:
    """Unpack in a mapped user namespace; the child answers with one JSON record on a pipe.

    ``run_as_mapped_root`` waits for the child before we read: the record
    stays far below a pipe's 64 KiB (see ``_MAX_NOTES``), so it never blocks.
    The child hashes the uncompressed tar as it reads it: the caller checks the diff-id without a
    decompression of its own (~45 ms of a 20 MB gzip'd layer).
    """
    data = mapped_root_reply(_unpack_child, src_fd, dest_fd, codec, default_idmap())
    if not data:
        return {"error": "the unpacking process died", "hint": "run with --debug, or report a bug"}
    record: dict[str, Any] = json.loads(data)
    return record


def _unpack_child(src_fd: int, dest_fd: int, codec: str, idmap: IdMap, out_fd: int) -> None:
    """The child's side: unpack, then report stats or the one error.  Never raises."""
    from .. import signals, syscalls

    record: dict[str, object]
    try:
        syscalls.set_pdeathsig(signals.SIGKILL)
        os.umask(0)
        with LayerStream(src_fd, codec, hashed=True) as stream:
            with tarfile.open(fileobj=stream, mode="r|", encoding="utf-8", errors="surrogateescape") as tar:
                stats = _Unpacker(dest_fd, idmap).run(tar)
            stats.diff_id = stream.drain()  # the end-of-archive blocks after the last member count too
            record = {"stats": asdict(stats)}
    except LayerError as e:
        record = {"error": e.message, "hint": e.hint}
    except BaseException as e:  # the parent must hear of everything
        text, hint = _describe(e)
        record = {"error": text, "hint": hint}
    os.write(out_fd, json.dumps(record).encode())


class LayerStream(io.RawIOBase):
    """The layer's tar bytes, decompressed at most one read's worth at a time.

    tarfile's own stream decompression inflates a whole input buffer at
    once (1 MiB of gzip'd zeros is a gigabyte), so it gets a plain stream.
    Any failure to read or decompress is raised as a tar error.  ``hashed``: keep the sha256 of
    what was read, for :meth:`drain`.
    """

    def __init__(self, fd: int, codec: str, hashed: bool = False) -> None:
        super().__init__()
        if hashed:
            import hashlib

            self._digest: Any = hashlib.sha256()
        else:
            self._digest = None
        raw = open(fd, "rb", closefd=False)
        self._file: io.BufferedIOBase = raw
        if codec == "gz":
            import gzip

            self._file = gzip.GzipFile(fileobj=raw, mode="rb")
        elif codec == "bz2":
            import bz2

            self._file = bz2.BZ2File(raw)
        elif codec == "xz":
            import lzma

            self._file = lzma.LZMAFile(raw)
        elif codec == "zst":
            self._file = _zstandard().ZstdDecompressor().stream_reader(raw)

    def readable(self) -> bool:
        return True

    def close(self) -> None:
        if not self.closed:
            self._file.close()
        super().close()

    def readinto(self, buf: Any) -> int:
        try:
            data = self._file.read(len(buf))
        except Exception as e:
            raise tarfile.ReadError(f"{type(e).__name__}: {e}") from e
        buf[:len(data)] = data
        if self._digest is not None:
            self._digest.update(data)
        return len(data)

    def drain(self) -> str:
        """Read to the end; the sha256 of everything read (``hashed`` streams), as ``sha256:HEX``."""
        buffer = bytearray(_CHUNK)
        while self.readinto(buffer):
            pass
        return f"sha256:{self._digest.hexdigest()}" if self._digest is not None else ""


def _zstandard() -> Any:
    """The optional ``zstandard`` module (untyped; ImportError when not installed)."""
    import importlib

    return importlib.import_module("zstandard")


def _forget_headers(tar: tarfile.TarFile) -> None:
    """Drop the headers a stream reader keeps (``members``, absent from typeshed): memory would grow per member."""
    cast(Any, tar).members.clear()


def _describe(e: BaseException) -> tuple[str, str | None]:
    """An unexpected error as (message, hint): a bad stream, a refusing filesystem, or a bug."""
    if isinstance(e, tarfile.TarError):
        return f"the tar stream is corrupt or truncated ({type(e).__name__}: {e})", CORRUPT_HINT
    if isinstance(e, OSError):
        return e.strerror or str(e), "the filesystem of the layer directory refused it"
    return f"{type(e).__name__}: {e}", "this is a bug in sandboxer; please report it"


class _Refused(Exception):
    """A member the unpacker will not create; ``hint`` says why it matters."""

    def __init__(self, problem: str, hint: str = _HOSTILE) -> None:
        super().__init__(problem)
        self.hint = hint


def _show(name: str) -> str:
    """A member name fit for a one-line message: escaped, and not too long."""
    return repr(name if len(name) <= 200 else name[:200] + "...")


def _split(name: str) -> list[str]:
    """The path components of a member name; refuses what could point outside the layer."""
    if _CONTROL.search(name):
        raise _Refused("the name has control characters or NUL")
    if name.startswith("/"):
        raise _Refused("the path is absolute")
    parts = [p for p in name.split("/") if p not in ("", ".")]
    if ".." in parts:
        raise _Refused("the path has a '..' component")
    return parts


def _is_whiteout(st: os.stat_result) -> bool:
    return stat.S_ISCHR(st.st_mode) and st.st_rdev == 0


def _times(m: tarfile.TarInfo) -> tuple[int, int]:
    """(atime, mtime) in ns for utime: the member's mtime for both, clamped to what the kernel takes."""
    ns = min(max(int(m.mtime * 1_000_000_000), _NS_RANGE[0]), _NS_RANGE[1])
    return ns, ns


class _Unpacker:
    """Creates a layer's members under ``root`` (a directory fd), in tar order.

    Directory modes and mtimes are applied last, deepest first: a directory
    the layer makes read-only still gets its content, and creating that
    content does not disturb the recorded mtime.
    """

    def __init__(self, root: int, idmap: IdMap) -> None:
        self.root = root
        self.idmap = idmap
        self.stats = LayerStats()
        self.dirs: dict[str, tuple[int, int]] = {}  #: path -> (mode, mtime in ns), applied by _finish_dirs
        self.dropped_notes = 0
        self._parent: tuple[tuple[str, ...], int] | None = None  #: the last parent directory and its fd
        self._parent_stale = False  #: a directory was removed: the cached path may now lead elsewhere

    def run(self, tar: tarfile.TarFile) -> LayerStats:
        try:
            self._run(tar)
        finally:
            self._forget_parent()
        self._finish_dirs()
        if self.dropped_notes:
            self.stats.notes.append(f"... and {self.dropped_notes} more")
        return self.stats

    def _run(self, tar: tarfile.TarFile) -> None:
        while (m := tar.next()) is not None:
            _forget_headers(tar)
            try:
                self._member(tar, m)
            except _Refused as e:
                raise LayerError(f"member {_show(m.name)}: {e}", hint=e.hint) from None
            except Exception as e:
                text, hint = _describe(e)
                raise LayerError(f"member {_show(m.name)}: {text}", hint=hint) from None

    def _note(self, text: str) -> None:
        if len(self.stats.notes) < _MAX_NOTES:
            self.stats.notes.append(text[:_NOTE_LEN])
        else:
            self.dropped_notes += 1

    # -- one member ----------------------------------------------------------

    def _member(self, tar: tarfile.TarFile, m: tarfile.TarInfo) -> None:
        parts = _split(m.name)
        leaf = parts[-1] if parts else ""
        if leaf == OPAQUE_MARKER:
            return self._opaque(parts[:-1])
        if leaf.startswith(WHITEOUT_PREFIX + WHITEOUT_PREFIX):
            return self._note(f"{m.name}: aufs metadata skipped")
        if leaf.startswith(WHITEOUT_PREFIX):
            return self._whiteout(parts[:-1], leaf[len(WHITEOUT_PREFIX):])
        if not parts:
            if not m.isdir():
                raise _Refused("it would replace the layer's root directory with a non-directory")
            return None  # the root's own attributes stay the caller's (see apply_layer)
        if m.ischr() or m.isblk():
            self.stats.skipped_devices += 1
            return self._note(f"{m.name}: device {m.devmajor}:{m.devminor} skipped (needs privileges)")
        if not (m.isreg() or m.isdir() or m.issym() or m.islnk() or m.isfifo()):
            return self._note(f"{m.name}: unsupported member type {m.type!r} skipped")
        self._check_ids(m)
        path = "/".join(parts)
        parent = self._parent_fd(parts[:-1])
        if m.isdir():
            self._mkdir(parent, leaf, path, m)
        elif m.isreg():
            self._file(tar, parent, leaf, path, m)
        elif m.islnk():
            self._hardlink(parent, parts, m)
        elif m.issym():
            self._symlink(parent, leaf, path, m)
        else:
            self._fifo(parent, leaf, path, m)
        return None

    def _check_ids(self, m: tarfile.TarInfo) -> None:
        for kind, value, mapped, maps in (("uid", m.uid, self.idmap.maps_uid, self.idmap.uids),
                                          ("gid", m.gid, self.idmap.maps_gid, self.idmap.gids)):
            if not mapped(value):
                top = max(x.container_id + x.size for x in maps) - 1
                raise _Refused(f"owner {kind} {value} is outside the ids mapped for you (0..{top})",
                               hint=f"images need 65536 ids: give your user a range in /etc/sub{kind} "
                                    "(e.g. 'you:100000:65536'), then run 'sandboxer doctor'")

    def _mkdir(self, parent: int, leaf: str, path: str, m: tarfile.TarInfo) -> None:
        """A directory; over an earlier directory it merges (tar semantics), over anything else it replaces."""
        before = None
        try:
            os.mkdir(leaf, 0o700, dir_fd=parent)
        except FileExistsError:
            before = os.stat(leaf, dir_fd=parent, follow_symlinks=False)
            if not stat.S_ISDIR(before.st_mode):
                self._remove(parent, leaf, path, before)
                os.mkdir(leaf, 0o700, dir_fd=parent)
        fd = os.open(leaf, _DIR_FLAGS, dir_fd=parent)
        try:
            os.chown(fd, m.uid, m.gid)
            self._xattrs(fd, m)
            if before is not None and _is_whiteout(before):
                self._set_opaque(fd)  # deleted in the lower layers, then made anew here
        finally:
            os.close(fd)
        self.dirs[path] = (stat.S_IMODE(m.mode), _times(m)[1])
        self.stats.dirs += 1

    def _file(self, tar: tarfile.TarFile, parent: int, leaf: str, path: str, m: tarfile.TarInfo) -> None:
        if m.size > MAX_MEMBER_SIZE:
            raise _Refused(f"its size ({m.size} bytes{', sparse' if m.sparse else ''}) is over the "
                           f"limit of {MAX_MEMBER_SIZE} bytes")
        sparse = self._sparse_blocks(m)
        flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC
        fd = self._make(parent, leaf, path, lambda: os.open(leaf, flags, 0o600, dir_fd=parent))
        try:
            # the reader's raw file: unbuffered, and seekable (forward) in a stream, unlike the reader
            data: io.RawIOBase = cast(Any, tar.extractfile(m)).raw
            if sparse is None:
                _copy(data, fd, m.size)
            else:
                for offset, length in sparse:
                    data.seek(offset)  # blocks are checked to be in order: the stream only moves on
                    os.lseek(fd, offset, os.SEEK_SET)
                    _copy(data, fd, length)
                os.ftruncate(fd, m.size)  # the holes, never written, stay holes
            os.chown(fd, m.uid, m.gid)
            os.chmod(fd, stat.S_IMODE(m.mode))  # after chown, which clears setuid and setgid
            self._xattrs(fd, m)
            os.utime(fd, ns=_times(m))
        finally:
            os.close(fd)
        self.stats.files += 1

    @staticmethod
    def _sparse_blocks(m: tarfile.TarInfo) -> list[tuple[int, int]] | None:
        """A sparse member's (offset, length) data blocks, checked to be in order and inside the file."""
        sparse: list[tuple[int, int]] | None = getattr(m, "sparse", None)  # typeshed has it as bytes
        if sparse is None:
            return None
        end = 0
        for offset, length in sparse:
            if offset < end or length < 0 or offset + length > m.size:
                raise _Refused("its sparse map is invalid")
            end = offset + length
        return sparse

    def _hardlink(self, parent: int, parts: list[str], m: tarfile.TarInfo) -> None:
        """A hardlink to an entry made earlier in this layer, reached without following symlinks."""
        target = _split(m.linkname)
        if not target:
            raise _Refused("it is a hardlink to the layer's root directory")
        if target == parts:
            return  # a link to itself: already there
        try:
            with self._dir(target[:-1], create=False) as tparent:
                st = os.stat(target[-1], dir_fd=tparent, follow_symlinks=False)
                if stat.S_ISDIR(st.st_mode) or _is_whiteout(st):
                    raise _Refused(f"its hardlink target {_show(m.linkname)} is a directory or a whiteout")
                self._make(parent, parts[-1], "/".join(parts), lambda: os.link(
                    target[-1], parts[-1], src_dir_fd=tparent, dst_dir_fd=parent, follow_symlinks=False))
        except FileNotFoundError:
            raise _Refused(f"its hardlink target {_show(m.linkname)} does not exist earlier in the layer") from None
        self.stats.hardlinks += 1

    def _symlink(self, parent: int, leaf: str, path: str, m: tarfile.TarInfo) -> None:
        """A symlink's target is kept verbatim (absolute or not): nothing here ever follows it."""
        if "\x00" in m.linkname:
            raise _Refused("its symlink target has a NUL")
        self._make(parent, leaf, path, lambda: os.symlink(m.linkname, leaf, dir_fd=parent))
        self._finish_by_name(parent, leaf, m, chmod=False)
        self.stats.symlinks += 1

    def _fifo(self, parent: int, leaf: str, path: str, m: tarfile.TarInfo) -> None:
        self._make(parent, leaf, path, lambda: os.mkfifo(leaf, 0o600, dir_fd=parent))
        self._finish_by_name(parent, leaf, m, chmod=True)
        self.stats.files += 1

    def _whiteout(self, dir_parts: list[str], name: str) -> None:
        """``.wh.NAME``: a 0:0 character device, unless this layer has NAME itself.

        Whiteouts delete from the lower layers only (OCI image spec).  If
        NAME is already here, it hides the lower one anyway; a directory
        must also stop merging with the lower one: it becomes opaque.
        """
        if name in ("", ".", ".."):
            raise _Refused(f"it whites out {name!r}, which is not a name")
        self.stats.whiteouts += 1
        with self._dir(dir_parts, create=True) as parent:
            try:
                os.mknod(name, stat.S_IFCHR, os.makedev(0, 0), dir_fd=parent)
                return
            except FileExistsError:
                pass
            if stat.S_ISDIR(os.stat(name, dir_fd=parent, follow_symlinks=False).st_mode):
                fd = os.open(name, _DIR_FLAGS, dir_fd=parent)
                try:
                    self._set_opaque(fd)
                finally:
                    os.close(fd)

    def _opaque(self, dir_parts: list[str]) -> None:
        with self._dir(dir_parts, create=True) as fd:
            self._set_opaque(fd)

    def _set_opaque(self, fd: int) -> None:
        os.setxattr(fd, OPAQUE_XATTR, b"y")
        self.stats.opaque_dirs += 1

    # -- helpers -------------------------------------------------------------

    @contextmanager
    def _dir(self, parts: list[str], create: bool) -> Iterator[int]:
        """:meth:`_walk`, closing the fd afterwards."""
        fd = self._walk(parts, create)
        try:
            yield fd
        finally:
            os.close(fd)

    def _walk(self, parts: list[str], create: bool) -> int:
        """A new fd of the directory at ``parts`` under the root, reached without following any symlink.

        Missing directories are made (0755, owned by root) when ``create``:
        tar members need not list their parents.
        """
        fd = os.open(".", _DIR_FLAGS, dir_fd=self.root)
        try:
            for i, name in enumerate(parts):
                try:
                    sub = os.open(name, _DIR_FLAGS, dir_fd=fd)
                except FileNotFoundError:
                    if not create:
                        raise
                    os.mkdir(name, 0o755, dir_fd=fd)
                    sub = os.open(name, _DIR_FLAGS, dir_fd=fd)
                except OSError as e:
                    if e.errno not in (errno.ELOOP, errno.ENOTDIR):
                        raise
                    sub = self._through_non_dir(fd, name, "/".join(parts[:i + 1]), create)
                os.close(fd)
                fd = sub
        except BaseException:
            os.close(fd)
            raise
        return fd

    def _parent_fd(self, parts: list[str]) -> int:
        """:meth:`_walk` with ``create``, cached for the next member: members come grouped by directory.

        The fd stays right as long as no directory is removed (see :meth:`_remove`).
        """
        key = tuple(parts)
        if self._parent is None or self._parent[0] != key or self._parent_stale:
            self._forget_parent()
            self._parent = (key, self._walk(parts, create=True))
            self._parent_stale = False
        return self._parent[1]

    def _forget_parent(self) -> None:
        if self._parent is not None:
            os.close(self._parent[1])
            self._parent = None

    def _through_non_dir(self, parent: int, name: str, path: str, create: bool) -> int:
        """A path component that is not a directory: refused, unless it is a whiteout of this layer.

        ``.wh.x`` then ``x/y`` in one layer means: the lower ``x`` is gone, this
        layer has its own ``x``; that is an opaque directory.
        """
        st = os.stat(name, dir_fd=parent, follow_symlinks=False)
        if stat.S_ISLNK(st.st_mode):
            raise _Refused(f"the path goes through the symlink {_show(path)}")
        if not (create and _is_whiteout(st)):
            raise _Refused(f"the path goes through {_show(path)}, which is not a directory")
        os.unlink(name, dir_fd=parent)
        os.mkdir(name, 0o755, dir_fd=parent)
        fd = os.open(name, _DIR_FLAGS, dir_fd=parent)
        self._set_opaque(fd)
        return fd

    def _make(self, parent: int, leaf: str, path: str, create: Callable[[], _T]) -> _T:
        """Create a non-directory, replacing what an earlier member put there (tar semantics)."""
        try:
            return create()
        except FileExistsError:
            self._remove(parent, leaf, path, os.stat(leaf, dir_fd=parent, follow_symlinks=False))
            return create()

    def _remove(self, parent: int, leaf: str, path: str, st: os.stat_result) -> None:
        """Remove an earlier member's entry (a directory with all its content)."""
        if not stat.S_ISDIR(st.st_mode):
            os.unlink(leaf, dir_fd=parent)
            return
        from ..rmtree import rmtree

        rmtree(leaf, dir_fd=parent)  # fd-based: never follows a symlink inside
        self._parent_stale = True  # the cached parent may have been in there (still open for this member)
        prefix = path + "/"
        self.dirs = {p: v for p, v in self.dirs.items() if p != path and not p.startswith(prefix)}

    def _finish_by_name(self, parent: int, leaf: str, m: tarfile.TarInfo, chmod: bool) -> None:
        """Owner, mode, xattrs and times of an entry that cannot be opened (symlink, fifo)."""
        os.chown(leaf, m.uid, m.gid, dir_fd=parent, follow_symlinks=False)
        if chmod:
            os.chmod(leaf, stat.S_IMODE(m.mode), dir_fd=parent)  # a fifo we just made: nothing to follow
        self._xattrs(f"/proc/self/fd/{parent}/{leaf}", m)
        os.utime(leaf, ns=_times(m), dir_fd=parent, follow_symlinks=False)

    def _xattrs(self, target: int | str, m: tarfile.TarInfo) -> None:
        """The member's ``SCHILY.xattr.*``: user.* and file capabilities; others are noted and skipped.

        In a user namespace the kernel stores a v2 ``security.capability``
        as v3, bound to the namespace's root.  The overlay drivers' own
        xattrs are never taken from a layer.
        """
        for key, value in m.pax_headers.items():
            if not key.startswith("SCHILY.xattr."):
                continue
            name = key[len("SCHILY.xattr."):]
            if not (name.startswith("user.") or name == "security.capability") or name.startswith(_DRIVER_XATTRS):
                self._note(f"{m.name}: xattr {name} skipped")
                continue
            raw = value.encode("utf-8", "surrogateescape")  # tarfile decoded the bytes so
            try:
                if isinstance(target, str):
                    os.setxattr(target, name, raw, follow_symlinks=False)
                else:
                    os.setxattr(target, name, raw)
            except OSError as e:
                self._note(f"{m.name}: xattr {name} not set ({e.strerror})")

    def _finish_dirs(self) -> None:
        for path in sorted(self.dirs, key=lambda p: p.count("/"), reverse=True):
            mode, mtime = self.dirs[path]
            with self._dir(path.split("/"), create=False) as fd:
                os.chmod(fd, mode)
                os.utime(fd, ns=(mtime, mtime))


def _copy(src: io.RawIOBase, fd: int, length: int) -> None:
    """Copy ``length`` bytes in bounded chunks."""
    while length > 0:
        chunk = src.read(min(_CHUNK, length))
        if not chunk:
            raise tarfile.ReadError("unexpected end of data")
        view = memoryview(chunk)
        while view:
            view = view[os.write(fd, view):]
        length -= len(chunk)
