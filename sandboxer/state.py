"""Per-user runtime state: where running sandboxes keep their files.

Each sandbox owns ``<root>/<id>/``, and holds an exclusive ``flock`` on
``<root>/<id>/lock`` for as long as any of its processes lives (the lock fd
is inherited by the set-up processes and closed at exec).  A directory whose
lock can be taken belongs to a sandbox that is gone — a crash, a SIGKILL —
and the next run removes it (:func:`collect_garbage`).
"""

from __future__ import annotations

import errno
import fcntl
import os
import stat

from .errors import HostError, UsageError

__all__ = ["StateDir", "state_root", "new_id", "collect_garbage", "validate_name", "remove_tree",
           "create_locked_dir", "live_records", "running_record", "use_state_root", "Lock", "is_alive", "subdir"]

#: set by the OCI runtime's global ``--root DIR`` (see :func:`use_state_root`)
_ROOT_OVERRIDE: str | None = None


def use_state_root(path: str) -> None:
    """Keep this process's state (and its sandboxes') in ``path/sandboxer``, for runc's ``--root``.

    A subdirectory, because the garbage collector removes unlocked sandbox-like entries of the state
    root, and a tool may share its root with another runtime's containers.
    """
    global _ROOT_OVERRIDE
    path = os.path.abspath(path)
    try:
        os.makedirs(path, mode=0o700, exist_ok=True)
        st = os.lstat(path)
    except OSError as e:
        raise HostError(f"cannot create --root {path}: {e.strerror}") from e
    # a tool's own root (podman's may be 0755) is fine; one others can write to is not
    if not stat.S_ISDIR(st.st_mode) or st.st_uid != os.getuid() or st.st_mode & 0o022:
        raise HostError(f"--root {path} is not a directory owned by you and writable only by you")
    _ROOT_OVERRIDE = _ensure_private_dir(os.path.join(path, "sandboxer"))


def state_root() -> str:
    """``--root``, ``$SANDBOXER_STATE_DIR``, ``$XDG_RUNTIME_DIR/sandboxer``, or a private
    ``/tmp/sandboxer-UID`` fallback."""
    if _ROOT_OVERRIDE is not None:
        return _ROOT_OVERRIDE
    override = os.environ.get("SANDBOXER_STATE_DIR")
    if override:
        return _ensure_private_dir(override)
    xdg = os.environ.get("XDG_RUNTIME_DIR")
    if xdg and os.path.isdir(xdg) and os.access(xdg, os.W_OK):
        return _ensure_private_dir(os.path.join(xdg, "sandboxer"))
    return _ensure_private_dir(f"/tmp/sandboxer-{_outer_uid()}")


def _outer_uid() -> int:
    """Our uid outside our user namespace: the fallback state root is named by it, so that a process in a
    user namespace (the network holder, root of rootless podman's running us as its runtime) finds the
    user's directory rather than uid 0's — the real root's."""
    from .runtime.userns import read_idmap

    uid = os.getuid()
    try:
        outside = read_idmap("self").host_uid(uid)
    except (OSError, ValueError, TypeError):
        return uid
    return uid if outside is None else outside


def _ensure_private_dir(path: str) -> str:
    try:
        os.makedirs(path, mode=0o700, exist_ok=True)
        st = os.lstat(path)
    except OSError as e:
        raise HostError(f"cannot create state directory {path}: {e.strerror}",
                        hint="set SANDBOXER_STATE_DIR to a writable directory") from e
    if not stat.S_ISDIR(st.st_mode) or st.st_uid != os.getuid() or st.st_mode & 0o077:
        raise HostError(f"state directory {path} is not a private directory owned by you",
                        hint="remove it or set SANDBOXER_STATE_DIR")
    return path


def subdir(*names: str) -> str:
    """``<state root>/NAMES…``, made private (0700) if missing: records, OCI containers, the network holder."""
    path = os.path.join(state_root(), *names)
    os.makedirs(path, mode=0o700, exist_ok=True)
    return path


