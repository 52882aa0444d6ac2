"""``exec``: run one more command inside a running sandbox, as its workload runs.

The caller forks a child that joins PID 1's namespaces with setns — the
user namespace first (it grants the rights over the others), the mount
namespace last (it moves the root) — and forks again, since the PID
namespace applies only to children.  That grandchild takes the workload's
identity the way :mod:`sandboxer.runtime.init` gives it (working directory,
no_new_privs, bounding set, user and capability sets, seccomp last), then
execs.  Errors come back on a message pipe, as during set-up.
"""

from __future__ import annotations

import os
import sys

from .. import signals
from .. import syscalls as sc
from ..errors import SetupError
from ..procfs import start_time
from . import sync
from .capabilities import drop_bounding, switch_user_and_set_caps
from .process import (
    ExitStatus,
    SignalProxy,
    attach_terminal,
    env_dict,
    flush_std,
    fork,
    own_session_keyring,
    readable_before,
    reset_signals,
    stdin_devnull,
)
from .reaper import exec_workload
from .userns import read_idmap

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Callable
    from typing import Any

__all__ = ["enter", "enter_status", "ExecOptions", "NAMESPACES", "identity_of"]

#: join order: user first, mount last
NAMESPACES = ("user", "ipc", "uts", "net", "cgroup", "pid", "time", "mnt")
_SOL_SOCKET, _SCM_RIGHTS = 1, 1  # the socket module's names, without importing it in the child


class ExecOptions:
    """How to run the extra command: its stdio, terminal and user (see ``sandboxer exec``).

    ``call`` runs a function in place of ``argv`` (``sandboxer cp``: it must import nothing, and
    report its own errors); ``alongside`` runs in the caller meanwhile (the other end of a pipe).
    """

    __slots__ = ("stdin_null", "tty", "user", "env", "call", "alongside", "pass_fds", "console_socket",
                 "detach", "pid_file")

    def __init__(self, stdin_null: bool = True, tty: bool = False, user: str | None = None,
                 env: tuple[str, ...] = (), call: Callable[[], int] | None = None,
                 alongside: Callable[[], None] | None = None, pass_fds: tuple[int, ...] = (),
                 console_socket: str | None = None, detach: bool = False, pid_file: str | None = None) -> None:
        self.stdin_null = stdin_null  #: stdin from /dev/null (no -i)
        self.tty = tty                #: a pseudo-terminal of the sandbox's own /dev/pts (-t)
        self.user = user              #: NAME|UID[:GROUP|GID], resolved in the sandbox's /etc files
        self.env = env                #: ``-e K=V``: over the workload's environment and the user's HOME
        self.call = call
        self.alongside = alongside
        self.pass_fds = pass_fds      #: only the command keeps these (a pipe's end of file depends on it)
        #: OCI exec: the terminal's master goes to this unix socket instead of being relayed
        self.console_socket = console_socket
        #: OCI exec ``--detach``: return once the command has exec'ed; it is left to our caller's reaper
        self.detach = detach
        self.pid_file = pid_file      #: OCI exec: the command's host PID is written here once it runs


def enter(pid: int, identity: dict[str, Any], argv: list[str], env: list[str], cwd: str,
          opts: ExecOptions | None = None, started: int | None = None) -> int:
    """Run ``argv`` in the namespaces of ``pid`` with ``identity`` (see the supervisor's record); its
    exit code (128+N if killed by signal N).

    ``started``: the start time of the sandbox's PID 1 (:func:`sandboxer.procfs.start_time`), so that a
    PID reused after the sandbox ended is never joined.
    """
    return enter_status(pid, identity, argv, env, cwd, opts, started).code


