"""User namespace id maps: who the sandbox's root and users are on the host.

With a subordinate id range in ``/etc/subuid``/``/etc/subgid`` the map is
``0 -> caller`` plus ``1..N -> the range``, written by the setuid helpers
newuidmap/newgidmap.  Without one, the kernel lets an unprivileged process
map only its own id, after ``setgroups`` is denied: a single-id sandbox in
which ``chown`` to other ids fails.  Both are written by the parent for a
child that has just unshared its user namespace.
"""

from __future__ import annotations

import os
import pwd

from ..errors import SetupError
from ..programs import require

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Callable

__all__ = [
    "IdMap", "IdMapping", "read_id_ranges", "read_idmap", "default_idmap", "write_idmap",
    "run_as_mapped_root",
]


class IdMapping:
    """One line of a uid_map/gid_map: ``container_id host_id size``.  (Plain value classes, these two,
    not namedtuples: ``collections`` is ~1.5 ms of ``exec``'s start.)"""

    __slots__ = ("container_id", "host_id", "size")

    def __init__(self, container_id: int, host_id: int, size: int) -> None:
        self.container_id, self.host_id, self.size = container_id, host_id, size

    def __eq__(self, other: object) -> bool:
        return isinstance(other, IdMapping) and (self.container_id, self.host_id, self.size) == (
            other.container_id, other.host_id, other.size)

    def __hash__(self) -> int:
        return hash((self.container_id, self.host_id, self.size))

    def __repr__(self) -> str:
        return f"IdMapping({self.container_id}, {self.host_id}, {self.size})"


class IdMap:
    """The uid and gid maps of one user namespace."""

    __slots__ = ("uids", "gids")

    def __init__(self, uids: tuple[IdMapping, ...], gids: tuple[IdMapping, ...]) -> None:
        self.uids, self.gids = uids, gids

    def __eq__(self, other: object) -> bool:
        return isinstance(other, IdMap) and (self.uids, self.gids) == (other.uids, other.gids)

    def __hash__(self) -> int:
        return hash((self.uids, self.gids))

    def __repr__(self) -> str:
        return f"IdMap({self.uids!r}, {self.gids!r})"

    @property
    def single(self) -> bool:
        """True when one id of each kind is mapped: written without helpers,
        and ``setgroups`` is denied in such a namespace."""
        return (len(self.uids) == 1 and len(self.gids) == 1
                and self.uids[0].size == 1 and self.gids[0].size == 1)

    def maps_uid(self, uid: int) -> bool:
        return any(m.container_id <= uid < m.container_id + m.size for m in self.uids)

    def host_uid(self, uid: int) -> int | None:
        """The uid outside that ``uid`` inside stands for (None: unmapped)."""
        return next((m.host_id + uid - m.container_id for m in self.uids
                     if m.container_id <= uid < m.container_id + m.size), None)

    def maps_gid(self, gid: int) -> bool:
        return any(m.container_id <= gid < m.container_id + m.size for m in self.gids)

    def host_gid(self, gid: int) -> int | None:
        """The gid outside that ``gid`` inside stands for (None: unmapped)."""
        return next((m.host_id + gid - m.container_id for m in self.gids
                     if m.container_id <= gid < m.container_id + m.size), None)


def read_id_ranges(path: str, user: str, uid: int) -> list[tuple[int, int]]:
    """The (start, count) ranges of ``user`` in a subuid/subgid file.

    Entries match by name or by numeric id, as shadow's helpers do; a
    missing or unreadable file means no ranges.
    """
    ranges = []
    try:
        with open(path) as f:
            lines = f.read().splitlines()
    except OSError:
        return []
    for line in lines:
        parts = line.strip().split(":")
        if len(parts) != 3 or parts[0].startswith("#"):
            continue
        if parts[0] not in (user, str(uid)):
            continue
        try:
            start, count = int(parts[1]), int(parts[2])
        except ValueError:
            continue
        if count > 0 and (start, count) not in ranges:  # a line given twice (useradd's and an admin's)
            ranges.append((start, count))
    return ranges


def _user_name(uid: int) -> str:
    try:
        return pwd.getpwuid(uid).pw_name
    except KeyError:
        return str(uid)


def _with_ranges(own: int, ranges: list[tuple[int, int]]) -> tuple[IdMapping, ...]:
    maps = [IdMapping(0, own, 1)]
    next_id = 1
    for start, count in ranges:
        maps.append(IdMapping(next_id, start, count))
        next_id += count
    return tuple(maps)


def read_idmap(pid: int | str) -> IdMap:
    """The id maps of the user namespace of ``pid`` (or ``"self"``), as ``/proc`` shows them to us."""
    def read(kind: str) -> tuple[IdMapping, ...]:
        with open(f"/proc/{pid}/{kind}_map") as f:
            return tuple(IdMapping(*map(int, line.split())) for line in f if line.strip())

    return IdMap(read("uid"), read("gid"))


