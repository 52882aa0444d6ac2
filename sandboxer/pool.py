"""Sandboxes set up ahead of time, parked, and joined by their caller: the pytest plugin's fast path.

Set up the ordinary way, a sandbox for an in-process workload (a test)
costs its caller two copies of itself — the set-up process and PID 1 are
forks of it — and for a process the size of pytest's, much of a test's
cost was the kernel copying, faulting in and tearing down those copies
(README, "Speed").  A *pool* is a small process of its own (a fresh,
single-threaded interpreter) that sets sandboxes up the ordinary way
(:func:`sandboxer.sandbox.prepare`, :func:`sandboxer.runtime.launcher.start`)
with a PID 1 that only reaps orphans, one ahead of need: on another core,
while the current test runs.  The caller joins one with setns, as
``sandboxer exec`` does (:func:`sandboxer.runtime.enter.enter_status`),
its workload taking the identity the sandbox's own workload would have
had; once the workload has ended, the caller releases the sandbox and the
pool kills its PID 1, which ends its namespaces and mounts, and releases
its state.

With subordinate ids, the pool unshares a user namespace of its own, which
its client maps once (newuidmap, newgidmap); each sandbox's user namespace
is a child of it, and the pool writes its maps itself, its own ids
straight through — the two set-uid helpers are not run for every sandbox.

Lifetimes: the pool exits at end of file on its socket, killing its
sandboxes, and dies with its client (a death signal); each sandbox's
set-up process and PID 1 die with their parent in turn.  What a SIGKILL
leaves — state directories — the next run's garbage collection removes,
as for any sandbox.

Protocol: one JSON object per line on a socketpair.  The client sends
``{"get": [OPTIONS, SETTINGS]}`` — a :class:`~sandboxer.sandbox.SandboxOptions`
as an object, and the environment variables that steer sandboxer — and
reads ``{"ready": PARKED}`` or ``{"error": [MODULE, CLASS, MESSAGE,
HINT]}``; it sends ``{"release": ID}``, which has no answer.
"""

from __future__ import annotations

import json
import os
import sys

from . import signals
from .errors import SandboxerError
from .records import record

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Callable, Mapping
    from typing import Any

    from .runtime.launcher import Started
    from .runtime.process import ExitStatus
    from .sandbox import SandboxOptions

__all__ = ["Pool", "Parked", "join", "poolable", "serve"]

#: besides SANDBOXER_* and XDG_*: see :func:`_settings`
_SETTINGS = frozenset(("PATH", "HOME", "TERM", "NO_COLOR", "REGISTRY_AUTH_FILE", "PYTHONPATH"))
#: idle sandboxes kept beyond the one being handed out (different options each); the oldest goes first
_MAX_IDLE = 4


class Parked(record("Parked", "id pid start identity")):
    """A sandbox waiting to be joined: its id, PID 1's host PID and start time, and the identity its
    workload takes (:func:`sandboxer.runtime.enter.identity_of`)."""

    id: str
    pid: int
    start: int
    identity: dict[str, Any]
    __slots__ = ()


def poolable(opts: SandboxOptions) -> bool:
    """Whether a pool can set up this sandbox ahead of time: options that are plain data; no
    writable layer kept on disk (that one is per run, and the caller reads it afterwards); not on a
    user-defined network (its holder's user namespace is out of reach from the pool's own); and no
    third-party plugin — a cgroup or network plugin attaches the set-up process, and the workload
    that joins later would run outside what it attached."""
    from .network import USER_DEFINED, mode_of
    from .plugins import external_entry_points

    return (opts.upper_dir is None and (opts.image is None or isinstance(opts.image, str))
            and mode_of(opts.network) is not USER_DEFINED and not external_entry_points())


