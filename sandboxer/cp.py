"""``sandboxer cp``: copy files and directories between the host and a running sandbox.

docker cp's rules: into an existing directory a source goes under its own
name (``SRC/.``: its contents); to a path that does not exist it takes that
name (the parent must exist); a directory never overwrites a file.

The sandbox's side runs as an ``exec`` does — in all its namespaces, as its
root with the workload's capability bounding set and seccomp filter — so
its paths, symlinks included, resolve inside the sandbox and can never
reach a host file.  The two sides talk over a pipe in tar format; the host
side writes only under the destination it was given (no absolute or
``..`` names, nothing written through a symlink, no setuid bits).  Nothing
in the sandbox's filesystem is loaded as code: the worker imports nothing
and resolves no user names (numeric owners only).
"""

from __future__ import annotations

import os
import stat
import sys
import tarfile

from .errors import UsageError

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Callable, Iterator
    from typing import Any

__all__ = ["copy", "split_target"]


def split_target(arg: str) -> tuple[str | None, str]:
    """``NAME:PATH`` → (NAME, PATH); a host path → (None, PATH). ``./a:b`` is a host path."""
    name, sep, path = arg.partition(":")
    if sep and name and "/" not in name:
        return name, path or "/"
    return None, arg


class _Probe:
    """What a path is: ``dir``, ``file`` (anything not a directory), ``missing`` or ``noparent``.

    A source that is a symlink is copied as the link (``follow`` false), as docker does; a
    destination that is one is followed.
    """

    @staticmethod
    def of(path: str, follow: bool = True) -> str:
        try:
            st = os.stat(path) if follow else os.lstat(path.rstrip("/") or "/")
        except FileNotFoundError:
            parent = os.path.dirname(path.rstrip("/")) or "/"
            return "missing" if os.path.isdir(parent) else "noparent"
        except NotADirectoryError:
            return "noparent"
        return "dir" if stat.S_ISDIR(st.st_mode) else "file"


def _plan(src: str, src_kind: str, dst: str, dst_kind: str) -> tuple[str, str]:
    """Where the copy lands: (the directory to unpack in, the name to give the source)."""
    contents = src.endswith("/.") or src.endswith("/./")
    if src_kind in ("missing", "noparent"):
        raise UsageError(f"no such file or directory: {src}",
                         hint="a path in the sandbox is written NAME:/path; a host path is relative to here")
    if dst_kind == "noparent":
        raise UsageError(f"no such directory: {os.path.dirname(dst.rstrip('/')) or '/'}",
                         hint="the destination's parent directory must exist")
    if dst_kind == "dir":
        return dst, "." if contents and src_kind == "dir" else os.path.basename(os.path.normpath(src))
    if src_kind == "dir" and dst_kind == "file":
        raise UsageError(f"cannot copy a directory onto the file {dst}",
                         hint="give a directory (or a new name) as the destination")
    if dst_kind == "missing" and dst.endswith("/") and src_kind != "dir":
        raise UsageError(f"no such directory: {dst}", hint="a destination ending in / must be a directory")
    target = os.path.normpath(dst)
    return os.path.dirname(target) or "/", os.path.basename(target)


def copy(record: dict[str, Any], src: str, dst: str, into: bool) -> None:
    """Copy host ``src`` into the sandbox's ``dst`` (``into``), or the sandbox's ``src`` to host ``dst``."""
    inside = dst if into else src
    inside = inside if inside.startswith("/") else "/" + inside  # relative to its root, as docker
    host = src if into else dst
    suffix = "/." if host.endswith("/.") else "/" if host.endswith("/") else ""
    host = os.path.abspath(host).rstrip("/") + suffix
    src, dst = (host, inside) if into else (inside, host)
    if into:
        src_kind = _Probe.of(src, follow=src.endswith("/") or src.endswith("/."))
        dst_kind = _probe_inside(record, inside, follow=True)
        directory, name = _plan(src, src_kind, inside, dst_kind)
        _in_sandbox(record, lambda fd: _unpack(fd, directory, numeric=True),
                    lambda fd: _pack(fd, src, name, owner=0), to_sandbox=True)
    else:
        src_kind = _probe_inside(record, inside, follow=inside.endswith("/") or inside.endswith("/."))
        directory, name = _plan(inside, src_kind, dst, _Probe.of(dst))
        _in_sandbox(record, lambda fd: _pack(fd, inside, name, owner=None),
                    lambda fd: _unpack(fd, directory, numeric=False), to_sandbox=False)


def _probe_inside(record: dict[str, Any], path: str, follow: bool) -> str:
    reply: list[bytes] = []

    def read(fd: int) -> None:
        with os.fdopen(fd, "rb") as f:
            reply.append(f.read())

    def probe(fd: int) -> int:
        os.write(fd, _Probe.of(path, follow).encode())
        return 0

    _in_sandbox(record, probe, read, to_sandbox=False)
    return reply[0].decode() if reply and reply[0] else "missing"