def default_idmap(root: str = "/") -> IdMap:
    """The map a sandbox of the caller gets: the full subordinate ranges if any.

    As root on the host, the sandbox maps 0..65535 straight through, as a
    rootful runtime would in a user namespace.
    """
    uid, gid = os.getuid(), os.getgid()
    if uid == 0:
        try:
            own = read_idmap("self")
        except (OSError, ValueError, TypeError):
            own = IdMap((), ())
        return IdMap(_root_map(own.uids), _root_map(own.gids))
    user = _user_name(uid)
    sub_u = read_id_ranges(os.path.join(root, "etc/subuid"), user, uid)
    sub_g = read_id_ranges(os.path.join(root, "etc/subgid"), user, uid)
    if not sub_u or not sub_g:
        return IdMap((IdMapping(0, uid, 1),), (IdMapping(0, gid, 1),))
    return IdMap(_with_ranges(uid, sub_u), _with_ranges(gid, sub_g))


def _root_map(own: tuple[IdMapping, ...]) -> tuple[IdMapping, ...]:
    """Root's map, given root's ``own``: 0..65535 straight through — or, when root is itself in a user
    namespace (rootless podman's, whose runtime sandboxer may be), its own ids straight through, one
    line per line of its own map: the kernel refuses a line that spans two of the parent's."""
    if not own or own == (IdMapping(0, 0, 4294967295),):
        return (IdMapping(0, 0, 65536),)
    return tuple(IdMapping(m.container_id, m.container_id, m.size) for m in own)


def _spawn_helper(name: str, pid: int, maps: tuple[IdMapping, ...]) -> tuple[int, int]:
    """Start newuidmap/newgidmap with stderr to a pipe; returns (pid, read fd)."""
    argv = [name, str(pid)]
    for m in maps:
        argv += [str(m.container_id), str(m.host_id), str(m.size)]
    r, w = os.pipe2(os.O_CLOEXEC)
    try:
        child = os.posix_spawn(require(name), argv, os.environ,
                               file_actions=[(os.POSIX_SPAWN_DUP2, w, 2)])
    finally:
        os.close(w)
    return child, r


def _finish_helper(name: str, child: int, errfd: int) -> None:
    with os.fdopen(errfd, "rb") as f:
        err = f.read().decode(errors="replace").strip()
    _, status = os.waitpid(child, 0)
    if os.waitstatus_to_exitcode(status) != 0:
        raise SetupError(f"write id map ({name})", err.splitlines()[-1] if err else "failed",
                         hint="check the ranges in /etc/subuid and /etc/subgid "
                              "and that the helper is setuid root (uidmap package)")


def _write_proc(path: str, text: str, step: str) -> None:
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CLOEXEC)
        try:
            os.write(fd, text.encode())
        finally:
            os.close(fd)
    except OSError as e:
        raise SetupError(step, e.strerror or str(e)) from e


def write_idmap(pid: int, idmap: IdMap) -> None:
    """Write the maps of the user namespace ``pid`` has just unshared.

    The two helpers run concurrently: each costs 1.5-2.5 ms, mostly exec.
    """
    if idmap.single or os.getuid() == 0:
        if os.getuid() != 0:
            _write_proc(f"/proc/{pid}/setgroups", "deny", "deny setgroups")
        _write_proc(f"/proc/{pid}/uid_map", _lines(idmap.uids), "write uid map")
        _write_proc(f"/proc/{pid}/gid_map", _lines(idmap.gids), "write gid map")
        return
    uhelper = _spawn_helper("newuidmap", pid, idmap.uids)
    try:
        ghelper = _spawn_helper("newgidmap", pid, idmap.gids)
    finally:
        _finish_helper("newuidmap", *uhelper)
    _finish_helper("newgidmap", *ghelper)


def _lines(maps: tuple[IdMapping, ...]) -> str:
    return "".join(f"{m.container_id} {m.host_id} {m.size}\n" for m in maps)


def run_as_mapped_root(fn: Callable[..., object], *args: object) -> None:
    """Run ``fn(*args)`` in a forked child that is root of a fresh user namespace
    mapped like a sandbox's, so it can touch files owned by the user's subuids.
    """
    from .. import syscalls

    idmap = default_idmap()
    ready_r, ready_w = os.pipe2(os.O_CLOEXEC)
    go_r, go_w = os.pipe2(os.O_CLOEXEC)
    pid = os.fork()
    if pid == 0:  # pragma: no cover - runs in the child
        code = 1
        try:
            os.close(ready_r)
            os.close(go_w)
            syscalls.unshare(syscalls.CLONE_NEWUSER)
            os.write(ready_w, b"1")
            if os.read(go_r, 1) == b"1":
                fn(*args)
                code = 0
        finally:
            os._exit(code)
    os.close(ready_w)
    os.close(go_r)
    try:
        if os.read(ready_r, 1) == b"1":
            write_idmap(pid, idmap)
            os.write(go_w, b"1")
    finally:
        os.close(ready_r)
        os.close(go_w)
        os.waitpid(pid, 0)


def mapped_root_reply(fn: Callable[..., object], *args: object) -> bytes:
    """Like :func:`run_as_mapped_root`, and return what the child wrote to the fd it gets as last argument.

    The reply is read after the child exits, so it must stay below a pipe's
    64 KiB; an empty reply means the child died before answering.
    """
    r, w = os.pipe2(os.O_CLOEXEC)
    try:
        run_as_mapped_root(fn, *args, w)
        os.close(w)
        w = -1
        with os.fdopen(r, "rb", closefd=False) as f:
            return f.read()
    finally:
        os.close(r)
        if w >= 0:
            os.close(w)