def enter_status(pid: int, identity: dict[str, Any], argv: list[str], env: list[str], cwd: str,
                 opts: ExecOptions | None = None, started: int | None = None, *,
                 deadline: float | None = None, on_timeout: Callable[[], None] | None = None) -> ExitStatus:
    """:func:`enter`, returning how the command ended; at ``deadline`` (``time.monotonic``) it calls
    ``on_timeout`` (which must end the command: kill the sandbox) and the status says ``timed_out``."""
    opts = opts or ExecOptions()
    gone = SetupError("join the sandbox", "it is not running any more", hint="see 'sandboxer ps -a'")
    if started is not None and start_time(pid) != started:
        raise gone
    try:
        fds = [os.open(f"/proc/{pid}/ns/{ns}", os.O_RDONLY | os.O_CLOEXEC) for ns in NAMESPACES]
        idmap = read_idmap(pid)
    except OSError:
        raise gone from None
    if started is not None and start_time(pid) != started:  # the fds may be another process's
        for fd in fds:
            os.close(fd)
        raise gone
    resolve = _user_resolver(opts.user, idmap) if opts.user else None
    if identity.get("seccomp"):
        import binascii  # base64's C core: the base64 module imports re (~6 ms)

        # decoded here: once the child has joined the mount namespace, the host's Python library
        # may not exist — an image's root has none
        identity = {**identity, "seccomp_bpf": binascii.a2b_base64(identity["seccomp"])}
    sock = ours = None
    if opts.tty:
        import socket

        from . import tty  # noqa: F401 - imported now, used in the child after the mount namespace moved

        ours, sock = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
    msg_r, msg_w = os.pipe2(os.O_CLOEXEC)
    status_r, status_w = os.pipe2(os.O_CLOEXEC)  # the command's raw wait status, as the child saw it
    flush_std()  # else the child inherits, and may write again, what we have buffered
    proxy = _proxy(opts)
    child = fork(keep_python=opts.call is not None)
    if child == 0:  # pragma: no cover - runs in the child
        code = 125
        try:
            # before it joins: out of the workload's reach (ptrace, /proc/PID/fd) until its exec, and so
            # the command it forks (a sandboxed test, a cp worker, which never exec, stay so)
            sc.set_dumpable(False)
            sc.set_pdeathsig(signals.SIGKILL)
            os.close(status_r)
            if ours is not None:
                ours.close()
            _join(fds)
            who = dict(identity)
            if resolve is not None:
                who.update(resolve())
            code = _run_in_namespace(who, argv, env, cwd, opts, sock, msg_w, status_w)
        except BaseException as e:
            sync.send_error(msg_w, e, "exec")
        finally:
            os._exit(code)
    for fd in fds:
        os.close(fd)
    os.close(msg_w)
    os.close(status_w)
    try:
        msg, raw, timed_out = _follow(msg_r, status_r, ours, sock, opts, deadline, on_timeout, proxy)
    except BaseException:
        os.kill(child, signals.SIGKILL)  # its command dies with it (death signal)
        os.waitpid(child, 0)
        raise
    finally:
        os.close(status_r)
        if proxy is not None:
            proxy.restore()
    _, status = os.waitpid(child, 0)
    if msg is not None and msg[0] == "error":
        raise sync.error_from_fields(msg)
    if opts.detach:
        return ExitStatus(0)
    ended = ExitStatus.from_wait_status(int(raw) if raw.strip() else status)
    return ended._replace(timed_out=True) if timed_out else ended


def _proxy(opts: ExecOptions) -> SignalProxy | None:
    """Without a terminal of its own the command is a session of its own (see :func:`_run_in_namespace`),
    out of our terminal's reach: the signals a user sends us go to it.  Not for a detached command,
    nor where signal handlers can't be set (a thread other than the main one), nor for an in-process
    call (a sandboxed test): there Ctrl-C is our KeyboardInterrupt, which ends the call with us."""
    if opts.tty or opts.detach or opts.call is not None:
        return None
    try:
        return SignalProxy()
    except ValueError:
        return None