def new_id() -> str:
    """A 64-hex-digit sandbox id, as Docker's container ids."""
    return os.urandom(32).hex()


_NAME_OK = frozenset("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789_.-")


def validate_name(name: str, what: str = "sandbox name", longest: int = 128) -> str:
    """Names follow Docker's rule, ``[a-zA-Z0-9][a-zA-Z0-9_.-]*``: sandbox and network names, and the
    host names peers find in /etc/hosts (nothing in them can start another line or field)."""
    if not name or not name[0].isalnum() or not set(name) <= _NAME_OK or len(name) > longest:
        raise UsageError(f"invalid {what} {name!r}",
                         hint=f"use up to {longest} letters, digits, '_', '.', '-', starting with a letter or digit")
    return name


#: the note a sandbox of an image leaves in its state dir: the diff-ids it runs on (see 'image prune')
IMAGE_LAYERS = "image-layers"
#: prefix of state directories still being created (see :func:`create_locked_dir`)
_BUILDING = ".building-"
#: how long a directory being created that has no lock yet is left alone by the garbage collector
_BUILDING_GRACE_S = 60.0


class StateDir:
    """The state directory of one sandbox, locked while the sandbox lives.

    It holds ``lock`` and ``scratch/``, the mount point of the sandbox's
    private tmpfs (mounted only inside the sandbox's mount namespace).
    """

    __slots__ = ("id", "path", "lock_fd")

    def __init__(self, sandbox_id: str, path: str, lock_fd: int) -> None:
        self.id = sandbox_id
        self.path = path
        self.lock_fd = lock_fd

    @classmethod
    def create(cls, sandbox_id: str, name: str | None = None) -> StateDir:
        root = state_root()
        path = os.path.join(root, sandbox_id)
        fd = create_locked_dir(path, ("scratch",))
        if name is not None:
            try:
                cls._claim_name(root, name, sandbox_id)
            except BaseException:
                cls(sandbox_id, path, fd).release()
                raise
        return cls(sandbox_id, path, fd)

    @staticmethod
    def _claim_name(root: str, name: str, sandbox_id: str) -> None:
        """Names are symlinks ``<root>/names/<name> -> <id>``: creation is atomic."""
        names = os.path.join(root, "names")
        os.makedirs(names, mode=0o700, exist_ok=True)
        link = os.path.join(names, name)
        for _ in range(2):
            try:
                os.symlink(sandbox_id, link)
                return
            except FileExistsError:
                owner = os.readlink(link)
                if is_alive(os.path.join(root, owner)):
                    raise UsageError(f"the name {name!r} is in use by sandbox {owner[:12]}",
                                     hint="choose another --name or remove that sandbox") from None
                unlink_quiet(link)
        raise UsageError(f"could not claim the name {name!r}")

    def record(self, name: str, text: str) -> None:
        """Leave a note for other processes while this sandbox lives (e.g. the image layers it uses)."""
        with open(os.path.join(self.path, name), "w") as f:
            f.write(text)

    def release(self) -> None:
        """Remove the directory (and any name pointing at it), then drop the lock."""
        root = os.path.dirname(self.path)
        _remove_names_of(root, self.id)
        try:  # the usual, cheap case: the empty scratch mount point, the lock and the notes (record())
            os.rmdir(os.path.join(self.path, "scratch"))
            for entry in os.scandir(self.path):
                os.unlink(entry.path)
            os.rmdir(self.path)
        except OSError:
            _rmtree_any_owner(self.path)
        os.close(self.lock_fd)


