"""What every process sandboxer starts has in common, whether it sets a sandbox up or joins one.

The launcher and PID 1's set-up (:mod:`.launcher`, :mod:`.init`) and ``exec``
(:mod:`.enter`) fork, forward the user's signals, give the workload its
stdio or terminal, signal dispositions, environment and session keyring,
and report how it ended, the same way.  Kept apart so that ``exec`` loads
none of the set-up's mounts and planning (~2.5 ms of its start), and free
of namedtuples, so that it loads no ``collections`` either (~1.5 ms).
"""

from __future__ import annotations

import errno
import os
import sys
import time

from .. import signals
from .. import syscalls as sc
from ..errors import SetupError

__all__ = ["ExitStatus", "SignalProxy", "fork", "readable_before", "flush_std", "env_dict", "reset_signals",
           "stdin_devnull", "attach_terminal", "own_session_keyring", "STOP_SIGNALS"]

_PROXIED = (signals.SIGTERM, signals.SIGHUP, signals.SIGUSR1, signals.SIGUSR2, signals.SIGINT, signals.SIGQUIT)
#: what the set-up ignores until PID 1 decides, and the workload gets back at their defaults
STOP_SIGNALS = (signals.SIGINT, signals.SIGTERM, signals.SIGHUP, signals.SIGQUIT,
                signals.SIGUSR1, signals.SIGUSR2, signals.SIGPIPE, signals.SIGTSTP,
                signals.SIGTTIN, signals.SIGTTOU)
TIOCSCTTY = 0x540E


class ExitStatus:
    """How PID 1 ended: ``code`` as Docker reports it (128+N for signal N).

    ``timed_out``: the caller's timeout expired and the sandbox was killed.
    A plain value class (not a namedtuple: ``collections`` is ~1.5 ms of ``exec``'s start).
    """

    __slots__ = ("code", "signal", "timed_out")

    def __init__(self, code: int, signal: int | None = None, timed_out: bool = False) -> None:
        self.code, self.signal, self.timed_out = code, signal, timed_out

    def _key(self) -> tuple[int, int | None, bool]:
        return self.code, self.signal, self.timed_out

    def __eq__(self, other: object) -> bool:
        return isinstance(other, ExitStatus) and self._key() == other._key()

    def __hash__(self) -> int:
        return hash(self._key())

    def __repr__(self) -> str:
        return f"ExitStatus(code={self.code!r}, signal={self.signal!r}, timed_out={self.timed_out!r})"

    def _replace(self, *, timed_out: bool) -> ExitStatus:
        return ExitStatus(self.code, self.signal, timed_out)

    @classmethod
    def from_wait_status(cls, status: int) -> ExitStatus:
        code = os.waitstatus_to_exitcode(status)
        return cls(128 - code, -code) if code < 0 else cls(code)

    def describe(self) -> str:
        if self.timed_out:
            return "timed out; process tree killed"
        if self.signal is not None:
            return f"killed by {signals.name(self.signal)}"
        return f"exited with status {self.code}"


class SignalProxy:
    """Forward the signals a user sends us to the sandbox's PID 1 (or an exec'd command).

    Installed before the fork, so a signal that arrives during set-up is
    held and delivered as soon as PID 1 exists, never lost and never fatal
    to us while the sandbox lives.  Ctrl-C a second time before then (a
    set-up that hangs) raises KeyboardInterrupt: the caller kills what it
    started and exits 130.  Only SIGINT: a supervisor sent SIGTERM twice
    (stop, then stop again) must still hand both to its PID 1.
    """

    def __init__(self) -> None:
        self.pid: int | None = None
        self.pending: list[int] = []
        self.saved = {sig: signals.signal(sig, self._handle) for sig in _PROXIED}

    def _handle(self, sig: int, _frame: object) -> None:
        # the sandbox is a session of its own, out of the terminal's reach: Ctrl-C comes through us
        if self.pid is None:
            if sig == signals.SIGINT and sig in self.pending:  # Ctrl-C twice while the set-up is stuck
                raise KeyboardInterrupt(signals.name(sig))
            self.pending.append(sig)
        else:
            self._send(sig)

    def _send(self, sig: int) -> None:
        assert self.pid is not None
        signals.send(self.pid, sig)

    def target(self, pid: int) -> None:
        self.pid = pid
        for sig in self.pending:
            self._send(sig)
        self.pending.clear()

    def restore(self) -> None:
        for sig, handler in self.saved.items():
            signals.signal(sig, handler)


