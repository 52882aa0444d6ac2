"""The per-user network namespace that carries the bridges of user-defined networks.

Rootless podman keeps one such namespace per user; so do we.  A *holder*
process — ``sleep infinity`` in a user namespace mapped like a sandbox's
(newuidmap/newgidmap) and a network namespace of its own — keeps both
alive; it is recorded in ``<state root>/netns/holder`` as ``PID START``
(start time in clock ticks, so a recycled pid is never mistaken for it).

Sandboxes on a user-defined network join the holder's user namespace
before making their own network namespace, so that namespace is owned by
it, and a helper that joins the holder's user and network namespaces
(:func:`run_inside`) has the rights to plug a veth pair between a bridge
and the sandbox.  Everything that changes the holder, the bridges or the
leases runs under :func:`lock`.  A holder that died (a reboot, a kill) is
replaced on the next use; the bridges are remade from the definitions as
sandboxes attach.  It is stopped when the last network is removed.
"""

from __future__ import annotations

import os
import select
import signal
from collections import namedtuple
from collections.abc import Callable

from .. import syscalls as sc
from ..errors import SetupError
from ..state import Lock, state_root, unlink_quiet, write_atomically

__all__ = ["Holder", "directory", "lock", "current", "ensure", "stop", "run_inside"]

_START_TIMEOUT_S = 10.0


class Holder(namedtuple("Holder", "pid started")):
    """The holder process: its pid and its start time (see :mod:`sandboxer.procfs`)."""

    pid: int
    started: int
    __slots__ = ()

    @property
    def user_ns(self) -> str:
        return f"/proc/{self.pid}/ns/user"

    @property
    def net_ns(self) -> str:
        return f"/proc/{self.pid}/ns/net"


def directory() -> str:
    """``<state root>/netns``: the holder record, the lock, the address leases."""
    path = os.path.join(state_root(), "netns")
    os.makedirs(path, mode=0o700, exist_ok=True)
    return path


def lock() -> Lock:
    return Lock(os.path.join(directory(), "lock"))


def current() -> Holder | None:
    """The running holder, or None."""
    from ..procfs import same_process

    try:
        with open(os.path.join(directory(), "holder")) as f:
            pid, started = map(int, f.read().split())
    except (OSError, ValueError):
        return None
    return Holder(pid, started) if same_process(pid, started) else None


def ensure() -> Holder:
    """The running holder, started if there is none.  Call it under :func:`lock`."""
    return current() or _start()