class Lock:
    """An exclusive ``flock`` on ``path`` (created if missing) for the length of a ``with`` block.

    With ``transient``, the file is removed as the block ends, still locked: a lock per object being
    made (a blob, a layer) leaves nothing behind.  That is safe because every holder checks, once
    locked, that ``path`` is still the file it locked — a waiter that locked a removed one tries again.
    """

    __slots__ = ("path", "fd", "transient")

    def __init__(self, path: str, transient: bool = False) -> None:
        self.path = path
        self.fd = -1
        self.transient = transient

    def __enter__(self) -> None:
        while True:
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX)
                if _is_file_at(fd, self.path):
                    self.fd = fd
                    return
            except BaseException:
                os.close(fd)
                raise
            os.close(fd)  # its holder removed it while we waited: lock the one there now

    def __exit__(self, *_exc: object) -> None:
        if self.transient:
            unlink_quiet(self.path)
        os.close(self.fd)  # closing the last descriptor releases the lock


def remove_free_lock(path: str) -> bool:
    """Remove the transient :class:`Lock` file ``path`` if no one holds it (one a killed holder left)."""
    try:
        fd = os.open(path, os.O_RDWR | os.O_CLOEXEC)
    except FileNotFoundError:
        return False
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        return False
    else:
        if _is_file_at(fd, path):
            unlink_quiet(path)
            return True
        return False
    finally:
        os.close(fd)


def _is_file_at(fd: int, path: str) -> bool:
    try:
        at = os.stat(path)
    except FileNotFoundError:
        return False
    st = os.fstat(fd)
    return (st.st_dev, st.st_ino) == (at.st_dev, at.st_ino)


def unlink_quiet(path: str) -> None:
    try:
        os.unlink(path)
    except FileNotFoundError:
        pass


def _remove_names_of(root: str, sandbox_id: str) -> None:
    names = os.path.join(root, "names")
    try:
        entries = os.listdir(names)
    except FileNotFoundError:
        return
    for entry in entries:
        link = os.path.join(names, entry)
        try:
            if os.readlink(link) == sandbox_id:
                unlink_quiet(link)
        except OSError:
            pass


def create_locked_dir(path: str, subdirs: tuple[str, ...] = ()) -> int:
    """Create the directory ``path`` (and ``subdirs`` in it) already locked; returns the lock fd.

    It is built under a hidden name and renamed into place once locked, so
    another process's :func:`collect_garbage` never sees it unlocked.
    """
    parent, name = os.path.split(path)
    building = os.path.join(parent, f"{_BUILDING}{name}.{os.getpid()}")  # the creator, for gc
    os.mkdir(building, 0o700)
    try:
        fd = _lock_dir(building)
        for sub in subdirs:
            os.mkdir(os.path.join(building, sub), 0o700)
        os.rename(building, path)
    except BaseException:
        _rmtree_any_owner(building)
        raise
    return fd


