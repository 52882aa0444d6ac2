"""What PID 1 finally runs: ``exec`` of the command, or ``--init``.

``--init`` is a small PID 1 that reaps zombies and forwards signals.

A process that is PID 1 of a namespace ignores every signal it has no
handler for, and orphans are re-parented to it; most programs are not
written for either.  This init runs the workload as its child, forwards
the signals a user sends, reaps every orphan, and exits with the
workload's status (128+N if it was killed by signal N), like tini.
"""

from __future__ import annotations

import os

from .. import signals, syscalls
from . import sync

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Callable

__all__ = ["run_as_init", "exec_workload"]

_FORWARDED = (signals.SIGHUP, signals.SIGINT, signals.SIGQUIT, signals.SIGTERM, signals.SIGUSR1,
              signals.SIGUSR2, signals.SIGWINCH, signals.SIGCONT, signals.SIGTSTP, signals.SIGALRM)


def run_as_init(start: Callable[[], int], msg_w: int, status_w: int) -> int:
    """Be PID 1: run ``start()`` (it execs, or returns an exit status) in a child.

    PID 1 of a namespace cannot die of a signal it sends itself, so when the
    workload is killed by signal N this init exits 128+N and tells the caller
    the signal on the status pipe (``signal N``), ahead of the set-up
    process's own report.
    """
    shed_r, shed_w = os.pipe2(os.O_CLOEXEC)
    child = os.fork()
    if child == 0:
        code = 125
        try:
            os.close(shed_w)
            os.read(shed_r, 1)  # end of file once PID 1 holds nothing the workload must not reach
            os.close(shed_r)
            syscalls.set_pdeathsig(signals.SIGKILL)
            if os.isatty(0):  # keep job control working: the workload owns the terminal
                os.setpgid(0, 0)
                _take_terminal()
            code = start()
        finally:
            os._exit(code)
    os.close(shed_r)
    os.close(msg_w)
    # the workload, same user, reaches PID 1 through /proc/1: blank the environment we were started
    # with (the caller's, not the sandbox's), and keep only the status pipe — not the caller's files,
    # nor the state directory's lock (the set-up process holds that); closing shed_w lets it start
    syscalls.blank_environment()
    os.closerange(3, status_w)
    os.closerange(status_w + 1, os.sysconf("SC_OPEN_MAX"))

    def forward(sig: int, _frame: object) -> None:
        try:
            os.kill(child, sig)
        except ProcessLookupError:
            pass

    for sig in _FORWARDED:
        signals.signal(sig, forward)
    while True:
        try:
            pid, status = os.waitpid(-1, os.WUNTRACED)
        except ChildProcessError:
            return 0
        if os.WIFSTOPPED(status):
            if pid == child:  # Ctrl-Z on its terminal: no shell here would ever resume it, nor its
                _resume(child)  # group (a Ctrl-C would wait behind the stop): ignored, as by a PID 1
            continue
        if pid == child:
            code = os.waitstatus_to_exitcode(status)
            if code < 0:
                os.write(status_w, f"signal {-code}\n".encode())
                return 128 - code
            return code


def _resume(child: int) -> None:
    """SIGCONT to the workload's process group (its foreground job stopped with it), or to it alone."""
    try:
        os.killpg(os.getpgid(child), signals.SIGCONT)
    except OSError:
        try:
            os.kill(child, signals.SIGCONT)
        except ProcessLookupError:
            pass


def _take_terminal() -> None:
    old = signals.signal(signals.SIGTTOU, signals.SIG_IGN)
    try:
        os.tcsetpgrp(0, os.getpgrp())
    except OSError:
        pass
    finally:
        signals.signal(signals.SIGTTOU, old)


def exec_workload(argv: list[str], env: dict[str, str], msg_w: int, also: int = -1) -> None:
    """exec ``argv`` with Docker's exit codes: 127 not found, 126 not executable.

    A failure is reported on ``msg_w`` and, if given, on ``also`` (the OCI start gate, which
    ``start`` reads).
    """
    syscalls.cloexec_from(3)  # stdio only: nothing the caller of sandboxer had open
    try:
        _execvpe(argv, env)
    except FileNotFoundError:
        message, code = "executable file not found in $PATH", 127
    except PermissionError:
        message, code = "permission denied (not executable)", 126
    except OSError as e:
        message, code = e.strerror or str(e), 126
    for fd in (also, msg_w):  # the gate first: the caller kills the sandbox once it reads msg_w
        if fd >= 0:
            sync.send(fd, "error", f"exec {argv[0]}", message, "", code)
    os._exit(code)


def _execvpe(argv: list[str], env: dict[str, str]) -> None:
    """``os.execvpe`` without its ``import warnings``: this runs after the root moved, where the
    host's Python library may not exist (an image has none).  Searches ``env``'s PATH, keeping the
    first error that is not "no such file" (as execvp does)."""
    name = argv[0]
    if "/" in name:
        os.execve(name, argv, env)
    found: OSError | None = None
    for directory in env.get("PATH", "/usr/bin:/bin").split(":"):
        try:
            os.execve(os.path.join(directory or ".", name), argv, env)
        except (FileNotFoundError, NotADirectoryError) as e:
            found = found or e
        except OSError as e:
            if found is None or isinstance(found, (FileNotFoundError, NotADirectoryError)):
                found = e
    raise found or FileNotFoundError(2, "No such file or directory", name)