def _follow(msg_r: int, status_r: int, ours: Any, sock: Any, opts: ExecOptions, deadline: float | None,
            on_timeout: Callable[[], None] | None, proxy: SignalProxy | None = None) -> tuple[Any, bytes, bool]:
    """The caller's side while the command runs: its start (or set-up error), the terminal, the
    deadline; returns the last message, the command's raw wait status (b"" if none came) and
    whether the deadline passed."""
    master = -1
    if ours is not None and sock is not None:
        import socket

        sock.close()
        try:
            _, received, _, _ = socket.recv_fds(ours, 1, 1)
        except OSError:
            received = []
        ours.close()
        master = received[0] if received else -1
    reader = sync.Reader(msg_r)
    command = 0
    try:
        while (msg := reader.recv()) is not None and msg[0] == "pid":  # end of file: the command has exec'ed
            command = int(msg[1])
            if proxy is not None:
                proxy.target(command)
    finally:
        reader.close()
    if msg is None and opts.pid_file is not None:
        from ..state import write_atomically

        try:
            write_atomically(opts.pid_file, str(command))
        except OSError as e:  # the command must not run on unseen, as runc's exec would not leave it
            if command:
                os.kill(command, signals.SIGKILL)
            raise SetupError(f"write --pid-file {opts.pid_file}", e.strerror or str(e),
                             hint="give a file in a directory you can write") from None
    if master >= 0 and opts.console_socket is not None:
        from .tty import send_console

        try:
            send_console(opts.console_socket, master)  # the caller's terminal now, not ours to relay
        finally:
            os.close(master)
    elif master >= 0:
        from .tty import relay

        try:
            if msg is None:
                relay(master, forward_input=not opts.stdin_null)
        finally:
            os.close(master)
    timed_out = False
    if opts.alongside is not None and msg is None:
        opts.alongside()
    if deadline is not None and msg is None and not readable_before(status_r, deadline):
        timed_out = True
        if on_timeout is not None:
            on_timeout()
    raw = b""
    while chunk := os.read(status_r, 64):
        raw += chunk
    return msg, raw, timed_out


def _join(fds: list[int]) -> None:
    """setns into each namespace (fds in :data:`NAMESPACES` order) that is not ours already.

    An unprivileged caller needs the sandbox's user namespace first: it grants the rights over the
    others.  A privileged one (root in rootless podman's user namespace, running us as its runtime) may
    need the opposite for a namespace the container joined by path — podman's network namespace,
    owned by podman's user namespace, out of reach once inside the container's.  So: every namespace
    that can be joined now, then the user namespace, then the rest, the mount namespace last.
    """
    todo = [(fd, ns) for fd, ns in zip(fds, NAMESPACES, strict=True)
            if os.fstat(fd).st_ino != os.stat(f"/proc/self/ns/{ns}").st_ino]
    later = []
    for fd, ns in todo:
        if ns in ("user", "mnt"):
            continue
        try:
            sc.setns(fd, 0)
        except PermissionError:
            later.append((fd, ns))
    later = [t for t in todo if t[1] == "user"] + later + [t for t in todo if t[1] == "mnt"]
    for fd, ns in later:
        try:
            sc.setns(fd, 0)
        except OSError as e:
            raise SetupError(f"join the {ns} namespace", e.strerror or str(e)) from e


def _user_resolver(user: str, idmap: Any) -> Any:
    """``-u NAME[:GROUP]``: resolved after joining, from the sandbox's own /etc/passwd and /etc/group.

    Everything it needs is imported now: after the mount namespace is joined, the host's
    Python library may not be there.
    """
    from ..images.runconfig import ImageAccounts
    from ..sandbox import resolve_user

    def resolve() -> dict[str, Any]:
        uid, gid, home = resolve_user(user, idmap, ImageAccounts(("/",)))
        return {"uid": uid, "gid": gid, "groups": [], "home": home}

    return resolve