class Pool:
    """The client's end: starts the pool process on first use; one request at a time."""

    def __init__(self) -> None:
        self._sock: Any = None
        self._proc: Any = None
        self._lines = _Lines(-1)
        self._greeted = False

    def warm(self) -> None:
        """Start the pool process now, so that its start-up overlaps the caller's own work."""
        if self._sock is None:
            self._start()

    def get(self, opts: SandboxOptions) -> Parked:
        """A parked sandbox set up with ``opts``; raises the :class:`SandboxerError` its set-up met."""
        reply: dict[str, Any] = {}
        for _ in range(2):  # a pool that died (killed from outside) is replaced once
            if self._sock is None:
                self._start()
            try:
                if not self._greeted:
                    self._greet()
                self._lines.send({"get": [opts._asdict(), _settings(os.environ)]})
                reply = self._lines.next()
            except OSError:
                reply = {}
            except BaseException:  # interrupted between question and answer: that answer is nobody's
                self.close()
                raise
            if reply:
                break
            self.close()
        if "ready" in reply:
            return Parked(**reply["ready"])
        raise _rebuild_error(reply.get("error") or ["", "", "the sandbox pool process stopped", None])

    def run(self, opts: SandboxOptions, call: Callable[[], int], timeout: float | None = None) -> ExitStatus:
        """Run ``call`` in a forked child inside a sandbox set up with ``opts`` (see :func:`join`)."""
        parked = self.get(opts)

        def inside() -> int:
            self._sock.close()  # the workload has no business with the pool
            return call()

        try:
            return join(parked, inside, timeout)
        finally:
            self.release(parked)

    def release(self, parked: Parked) -> None:
        """The workload has ended: the pool kills the sandbox (and starts no other in its place)."""
        if self._sock is not None:
            try:
                self._lines.send({"release": parked.id})
            except OSError:
                pass

    def close(self) -> None:
        """End the pool: it kills its sandboxes and exits; wait for it, so that nothing outlives us."""
        if self._sock is None:
            return
        self._sock.close()
        self._sock = None
        self._greeted = False
        try:
            self._proc.wait(timeout=10)
        except Exception:
            self._proc.kill()
            self._proc.wait()

    def _start(self) -> None:
        import socket
        import subprocess

        ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
        # our sys.path exactly: the same modules, and the same key to the entry-point cache
        boot = "import sys, json; sys.path[:] = json.loads(sys.argv[2]); from sandboxer.pool import serve; " \
               "serve(int(sys.argv[1]))"
        with theirs:
            # from /, so that no directory of the caller's shadows a module; its output is nobody's
            self._proc = subprocess.Popen(
                [sys.executable, "-c", boot, str(theirs.fileno()), json.dumps(sys.path)],
                pass_fds=(theirs.fileno(),), cwd="/", stdin=subprocess.DEVNULL,
                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        self._sock = ours
        self._lines = _Lines(ours.fileno())

    def _greet(self) -> None:
        """The pool's first word: "userns" when it has unshared a user namespace of its own, which
        we map (newuidmap, once per session) before it sets anything up (see :func:`serve`)."""
        hello = self._lines.next()
        if hello.get("hello") == "userns":
            from .runtime.userns import default_idmap, write_idmap

            try:
                write_idmap(self._proc.pid, default_idmap())
            except BaseException:
                self.close()
                raise
            self._lines.send({"go": True})
        self._greeted = bool(hello)


class _Lines:
    """One JSON object per line, both ways, over a socket's file descriptor (both ends use it)."""

    def __init__(self, fd: int) -> None:
        self.fd = fd
        self.buffer = b""

    def send(self, message: dict[str, Any]) -> None:
        data = json.dumps(message).encode() + b"\n"
        while data:
            data = data[os.write(self.fd, data):]

    def fill(self) -> bool:
        """Read what has come (blocking until something does); False at end of file."""
        chunk = os.read(self.fd, 1 << 16)
        self.buffer += chunk
        return bool(chunk)

    def pop(self) -> dict[str, Any] | None:
        """The next whole message read so far, or None."""
        if b"\n" not in self.buffer:
            return None
        line, _, self.buffer = self.buffer.partition(b"\n")
        message: dict[str, Any] = json.loads(line)
        return message

    def next(self) -> dict[str, Any]:
        """The next message, waiting for it ({} at end of file)."""
        while (message := self.pop()) is None:
            if not self.fill():
                return {}
        return message


def _settings(environ: Mapping[str, str]) -> dict[str, str]:
    """The variables that steer sandboxer itself (where state and images live, which programs run):
    the pool plans each sandbox with the caller's current ones, which a test session may change."""
    return {k: v for k, v in environ.items() if k.startswith(("SANDBOXER_", "XDG_")) or k in _SETTINGS}


def join(parked: Parked, call: Callable[[], int], timeout: float | None = None) -> ExitStatus:
    """Run ``call`` in a forked child inside ``parked``, as its workload; how it ended.

    ``timeout`` (seconds): the sandbox is killed, and the status says ``timed_out``.
    """
    import time

    from .procfs import start_time
    from .runtime.enter import ExecOptions, enter_status

    try:
        pidfd = os.pidfd_open(parked.pid)  # signals reach this PID 1, never a process that reused its PID
    except ProcessLookupError:
        pidfd = -1
    if pidfd < 0 or start_time(parked.pid) != parked.start:
        if pidfd >= 0:
            os.close(pidfd)
        from .errors import SetupError

        raise SetupError("join the sandbox", "its PID 1 died before the workload joined")

    deadline = None if timeout is None else time.monotonic() + timeout
    try:
        return enter_status(parked.pid, parked.identity, [], [], parked.identity["cwd"],
                            ExecOptions(call=call), parked.start, deadline=deadline,
                            on_timeout=lambda: _kill_pid1(pidfd))
    finally:
        os.close(pidfd)


def _kill_pid1(pidfd: int) -> None:
    """SIGKILL a sandbox's PID 1 through its pidfd (never a process that reused its PID): the kernel
    then ends everything in its PID namespace."""
    try:
        signals.pidfd_send_signal(pidfd, signals.SIGKILL)
    except ProcessLookupError:
        pass


def _rebuild_error(fields: list[Any]) -> SandboxerError:
    """The pool's error as the class it was raised with, so that callers tell them apart as usual."""
    import importlib

    module, name, message, hint = fields
    cls: type[SandboxerError] = SandboxerError
    try:
        found = getattr(importlib.import_module(module), name) if module.startswith("sandboxer") else None
        if isinstance(found, type) and issubclass(found, SandboxerError):
            cls = found
    except ImportError:
        pass
    err = cls.__new__(cls)
    SandboxerError.__init__(err, message, hint)  # subclasses' constructors take other arguments
    return err


# -- the pool process


class _Server:
    """The pool: sandboxes set up on demand and one ahead, kept by options until the client's ``get``.

    It is the caller of each sandbox it starts (:func:`sandboxer.runtime.launcher.start`), and
    watches each one's status pipe to tear it down (:func:`sandboxer.sandbox.release`) once its
    PID 1 is gone — killed at ``release``, or dead on its own.  No error of one sandbox stops it:
    the others, and the test joined to one, go on.
    """

    def __init__(self, sock: int) -> None:
        self.sock = sock
        self.lines = _Lines(sock)
        self.ready: list[tuple[str, dict[str, Any]]] = []  #: (options, parked), oldest first
        self.live: dict[int, Started] = {}  #: status fd -> every sandbox started and not yet torn down
        self.pidfds: dict[str, int] = {}    #: sandbox id -> its PID 1, to signal without PID reuse

    def run(self) -> None:
        import select

        self._dispatch()  # what came along with the greeting
        while True:
            for fd in select.select([self.sock, *self.live], [], [])[0]:
                if fd == self.sock:
                    if not self._read_client():
                        return
                elif fd in self.live:
                    self._tear_down(fd)

    def _read_client(self) -> bool:
        if not self.lines.fill():
            return False
        self._dispatch()
        return True

    def _dispatch(self) -> None:
        """Act on every whole message read so far."""
        while (message := self.lines.pop()) is not None:
            if "get" in message:
                self._get(json.dumps(message["get"]))
            elif "release" in message:
                self._kill(message["release"])

    def _get(self, key: str) -> None:
        parked = self._take_ready(key)
        if parked is None:
            try:
                parked = self._start(key)
            except Exception as e:
                self.lines.send({"error": _error_fields(e)})
                return
        self.lines.send({"ready": parked})
        try:  # the next test most likely wants the same: set it up while this one runs
            self.ready.append((key, self._start(key)))
        except Exception:
            return  # the next get meets the error itself, and answers it
        while len(self.ready) > _MAX_IDLE:
            self._kill(self.ready.pop(0)[1]["id"])

    def _take_ready(self, key: str) -> dict[str, Any] | None:
        """A sandbox set up ahead with these options whose PID 1 still lives, or None."""
        import select

        for i, (k, parked) in enumerate(self.ready):
            if k == key:
                del self.ready[i]
                dead = [fd for fd, started in self.live.items() if started.plan.id == parked["id"]
                        and select.select([fd], [], [], 0)[0]]
                if not dead:
                    return parked
                self._tear_down(dead[0])
                return self._take_ready(key)
        return None

    def _start(self, key: str) -> dict[str, Any]:
        """Set one sandbox up with a parked PID 1; what the client needs to join it."""
        from .procfs import start_time
        from .runtime.enter import identity_of
        from .runtime.init import Workload
        from .runtime.launcher import start
        from .runtime.plan import Identity
        from .sandbox import SandboxOptions, Volume, prepare, release

        values, settings = json.loads(key)
        for name in _settings(os.environ).keys() - settings.keys():
            del os.environ[name]
        os.environ.update(settings)
        values["volumes"] = tuple(Volume(*v) for v in values["volumes"])
        plan = prepare(SandboxOptions(**values)._replace(init=False))  # PID 1 is the reaper itself
        identity = identity_of(plan)  # the workload's, which the joining process takes
        # PID 1 stays root of the sandbox: a process that changed its uid is not dumpable, and its
        # /proc/PID/ns would then be closed to the joining caller
        plan.identity = Identity(0, 0, (), None)
        try:
            started = start(plan, Workload(call=_park), forward_signals=False)
        except BaseException:
            release(plan)
            raise
        self.live[started.status_r] = started
        try:
            self.pidfds[plan.id] = os.pidfd_open(started.pid1)
        except ProcessLookupError:
            pass  # dead already: its status pipe says so, and the next get skips it
        return {"id": plan.id, "pid": started.pid1, "start": start_time(started.pid1), "identity": identity}

    def _kill(self, sandbox_id: str) -> None:
        pidfd = self.pidfds.get(sandbox_id)
        if pidfd is not None:
            _kill_pid1(pidfd)

    def _tear_down(self, fd: int) -> None:
        """PID 1 is gone: collect the set-up process's report, and release what the sandbox held."""
        from .runtime.launcher import wait
        from .sandbox import release

        started = self.live.pop(fd)
        sandbox_id = started.plan.id
        self.ready = [(k, p) for k, p in self.ready if p["id"] != sandbox_id]
        pidfd = self.pidfds.pop(sandbox_id, None)
        if pidfd is not None:
            os.close(pidfd)
        try:
            wait(started)
        except Exception:
            pass  # a set-up process killed from outside, a plugin's stopped hook: release anyway
        try:
            release(started.plan)
        except Exception:
            pass  # what is left, the next run's garbage collection removes

    def shutdown(self) -> None:
        for sandbox_id in list(self.pidfds):
            self._kill(sandbox_id)
        for fd in list(self.live):
            self._tear_down(fd)


def _error_fields(e: Exception) -> list[Any]:
    if isinstance(e, SandboxerError):
        return [type(e).__module__, type(e).__name__, e.message, e.hint]
    return ["sandboxer.errors", "SandboxerError", f"the sandbox pool failed: {e!r}", None]


def _park() -> int:
    """PID 1 of a parked sandbox: reap what the joined workload leaves behind, until killed.

    It keeps no file descriptor: the pool's pipes and sockets are none of the sandbox's business,
    and its root user could reach them through /proc/1/fd.
    """
    os.closerange(3, os.sysconf("SC_OPEN_MAX"))
    signals.pthread_sigmask(signals.SIG_BLOCK, (signals.SIGCHLD,))
    while True:
        signals.sigwaitinfo((signals.SIGCHLD,))
        try:
            while os.waitpid(-1, os.WNOHANG)[0] > 0:
                pass
        except ChildProcessError:
            pass


def serve(sock: int) -> None:
    """The pool process's main: serve the client on ``sock`` until it goes."""
    from . import syscalls as sc

    parent = os.getppid()
    sc.set_pdeathsig(signals.SIGKILL)
    if os.getppid() != parent:
        return
    os.set_inheritable(sock, False)  # not into the helpers the sandboxes start
    signals.signal(signals.SIGINT, signals.SIG_IGN)  # a terminal's Ctrl-C is the client's to handle
    from .runtime.userns import default_idmap

    # with subordinate ids, a user namespace of our own that maps them all, once: each sandbox's
    # user namespace is then a child of it, whose maps we write ourselves — not newuidmap and
    # newgidmap, two set-uid programs that cost ~4.5 ms of CPU per sandbox
    nest = os.getuid() != 0 and not default_idmap().single
    if nest:
        sc.unshare(sc.CLONE_NEWUSER)
    server = _Server(sock)
    server.lines.send({"hello": "userns" if nest else "ready"})
    # everything set-up needs, found and imported once, before the first fork
    from . import builtins, plugins, procfs, sandbox, storage  # noqa: F401
    from .network import rootlessns  # noqa: F401
    from .runtime import enter, launcher  # noqa: F401
    from .seccomp import cache  # noqa: F401
    from .storage import copy, fuse, overlay  # noqa: F401

    plugins.external_entry_points()
    if nest and "go" not in server.lines.next():
        return  # the client could not map us, and said why itself
    try:
        server.run()
    finally:
        server.shutdown()