def stop() -> None:
    """Kill the holder (its namespaces, bridges and all, go with it).  Call it under :func:`lock`."""
    holder = current()
    if holder is not None:
        try:
            os.kill(holder.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
    unlink_quiet(os.path.join(directory(), "holder"))


def _start() -> Holder:
    """Fork the holder (detached: a new session, re-parented away from us), map its user namespace,
    and wait until it has exec'ed ``sleep``."""
    from ..procfs import start_time
    from ..programs import require
    from ..runtime.userns import default_idmap, write_idmap

    sleep = require("sleep")
    idmap = default_idmap()
    msg_r, msg_w = os.pipe2(os.O_CLOEXEC)
    go_r, go_w = os.pipe2(os.O_CLOEXEC)
    middle = os.fork()
    if middle == 0:  # pragma: no cover - runs in the child
        try:
            os.close(msg_r)
            os.close(go_w)
            os.setsid()
            if os.fork() == 0:
                _holder_main(sleep, msg_w, go_r)
        finally:
            os._exit(0)
    os.close(msg_w)
    os.close(go_r)
    try:
        os.waitpid(middle, 0)
        pid = _read_pid(msg_r)
        write_idmap(pid, idmap)
        os.write(go_w, b"g")
        os.close(go_w)
        go_w = -1
        # end of file: the holder exec'ed (its end is close-on-exec) or died; an error text otherwise
        error = _read_all(msg_r)
        started = start_time(pid)
        if error or started is None:
            raise SetupError("start the network namespace holder", error or "it exited at once")
    finally:
        os.close(msg_r)
        if go_w >= 0:
            os.close(go_w)
    holder = Holder(pid, started)
    write_atomically(os.path.join(directory(), "holder"), f"{pid} {started}\n")
    return holder


def _holder_main(sleep: str, msg_w: int, go_r: int) -> None:  # pragma: no cover - runs in the child
    """The holder's side: new user and network namespaces, wait for the maps, ``lo`` up, exec sleep."""
    try:
        sc.unshare(sc.CLONE_NEWUSER | sc.CLONE_NEWNET)
        os.write(msg_w, f"{os.getpid()}\n".encode())
        if os.read(go_r, 1) != b"g":
            os._exit(1)
        sc.interface_up("lo")
        null = os.open("/dev/null", os.O_RDWR)
        for fd in (0, 1, 2):  # never hold the caller's output open (a $(...) would wait for us)
            os.dup2(null, fd)
        keep = {0, 1, 2, msg_w}
        for entry in os.listdir("/proc/self/fd"):
            if int(entry) not in keep:
                try:
                    os.close(int(entry))
                except OSError:
                    pass
        for sig in (signal.SIGPIPE, signal.SIGXFSZ, signal.SIGINT):
            signal.signal(sig, signal.SIG_DFL)
        os.execv(sleep, [sleep, "infinity"])
    except BaseException as e:
        try:
            os.write(msg_w, f"\n{e}".encode())
        finally:
            os._exit(1)


def _read_pid(fd: int) -> int:
    if not select.select([fd], [], [], _START_TIMEOUT_S)[0]:
        raise SetupError("start the network namespace holder", "it did not answer")
    line = b""
    while not line.endswith(b"\n"):
        chunk = os.read(fd, 1)
        if not chunk:
            raise SetupError("start the network namespace holder", "it exited at once")
        line += chunk
    return int(line)


def _read_all(fd: int) -> str:
    data = b""
    while select.select([fd], [], [], _START_TIMEOUT_S)[0] and (chunk := os.read(fd, 512)):
        data += chunk
    return data.decode(errors="replace").strip()


def run_inside(holder: Holder, fn: Callable[..., object], *args: object) -> None:
    """Run ``fn(*args)`` in a forked helper that has joined the holder's user and network namespaces
    (root there: the rights over the bridges and over the namespaces of sandboxes on them).

    A :class:`SetupError` (or any error) in the helper is raised here with its message.
    """
    from ..runtime import sync

    msg_r, msg_w = os.pipe2(os.O_CLOEXEC)
    user = net = -1
    try:
        user = os.open(holder.user_ns, os.O_RDONLY | os.O_CLOEXEC)
        net = os.open(holder.net_ns, os.O_RDONLY | os.O_CLOEXEC)
    except OSError as e:
        for fd in (msg_r, msg_w, user, net):
            if fd >= 0:
                os.close(fd)
        raise SetupError("join the network namespace holder", e.strerror or str(e),
                         hint="it exited meanwhile: run the command again") from None
    pid = os.fork()
    if pid == 0:  # pragma: no cover - runs in the child
        code = 1
        try:
            os.close(msg_r)
            sc.setns(user, sc.CLONE_NEWUSER)
            sc.setns(net, sc.CLONE_NEWNET)
            fn(*args)
            code = 0
        except BaseException as e:
            sync.send_error(msg_w, e, "configure the network")
        finally:
            os._exit(code)
    for fd in (msg_w, user, net):
        os.close(fd)
    reader = sync.Reader(msg_r)
    try:
        message = reader.recv()
    finally:
        reader.close()
        _, status = os.waitpid(pid, 0)
    if message is not None and message[0] == "error":
        raise sync.error_from_fields(message)
    if os.waitstatus_to_exitcode(status) != 0:
        raise SetupError("configure the network", f"the helper ended with status {os.waitstatus_to_exitcode(status)}")