def _run_in_namespace(identity: dict[str, Any], argv: list[str], env: list[str], cwd: str, opts: ExecOptions,
                      sock: Any, msg_w: int, status_w: int) -> int:
    """In the joined namespaces: fork the command into the PID namespace and wait for it."""
    if "home" in identity:  # another user: its HOME, as docker exec -u gives it
        env = [*env, f"HOME={identity['home']}"]
    env = [*env, *opts.env]
    if identity["uid"] != 0:  # Docker: a non-root user starts without effective/permitted capabilities
        bounding, _, _, inheritable, ambient = identity["caps"]
        identity["caps"] = [bounding, 0, 0, inheritable, ambient]
    slave = -1
    if sock is not None:
        from .tty import size_like_ours

        master, slave = os.openpty()  # the sandbox's /dev/ptmx: the terminal is one of its own
        size_like_ours(master)  # before the command can ask
        sock.sendmsg([b"t"], [(_SOL_SOCKET, _SCM_RIGHTS, master.to_bytes(4, sys.byteorder))])
        os.close(master)
        sock.close()
    try:
        grandchild = os.fork()
    except OSError as e:  # its PID 1 is gone: the namespace takes no more processes
        raise SetupError("start the command", e.strerror or str(e), hint="the sandbox is stopping") from e
    if grandchild == 0:
        code = 125
        try:
            os.close(status_w)  # the caller's end of file on it is our parent's exit
            reset_signals()  # as PID 1 gives its workload
            if slave >= 0:
                attach_terminal(slave)
            else:
                os.setsid()  # no controlling terminal, as the workload has none (see init._container)
                if opts.stdin_null:
                    stdin_devnull()
            _become(identity, cwd)
            if opts.call is not None:
                sc.set_pdeathsig(signals.SIGKILL)
                os.close(msg_w)  # started
                try:
                    code = opts.call()
                finally:
                    flush_std()  # os._exit follows: Python's buffers would be lost
            else:
                exec_workload(argv, env_dict(env), msg_w)
        except BaseException as e:
            sync.send_error(msg_w, e, "exec")
        finally:
            os._exit(code)
    sync.send(msg_w, "pid", grandchild)  # its host PID (we are outside its PID namespace)
    os.close(msg_w)
    for fd in (slave, *opts.pass_fds):
        if fd >= 0:
            os.close(fd)
    if opts.detach:  # it goes to our caller's reaper (conmon, a shim) as we exit; it runs on
        return 0
    while True:
        try:
            _, status = os.waitpid(grandchild, 0)
            break
        except InterruptedError:
            continue
    os.write(status_w, b"%d" % status)
    return ExitStatus.from_wait_status(status).code


def _become(identity: dict[str, Any], cwd: str) -> None:
    """The workload's identity, in init's order: seccomp last, or before the drop without no_new_privs.

    Runs after the mount namespace is joined: it may import nothing."""
    bpf = identity.get("seccomp_bpf")
    if bpf is None:
        own_session_keyring()  # as the workload's (see init._container)
    if identity["no_new_privileges"]:
        sc.set_no_new_privs()
    elif bpf is not None:
        sc.seccomp_set_filter(bpf, identity["seccomp_flags"])
    bounding, effective, permitted, inheritable, ambient = identity["caps"]
    drop_bounding(bounding)
    switch_user_and_set_caps(identity["uid"], identity["gid"], identity["groups"], effective=effective,
                             permitted=permitted, inheritable=inheritable, ambient=ambient,
                             set_groups=identity["set_groups"])
    if identity["no_new_privileges"] and bpf is not None:
        sc.seccomp_set_filter(bpf, identity["seccomp_flags"])
    try:
        os.chdir(cwd)  # last, as the workload's user
    except OSError as e:
        raise SetupError(f"chdir to {cwd}", e.strerror or str(e), hint="give an existing directory to -w") from e


def identity_of(plan: Any) -> dict[str, Any]:
    """What :func:`enter` needs to give a command the workload's identity, as JSON-able data."""
    import binascii  # base64's C core: the base64 module costs ~1 ms on the way to run -d's answer

    who = plan.identity
    return {"uid": who.uid, "gid": who.gid, "groups": [g for g in who.groups if plan.idmap.maps_gid(g)],
            "caps": list(plan.caps), "no_new_privileges": plan.no_new_privileges,
            "seccomp": binascii.b2a_base64(plan.seccomp_bpf, newline=False).decode() if plan.seccomp_bpf else None,
            "seccomp_flags": plan.seccomp_flags, "set_groups": not plan.idmap.single,
            "env": list(plan.env), "cwd": plan.cwd}