def _lock_dir(path: str) -> int:
    """Hold ``path/lock`` for as long as the returned fd stays open (see :func:`collect_garbage`).

    The file is locked under another name and renamed into place, so a ``lock`` that exists is
    either held or abandoned — never one about to be taken."""
    pending = os.path.join(path, ".lock-new")
    fd = os.open(pending, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
    fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    os.write(fd, f"{os.getpid()}\n".encode())  # who made it (the pytest handle checks its server is its own)
    os.rename(pending, os.path.join(path, "lock"))
    return fd


def live_records(name: str) -> list[str]:
    """The ``name`` notes (see :meth:`StateDir.record`) of every sandbox of this user still running."""
    root = state_root()
    out = []
    for entry in os.listdir(root):
        path = os.path.join(root, entry)
        try:
            with open(os.path.join(path, name)) as f:
                text = f.read()
        except (FileNotFoundError, NotADirectoryError, IsADirectoryError):
            continue
        if is_alive(path):
            out.append(text)
    return out


def running_record(name_or_id: str, record: str) -> str | None:
    """The ``record`` note of the running sandbox called ``name_or_id`` (a name or an id prefix).

    None if it left no such note; a :class:`UsageError` if no such sandbox runs.
    """
    root = state_root()
    target = None
    try:
        target = os.readlink(os.path.join(root, "names", name_or_id))
    except OSError:
        if len(name_or_id) >= 4:
            matches = [e for e in os.listdir(root) if len(e) == 64 and e.startswith(name_or_id)]
            target = matches[0] if len(matches) == 1 else None
    path = os.path.join(root, target) if target else None
    if path is None or not is_alive(path):
        raise UsageError(f"no running sandbox {name_or_id!r}", hint="give the --name it was started with")
    try:
        with open(os.path.join(path, record)) as f:
            return f.read()
    except FileNotFoundError:
        return None


def is_alive(path: str) -> bool:
    """True while some process of that sandbox still holds its lock."""
    try:
        fd = os.open(os.path.join(path, "lock"), os.O_RDWR | os.O_CLOEXEC)
    except FileNotFoundError:
        return False
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError as e:
        if e.errno in (errno.EWOULDBLOCK, errno.EAGAIN):
            return True
        raise
    finally:
        os.close(fd)
    return False


def collect_garbage(root: str | None = None) -> list[str]:
    """Remove the state a crashed sandbox left; returns the ids removed.

    Only directories whose lock is free are touched, so running sandboxes
    (of this or any other process of the user) are never disturbed.
    """
    root = root or state_root()
    removed = []
    for entry in os.listdir(root):
        path = os.path.join(root, entry)
        # sandboxes; pytest's fixture handles, and writable layers of tests running (keep-, not kept-)
        ours = len(entry) == 64 or entry.startswith(("handle-", "keep-"))
        if entry.startswith(_BUILDING):  # a creator that died between mkdir and rename
            # its lock is free (a held one keeps it below); with no lock yet it may be an instant old,
            # unless the creator named in it is gone
            ours = os.path.lexists(os.path.join(path, "lock")) or _abandoned(path, _BUILDING_GRACE_S)
        if not ours or not os.path.isdir(path) or is_alive(path):
            continue
        _remove_names_of(root, entry)
        _rmtree_any_owner(path)
        removed.append(entry)
    return removed


def write_atomically(path: str, text: str) -> None:
    """Write ``text`` to ``path`` through ``PATH.PID.tmp`` and a rename: readers see the old file or
    the new, never half of one."""
    tmp = f"{path}.{os.getpid()}.tmp"
    with open(tmp, "w") as f:
        f.write(text)
    os.replace(tmp, path)


def stale_temporary(path: str) -> bool:
    """``path`` is a :func:`write_atomically` temporary whose writer was killed before its rename: the
    writer is gone, or the file is over a minute old (a write takes milliseconds)."""
    return _abandoned(path, 60, path[:-4])


def _abandoned(path: str, grace: float, name: str | None = None) -> bool:
    """``path``, named ``NAME.PID`` (``name`` if given, else its own), was left by its writer: that
    process is gone (:func:`sandboxer.procfs.writer_gone`), or ``path`` is over ``grace`` seconds old."""
    import time

    from .procfs import writer_gone

    try:
        age = time.time() - os.lstat(path).st_mtime
    except FileNotFoundError:
        return False
    writer = (name or path).rpartition(".")[2]
    return age > grace or (writer.isdecimal() and writer_gone(int(writer), age))


def remove_tree(path: str) -> None:
    """Remove a directory tree a sandbox wrote into, whoever inside owns its files."""
    _rmtree_any_owner(path)


def _rmtree_any_owner(path: str) -> None:
    """Remove a tree that may hold files owned by the user's subordinate ids.

    A sandbox with a disk-backed upper layer leaves files owned by mapped
    uids that the caller cannot unlink; those are removed from inside a user
    namespace with the same mapping.
    """
    from .rmtree import rmtree

    rmtree(path, ignore_errors=True)
    if os.path.lexists(path):
        from .runtime.userns import run_as_mapped_root

        run_as_mapped_root(_rmtree_ignoring_errors, path)


def _rmtree_ignoring_errors(path: str) -> None:
    from .rmtree import rmtree

    rmtree(path, ignore_errors=True)
