"""The caller's side of a sandbox: fork, hand-off, wait, tear down.

The caller forks the set-up process, writes its id maps once it has
unshared its user namespace, lets plugins attach cgroups and networks
while it waits, releases it, learns PID 1's host PID, waits for the exec
(an error message or end-of-file on the message pipe), and finally
collects PID 1's wait status from the status pipe.  See
:mod:`sandboxer.runtime.init` for the other side.
"""

from __future__ import annotations

import os
import sys
import time

from .. import plugins, signals
from ..errors import SandboxerError, SetupError
from ..syscalls import CLONE_NEWUSER
from . import sync
from .init import HANDED_OFF as _HANDED_OFF_NOTE
from .init import Pipes, Workload, setup_main
from .plan import Plan
from .process import ExitStatus, SignalProxy, flush_std, fork, readable_before
from .userns import write_idmap

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Callable

__all__ = ["run", "start", "wait", "Started", "HANDED_OFF"]


#: what :func:`run` returns when PID 1 was handed off at exec (OCI create): no status of ours to give,
#: and no ``sandboxer_stopped`` either — the sandbox runs on
HANDED_OFF = ExitStatus(0)


def _debug(plan: Plan, message: str) -> None:
    if plan.debug:
        print(f"sandboxer: debug: {message}", file=sys.stderr)


def run(plan: Plan, workload: Workload, *, tty: bool = False, timeout: float | None = None,
        forward_signals: bool = True) -> ExitStatus:
    """Start the sandbox, wait for it to end, and tear it down.

    With ``timeout`` (seconds from the start), the whole sandbox — its PID
    namespace — is killed when it expires.  ``forward_signals``: see :func:`start`; without it, a
    KeyboardInterrupt (or any exception a signal handler of the caller raises) kills the sandbox.
    """
    deadline = None if timeout is None else time.monotonic() + timeout
    return wait(start(plan, workload, tty=tty, forward_signals=forward_signals), deadline, workload.pump)


class Started:
    """A sandbox whose workload runs, as :func:`start` leaves it for :func:`wait`."""

    __slots__ = ("plan", "pid", "pid1", "status_r", "master", "proxy")

    def __init__(self, plan: Plan, pid: int, pid1: int, status_r: int, master: int,
                 proxy: SignalProxy | None) -> None:
        self.plan = plan
        self.pid = pid              #: the set-up process, our child
        self.pid1 = pid1            #: PID 1's host PID
        self.status_r = status_r    #: the set-up process's final report (see :func:`_wait`)
        self.master = master        #: the terminal's master to relay (-t), or -1
        self.proxy = proxy

    def close(self) -> None:
        if self.proxy is not None:
            self.proxy.restore()
        for fd in (self.status_r, self.master):
            if fd >= 0:
                os.close(fd)
        self.status_r = self.master = -1


def start(plan: Plan, workload: Workload, *, tty: bool = False, forward_signals: bool = True) -> Started:
    """Set the sandbox up and start its workload; :func:`wait` sees it end.

    ``forward_signals``: the signals a user sends us go to PID 1 until :func:`wait` returns (a
    process that starts many sandboxes at once, the pool, leaves its handlers alone).
    """
    hooks = plan.hooks
    need_hooks = bool(hooks and (hooks.prestart or hooks.create_runtime or hooks.create_container
                                 or hooks.start_container))
    msg_r, msg_w = os.pipe()
    go_r, go_w = os.pipe()
    status_r, status_w = os.pipe()
    hooks_r, hooks_w = os.pipe() if need_hooks else (-1, -1)
    if need_hooks:  # now, before fork: PID 1 runs hooks too, and must not look for modules mid-set-up
        from . import hooks as _hooks  # noqa: F401
    master = slave = -1
    if tty:
        from .tty import open_pty

        master, slave = open_pty()
    pipes = Pipes(msg_w=msg_w, go_r=go_r, hooks_r=hooks_r, status_w=status_w, pty_slave=slave)
    driver = plan.snapshotter.name if plan.snapshotter else f"none ({plan.rootfs.kind} root bound as is)"
    _debug(plan, f"sandbox {plan.id[:12]}: storage driver {driver}")
    proxy = SignalProxy() if forward_signals else None
    caller = os.getpid()
    flush_std()  # else the child inherits, and later writes, the caller's buffered output
    try:
        pid = fork(keep_python=workload.call is not None)
        if pid == 0:
            for fd in (msg_r, go_w, status_r, hooks_w, master):
                if fd >= 0:
                    os.close(fd)
            setup_main(plan, pipes, workload, caller)
        for fd in (msg_w, go_r, status_w, hooks_r, slave):
            if fd >= 0:
                os.close(fd)
        msg_w = go_r = status_w = hooks_r = slave = -1
        try:
            if master >= 0 and plan.console_socket is not None:
                from .tty import send_console

                send_console(plan.console_socket, master)  # the caller's terminal now, not ours to relay
                os.close(master)
                master = -1
            pid1 = _hand_off(plan, sync.Reader(msg_r), pid, go_w, hooks_w, proxy)
        except BaseException:
            _kill_and_reap(pid)
            raise
    except BaseException:
        if proxy is not None:
            proxy.restore()
        for fd in (msg_w, go_r, status_w, hooks_r, slave, status_r, master):
            if fd >= 0:
                os.close(fd)
        raise
    finally:
        for fd in (msg_r, go_w, hooks_w):
            if fd >= 0:
                os.close(fd)
    return Started(plan, pid, pid1, status_r, master, proxy)