def fork(keep_python: bool = False) -> int:
    """``os.fork``; with ``keep_python`` (the child runs Python on, not just to an exec), no
    logging handler is mid-write in another thread at that moment (see :func:`_hold_logging_handlers`),
    and the child's garbage collector leaves our objects alone: a collection that visits them
    writes to each, and every page it writes to is copied (measured: ~1 ms of a sandboxed test)."""
    if not keep_python:
        return os.fork()
    import gc

    parent = os.getpid()
    held = _hold_logging_handlers()
    gc.freeze()
    try:
        return os.fork()
    finally:
        if os.getpid() == parent:
            gc.unfreeze()
            for handler in held:  # in the child, logging's at-fork hook made them new locks
                handler.release()


def _hold_logging_handlers() -> list:
    """Acquire every logging handler's lock, for a fork that keeps running Python.

    Another thread of the caller (an xdist worker, a test's log chatter) may
    be inside a handler's ``emit``, holding the lock of the handler and of the
    stream it writes to; a child forked then inherits those locks held by a
    thread it does not have and deadlocks on its first log line.  Logging
    renews handler locks in the child but not the stream's, so the fork waits
    until no handler is writing.
    """
    logging = sys.modules.get("logging")  # never imported just for this
    refs = getattr(logging, "_handlerList", ()) if logging is not None else ()
    held = []
    for ref in list(refs):
        handler = ref()
        if handler is not None and getattr(handler, "lock", None) is not None:
            handler.acquire()
            held.append(handler)
    return held


def readable_before(fd: int, deadline: float) -> bool:
    """Wait for ``fd`` to become readable (or reach end of file) until ``deadline``."""
    import select

    while True:
        left = deadline - time.monotonic()
        if left <= 0:
            return False
        if select.select([fd], [], [], left)[0]:
            return True


def flush_std() -> None:
    """Flush Python's stdout and stderr before a fork or an ``os._exit``."""
    for stream in (sys.stdout, sys.stderr):
        try:
            if stream is not None:
                stream.flush()
        except (OSError, ValueError):
            pass


def env_dict(pairs: list[str]) -> dict[str, str]:
    """``["K=V", ...]`` as a dict; a later ``K`` wins, as in a process environment."""
    env = {}
    for pair in pairs:
        key, _, value = pair.partition("=")
        env[key] = value
    return env


def reset_signals() -> None:
    """Default dispositions and an empty mask for the workload: what the caller ignored or blocked
    (a shell's background job ignores SIGINT and SIGQUIT) is not the sandbox's business."""
    for sig in STOP_SIGNALS:
        signals.signal(sig, signals.SIG_DFL)
    signals.pthread_sigmask(signals.SIG_SETMASK, ())


def stdin_devnull() -> None:
    """The workload's stdin is /dev/null (without -i), as docker's."""
    fd = os.open("/dev/null", os.O_RDONLY)
    os.dup2(fd, 0)
    os.close(fd)


def attach_terminal(slave: int) -> None:
    """Make the pty the controlling terminal of a new session, on fds 0-2."""
    os.setsid()
    sc.ioctl_int(slave, TIOCSCTTY, 0)
    for fd in (0, 1, 2):
        os.dup2(slave, fd)
    if slave > 2:
        os.close(slave)


def own_session_keyring() -> None:
    """As runc does: a fresh session keyring (only a kernel without keyrings has none to share)."""
    try:
        sc.join_session_keyring()
    except OSError as e:
        if e.errno != errno.ENOSYS:
            raise SetupError("join a new session keyring", e.strerror or str(e),
                             hint="every sandbox without seccomp takes a key of your quota: see "
                                  "/proc/sys/kernel/keys/maxkeys") from e