def _pack(fd: int, path: str, name: str, owner: int | None) -> int:
    """Write ``path`` as a tar stream (named ``name``) to ``fd``; ``owner``: give every entry that uid/gid."""
    def reown(info: tarfile.TarInfo) -> tarfile.TarInfo:
        if owner is not None:
            info.uid = info.gid = owner
        info.uname = info.gname = ""
        return info

    with os.fdopen(fd, "wb") as f, tarfile.open(fileobj=f, mode="w|", format=tarfile.PAX_FORMAT) as tar:
        tar.add(path.rstrip("/") if path.rstrip("/") else "/", arcname=name, filter=reown)
    return 0


def _unpack(fd: int, directory: str, numeric: bool) -> int:
    """Unpack the tar stream on ``fd`` under ``directory`` (never outside it)."""
    with os.fdopen(fd, "rb") as f, tarfile.open(fileobj=f, mode="r|") as tar:
        tar.extractall(directory, members=_contained(tar, directory), numeric_owner=numeric)
    return 0


def _contained(tar: tarfile.TarFile, directory: str) -> Iterator[tarfile.TarInfo]:
    """The archive's entries, checked to land under ``directory`` (Python 3.11.2 has no tarfile filters).

    Names and hard-link targets must be relative without ``..``; no directory on the way may be a
    symlink (an earlier entry could have made one that leads out); an existing symlink in the place
    of an entry is removed rather than written through; setuid/setgid bits are dropped; device
    nodes are skipped (an unprivileged copy cannot make them) with a notice, and a copy of nothing
    but a device node is an error.
    """
    copied = 0
    for member in tar:
        _check_path(directory, member.name, "entry")
        if member.islnk():
            _check_path(directory, member.linkname, "hard link target")
        if member.ischr() or member.isblk():
            if copied:
                print(f"sandboxer: notice: {member.name!r} is a device node: not copied", file=sys.stderr)
                continue
            raise UsageError(f"{member.name!r} is a device node: an unprivileged copy cannot make one",
                             hint="copy a regular file (e.g. 'head -c N /dev/zero > FILE' first)")
        copied += 1
        target = os.path.join(directory, member.name)
        if member.name.strip("/.") and os.path.islink(target):
            os.unlink(target)
        member.mode &= ~(stat.S_ISUID | stat.S_ISGID)
        yield member


def _check_path(directory: str, name: str, what: str) -> None:
    parts = [p for p in name.split("/") if p not in ("", ".")]
    if name.startswith("/") or ".." in parts:
        raise UsageError(f"refusing {what} {name!r} of the copied archive: it leads outside the destination")
    path = directory
    for part in parts[:-1]:
        path = os.path.join(path, part)
        if os.path.islink(path):
            raise UsageError(f"refusing {what} {name!r} of the copied archive: {path} is a symlink")


def _in_sandbox(record: dict[str, Any], inside: Callable[[int], int], outside: Callable[[int], object],
                to_sandbox: bool) -> None:
    """Run ``inside(fd)`` as the sandbox's root in its namespaces and ``outside(fd)`` here, joined by a pipe."""
    from .runtime import sync
    from .runtime.enter import ExecOptions, enter

    if record["status"] != "running" or "exec" not in record:
        raise UsageError(f"sandbox {record.get('name') or record['id'][:12]} is not running",
                         hint="cp needs a running sandbox (its files live as long as it does)")
    r, w = os.pipe2(os.O_CLOEXEC)
    ours, theirs = (w, r) if to_sandbox else (r, w)
    err_r, err_w = os.pipe2(os.O_CLOEXEC)  # the worker's error, if any, as a set-up error message
    open_fds = {r, w}  # each end is closed exactly once, here or by the side that owns it

    def worker() -> int:
        os.close(ours)
        tarfile.pwd = tarfile.grp = None  # type: ignore[attr-defined]  # no NSS modules from the sandbox
        try:
            return inside(theirs)
        except BaseException as e:  # sent back on its own pipe: the message pipe is closed by now
            sync.send_error(err_w, e, "in the sandbox")
            return 1

    def here() -> None:
        os.close(theirs)
        open_fds.clear()
        outside(ours)

    bounding = record["exec"]["caps"][0]
    # its root, with the capabilities root has in it (whoever its workload runs as), bounded as it is
    identity = dict(record["exec"], uid=0, gid=0, groups=[], caps=[bounding, bounding, bounding, 0, 0])
    try:
        code = enter(int(record["pid"]), identity, ["cp"], [], "/",
                     ExecOptions(call=worker, alongside=here, pass_fds=(r, w, err_w)),
                     started=record.get("pid_start"))
    finally:
        for fd in open_fds:  # the command never started
            os.close(fd)
        os.close(err_w)
        reader = sync.Reader(err_r)
        reported = reader.recv()
        reader.close()
    if code != 0:
        if reported and reported[0] == "error":
            raise sync.error_from_fields(reported)
        from .errors import SandboxerError

        raise SandboxerError("copy failed inside the sandbox")