def wait(started: Started, deadline: float | None = None,
         pump: Callable[[int, float | None], None] | None = None) -> ExitStatus:
    """Relay the terminal or run ``pump`` until the sandbox ends (killed at ``deadline``); its status."""
    try:
        status = _wait(started.pid, started.status_r, started.master, started.pid1, deadline, pump,
                       forward_input=not started.plan.stdin_null)
    finally:
        started.close()
    if status is None:  # OCI create: PID 1 has exec'ed and is its caller's reaper's to wait for
        return HANDED_OFF
    plugins.call("sandboxer_stopped", plan=started.plan, status=status)
    return status


def _hand_off(plan: Plan, reader: sync.Reader, pid: int, go_w: int, hooks_w: int,
              proxy: SignalProxy | None) -> int:
    """Everything between fork and exec; returns PID 1's host PID."""
    reader.expect("userns")
    if plan.namespaces & CLONE_NEWUSER:  # not when it joined one (OCI namespaces[].path): that has its maps
        write_idmap(pid, plan.idmap)
        _debug(plan, f"id map written ({'single id' if plan.idmap.single else 'subordinate ranges'})")
    reader.expect("namespaces")  # made while we wrote the maps; only now may the attach hook enter them
    plugins.call("sandboxer_attach", plan=plan, pid=pid)
    try:
        os.write(go_w, b"g")
    except BrokenPipeError:
        pass  # the set-up process has died since (killed): reading on says so
    # the set-up process sends "pid", PID 1 "hooks": two writers, so either may come first
    pid1, hooks_due = 0, hooks_w >= 0
    while not pid1 or hooks_due:
        msg = reader.expect("pid", "hooks") if hooks_due else reader.expect("pid")
        if msg[0] == "pid":
            pid1 = int(msg[1])
            if proxy is not None:
                proxy.target(pid1)
        else:
            hooks_due = False
    if hooks_w >= 0:  # PID 1 has its mounts and waits: the runtime-namespace hooks, then its own
        from .hooks import run_hooks, send_state

        run_hooks(plan, "prestart", pid=pid1, status="created")
        run_hooks(plan, "create_runtime", pid=pid1, status="created")
        send_state(hooks_w, plan, pid1)
    # end of file: PID 1 has exec'ed (its copy was close-on-exec); before it, "created" when
    # PID 1 waits at an OCI start gate
    while (last := reader.recv()) is not None:
        if last[0] == "created":
            plugins.call("sandboxer_created", plan=plan, pid=pid1)
            continue
        if last[0] == "error":
            raise sync.error_from_fields(last)
        raise SetupError("start the workload", f"protocol error: unexpected {last[0]!r}")
    plugins.call("sandboxer_started", plan=plan, pid=pid1)
    return pid1


def _kill_and_reap(pid: int) -> None:
    signals.send(pid, signals.SIGKILL)
    try:
        os.waitpid(pid, 0)
    except ChildProcessError:
        pass


def _wait(pid: int, status_r: int, master: int, pid1: int, deadline: float | None,
          pump: Callable[[int, float | None], None] | None = None, forward_input: bool = True) -> ExitStatus | None:
    """Relay the terminal (with -t; our input too with -i) or run the workload's pump until the sandbox
    ends; return PID 1's status (None: PID 1 was handed off at exec, see
    :data:`sandboxer.runtime.init.HANDED_OFF`)."""
    try:
        if master >= 0:
            from .tty import relay

            relay(master, forward_input=forward_input)
        elif pump is not None:
            pump(status_r, deadline)
        timed_out = deadline is not None and not readable_before(status_r, deadline)
        if timed_out:
            signals.send(pid1, signals.SIGKILL)  # the kernel kills the rest of its namespace
        raw = b""
        while chunk := os.read(status_r, 64):  # the wait itself, most of the time
            raw += chunk
    except BaseException:  # our caller's Ctrl-C (a build cancelled), a bug: the sandbox ends with the wait
        signals.send(pid1, signals.SIGKILL)
        _kill_and_reap(pid)
        raise
    os.waitpid(pid, 0)
    if not raw.strip():
        raise SandboxerError("the sandbox's set-up process died before reporting a status",
                             hint="run with --debug; it may have been killed from outside")
    *notes, last = raw.decode(errors="replace").strip().splitlines()
    if last == _HANDED_OFF_NOTE:
        return None
    if not last.isdecimal():
        raise SandboxerError(f"the sandbox's set-up process reported a malformed status {last[:40]!r}",
                             hint="run with --debug")
    status = ExitStatus.from_wait_status(int(last))
    for note in notes:  # "signal N" from an --init PID 1 whose workload was killed
        kind, _, value = note.partition(" ")
        if kind == "signal" and value.isdecimal():
            status = ExitStatus(128 + int(value), int(value))
    return status._replace(timed_out=True) if timed_out else status
