"""The user-mode network stacks' processes: spawned with chosen fds, ready on a pipe, reaped when killed.

slirp4netns and pasta are both a helper process per sandbox that says
"ready" on a pipe we give it, and that we kill when the sandbox ends.  What
differs is how each dies with a caller that is itself killed: slirp4netns
watches an exit fd, pasta has none, so it is spawned with a parent-death
signal (:func:`spawn` with ``die_with_parent``).
"""

from __future__ import annotations

import os
import select

from ..errors import SetupError

TYPE_CHECKING = False
if TYPE_CHECKING:
    from . import PortMapping

__all__ = ["spawn", "wait_ready", "kill", "with_host_port", "last_line"]

READY_TIMEOUT_S = 10.0

#: killed helpers not yet reaped
_DYING: list[int] = []


def spawn(argv: list[str], keep: tuple[int, ...], log: str, *, die_with_parent: bool = False,
          detach: bool = False) -> int:
    """Start ``argv`` with stdin /dev/null, stdout+stderr to ``log`` and only ``keep`` inherited.

    ``die_with_parent``: the child gets SIGKILL when this thread dies
    (PR_SET_PDEATHSIG, as the sandbox's own set-up process has), which takes
    a fork instead of posix_spawn.  ``detach``: for a helper that outlives
    us (the network holder's slirp4netns) — in a session of its own, out of
    reach of the terminal's Ctrl-C, and not our child, so no long-lived
    caller (a pytest worker) keeps it as a zombie.
    """
    out = os.open(log, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, 0o600)
    null = os.open("/dev/null", os.O_RDONLY | os.O_CLOEXEC)
    try:
        if die_with_parent:
            return _fork_exec(argv, keep, null, out)
        actions = [(os.POSIX_SPAWN_DUP2, null, 0), (os.POSIX_SPAWN_DUP2, out, 1),
                   (os.POSIX_SPAWN_DUP2, out, 2)]
        actions += [(os.POSIX_SPAWN_DUP2, fd, fd) for fd in keep]  # dup2 onto itself clears close-on-exec
        if not detach:
            return os.posix_spawn(argv[0], argv, os.environ, file_actions=actions)
        return _spawn_detached(argv, actions)
    finally:
        os.close(out)
        os.close(null)


def _spawn_detached(argv: list[str], actions: list[tuple[int, int, int]]) -> int:
    """posix_spawn from a short-lived middle child in a new session; returns the grandchild's pid."""
    pid_r, pid_w = os.pipe2(os.O_CLOEXEC)
    middle = os.fork()
    if middle == 0:  # pragma: no cover - runs in the child
        code = 1
        try:
            os.close(pid_r)
            child = os.posix_spawn(argv[0], argv, os.environ, file_actions=actions, setsid=True)
            os.write(pid_w, str(child).encode())
            code = 0
        finally:
            os._exit(code)
    os.close(pid_w)
    try:
        os.waitpid(middle, 0)
        data = os.read(pid_r, 32)
    finally:
        os.close(pid_r)
    if not data:
        raise SetupError(f"start {os.path.basename(argv[0])}", "it could not be spawned")
    return int(data)


def _fork_exec(argv: list[str], keep: tuple[int, ...], null: int, out: int) -> int:
    from .. import signals, syscalls

    parent = os.getpid()
    env = dict(os.environ)
    child = os.fork()
    if child == 0:  # only async-signal-safe work from here: no locks, no imports
        try:
            syscalls.set_pdeathsig(signals.SIGKILL)
            if os.getppid() != parent:
                os._exit(125)  # the caller died before the signal was armed
            for sig in (signals.SIGPIPE, signals.SIGXFSZ):  # Python ignores them; an ignored SIGPIPE stops pasta
                signals.signal(sig, signals.SIG_DFL)
            os.dup2(null, 0)
            os.dup2(out, 1)
            os.dup2(out, 2)
            for fd in keep:
                os.set_inheritable(fd, True)
            os.execve(argv[0], argv, env)
        finally:
            os._exit(127)
    return child


def wait_ready(ready_r: int, child: int, what: str, log: str) -> bytes:
    """What the helper wrote on its ready pipe; a :class:`SetupError` with its last log line if nothing came."""
    readable, _, _ = select.select([ready_r], [], [], READY_TIMEOUT_S)
    data = os.read(ready_r, 64) if readable else b""
    if data:
        return data
    reason = last_line(log) or ("it did not get ready in time" if not readable else "it exited")
    kill(child, wait=True)
    raise SetupError(f"start {what}", reason, hint=f"see 'sandboxer doctor' ({what}, /dev/net/tun)")


def last_line(log: str) -> str:
    """The last non-blank line of a helper's log ("" if none): where its error, or traceback, ends."""
    try:
        with open(log, errors="replace") as f:
            lines = [line.strip() for line in f if line.strip()]
    except OSError:
        return ""
    return lines[-1] if lines else ""


def kill(pid: int, *, wait: bool = False) -> None:
    """SIGKILL a helper and reap it now if it is already gone, else later (see :func:`_reap_dead`).

    Its death takes 20-40 ms (the kernel tears down its tap device): not
    worth waiting for once the sandbox has ended.  A long-lived caller
    (pytest) reaps it on the next kill, init once the CLI exits.  A start
    that failed waits (``wait``): the error must find nothing left running.
    """
    try:
        os.kill(pid, 9)
    except ProcessLookupError:
        pass
    if wait:
        try:
            os.waitpid(pid, 0)
        except ChildProcessError:
            pass
        return
    _DYING.append(pid)
    _reap_dead()


def _reap_dead() -> None:
    for pid in list(_DYING):
        try:
            done, _ = os.waitpid(pid, os.WNOHANG)
        except ChildProcessError:
            done = pid
        if done:
            _DYING.remove(pid)


def with_host_port(mapping: PortMapping) -> PortMapping:
    """``mapping`` as given, or — with host port 0 (``-p CPORT``) — with a host port free right now
    (the stack binds it a few ms later)."""
    if mapping.host_port:
        return mapping
    import socket

    kind = socket.SOCK_STREAM if mapping.proto == "tcp" else socket.SOCK_DGRAM
    with socket.socket(socket.AF_INET, kind) as s:
        s.bind((mapping.host_ip, 0))
        return mapping._replace(host_port=int(s.getsockname()[1]))
