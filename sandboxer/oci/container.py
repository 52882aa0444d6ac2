"""The OCI runtime command line's containers: create, start, state, kill, delete (runtime-spec "runtime.md").

A container is ``<state root>/oci/<ID>/``: ``state.json`` (written once, atomically, by ``create``),
``lock`` (held by every verb that changes the container) and ``exec.fifo``, the start gate.
``create`` runs the bundle under a supervisor (:func:`sandboxer.supervisor.spawn`) with the
container process's stdio = create's own; PID 1 sets everything up, says "created" and blocks
opening the FIFO for writing (runc's exec.fifo).  ``start`` opens it for reading, which lets
PID 1 go; PID 1's end closes at exec (or carries the exec error), and ``start`` removes the FIFO.

From its exec on, PID 1 is left to whoever reaps the caller's orphans (conmon, a containerd shim:
they wait for it to learn its exit status), as runc's is: the supervisor and the set-up process exit.

The status is never stored, it is read off the processes: PID 1 alive (same start time, not a
zombie) and the FIFO present → created; alive without it → running; otherwise stopped — also when
the supervisor died before start, since PID 1 dies with it (parent-death signals down the chain).
"""

from __future__ import annotations

import os
import select
import stat
import sys
import time

from .. import jsonc, signals
from ..errors import SandboxerError, SetupError, UsageError
from ..procfs import start_time
from ..state import create_locked_dir, is_alive, remove_tree, state_root, subdir, validate_name, write_atomically

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any

__all__ = ["create", "start", "state", "kill", "delete", "features", "exists", "parse_signal"]

_FIFO = "exec.fifo"
_STATE = "state.json"
_ERROR = "error"


def _root() -> str:
    return subdir("oci")


def _dir(cid: str) -> str:
    if not cid or "/" in cid or cid in (".", ".."):
        raise UsageError(f"container {cid!r} does not exist", hint="see the ID given to 'sandboxer create'")
    return os.path.join(_root(), cid)


def exists(cid: str) -> bool:
    """A container of that ID exists under the state root (for ``kill``'s two meanings)."""
    try:
        return os.path.isfile(os.path.join(_dir(cid), _STATE))
    except SandboxerError:
        return False


def _read(cid: str) -> dict[str, Any]:
    try:
        with open(os.path.join(_dir(cid), _STATE)) as f:
            record: dict[str, Any] = jsonc.loads(f.read())
    except (OSError, ValueError):
        raise UsageError(f"container {cid} does not exist",
                         hint=f"see the ID given to 'sandboxer create' (state root {state_root()})") from None
    return record


class _Lock:
    """The container's lock, for the verbs that change it (state only reads atomically written files)."""

    def __init__(self, path: str) -> None:
        import fcntl

        try:
            self.fd = os.open(os.path.join(path, "lock"), os.O_RDWR | os.O_CLOEXEC)
        except FileNotFoundError:
            raise UsageError(f"container {os.path.basename(path)} does not exist") from None
        fcntl.flock(self.fd, fcntl.LOCK_EX)

    def __enter__(self) -> _Lock:
        return self

    def __exit__(self, *exc: object) -> None:
        os.close(self.fd)


def _alive(pid: int, started: int | None) -> bool:
    """``pid`` is still the process recorded with start time ``started`` (see :mod:`sandboxer.procfs`)."""
    from ..procfs import same_process

    return pid > 0 and started is not None and same_process(pid, started)


def _status(cid: str, record: dict[str, Any]) -> str:
    if not _alive(int(record["pid"]), record.get("pid_start")):
        return "stopped"
    return "created" if os.path.lexists(os.path.join(_dir(cid), _FIFO)) else "running"


def _document(record: dict[str, Any], status: str) -> dict[str, Any]:
    from ..runtime.hooks import state_document

    return state_document(oci_version=record["ociVersion"], id=record["id"], status=status,
                          pid=int(record["pid"]) if status != "stopped" else 0, bundle=record["bundle"],
                          annotations=record["annotations"])


def state(cid: str) -> dict[str, Any]:
    """The state JSON of runtime-spec "runtime.md", plus runc's ``rootfs`` and ``created``."""
    record = _read(cid)
    status = _status(cid, record)
    doc = _document(record, status)
    doc.setdefault("pid", 0)  # runc prints 0 for a stopped container; tools parse it as a number
    doc.update(rootfs=record["rootfs"], created=record["created"])
    return doc


def _run_hooks(record: dict[str, Any], phase: str, status: str) -> None:
    """poststart/poststop hooks, kept in the record by create; failures warn (runtime-spec config.md)."""
    hooks = record.get("hooks", {}).get(phase)
    if not hooks:
        return
    from ..runtime.hooks import run_hook_list
    from .spec import Hook, from_json

    run_hook_list([from_json(Hook, h, f"hooks.{phase}[{i}]") for i, h in enumerate(hooks)], phase,
                  jsonc.dumps(_document(record, status)))


# --- create ------------------------------------------------------------------------------------

def create(cid: str, bundle: str, *, pid_file: str | None = None, console_socket: str | None = None,
           debug: bool = False) -> int:
    """Set the container up and leave PID 1 waiting for ``start``; returns PID 1's host PID.

    Every check that can fail on bad input runs before anything is written.
    """
    from dataclasses import replace

    from ..runtime.plan import Rootfs
    from ..runtime.specconv import idmap_from_spec, plan_from_spec
    from ..runtime.userns import default_idmap
    from ..sandbox import _print_notice, load_bundle
    from ..state import StateDir, collect_garbage, new_id
    from .spec import to_json

    validate_name(cid)
    bundle = os.path.abspath(bundle)
    spec, rootfs = load_bundle(bundle)
    assert spec.process is not None
    if console_socket is not None:
        console_socket = os.path.abspath(console_socket)
        try:
            is_socket = stat.S_ISSOCK(os.stat(console_socket).st_mode)
        except OSError:
            is_socket = False
        if not is_socket:
            raise UsageError(f"--console-socket {console_socket} is not a unix socket",
                             hint="give the path of a listening AF_UNIX socket")
        if not spec.process.terminal:
            raise UsageError("--console-socket was given but process.terminal is false",
                             hint='set "terminal": true in config.json, or drop --console-socket')
    elif spec.process.terminal:
        raise UsageError("process.terminal is true but no --console-socket was given",
                         hint="the terminal's master end is sent there; or set terminal to false")
    if pid_file is not None:
        pid_file = _pid_file(pid_file)
    path = _dir(cid)
    if os.path.lexists(path):
        raise UsageError(f"container {cid} already exists", hint=f"delete it first: sandboxer delete {cid}")
    collect_garbage()
    idmap = idmap_from_spec(spec) or default_idmap()
    try:
        lock_fd = create_locked_dir(path)
    except FileExistsError:
        raise UsageError(f"container {cid} already exists") from None
    pid, sandbox = 0, None
    record: dict[str, Any] | None = None
    try:
        sandbox = StateDir.create(new_id())
        plan = plan_from_spec(spec, Rootfs("bundle", path=rootfs), sandbox, idmap=idmap, name=cid,
                              bundle=bundle, debug=debug)
        # poststart and poststop are start's and delete's; the supervisor runs the create-time ones
        plan.hooks = replace(spec.hooks, poststart=[], poststop=[]) if spec.hooks else None
        plan.start_gate = os.path.join(path, _FIFO)
        os.mkfifo(plan.start_gate, 0o600)
        os.chmod(plan.start_gate, 0o622)  # PID 1 may have switched to another user before it opens it
        plan.console_socket = console_socket
        for notice in plan.notices:
            _print_notice(notice)
        handed, sandbox = sandbox, None  # the supervisor releases it from now on
        from ..runtime.enter import identity_of

        record = {
            "ociVersion": spec.oci_version, "id": cid, "bundle": bundle, "rootfs": rootfs,
            "annotations": dict(spec.annotations), "sandbox": handed.id,
            "exec": identity_of(plan),  # what 'exec' needs to run a process as the container's runs
            "hooks": {phase: to_json(getattr(spec.hooks, phase)) for phase in ("poststart", "poststop")}
            if spec.hooks else {},
        }
        pid, pid_start, supervisor = _supervise(plan, lock_fd, path)
        record.update(pid=pid, pid_start=pid_start, supervisor_pid=supervisor[0], supervisor_start=supervisor[1],
                      created=time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()))
        write_atomically(os.path.join(path, _STATE), jsonc.dumps(record))
        if pid_file is not None:
            try:
                write_atomically(pid_file, str(pid))
            except OSError as e:  # checked up front; this is a race with whoever changed the directory
                raise SetupError(f"write --pid-file {pid_file}", e.strerror or str(e),
                                 hint="give a file in a directory you can write") from None
    except BaseException:
        if sandbox is not None:
            sandbox.release()
        if pid:
            signals.send(pid, signals.SIGKILL)
        if record is not None:  # the container was (partly) set up: runtime-spec "runtime.md" lifecycle
            _run_hooks(record, "poststop", "stopped")  # goes on at "destroy, then poststop hooks"
        remove_tree(path)
        raise
    finally:
        os.close(lock_fd)
    return pid


def _supervise(plan: Any, lock_fd: int, path: str) -> tuple[int, int, tuple[int, int]]:
    """Run the sandbox under a supervisor; returns once PID 1 waits at the gate:
    (PID 1, its start time, (supervisor pid, its start time)).  A failure after that is left in
    ``path/error`` for ``start`` to report."""
    from .. import plugins
    from ..runtime.init import Workload
    from ..sandbox import execute
    from ..supervisor import Answer, spawn

    def body(ready_w: int) -> int:
        ready = Answer(ready_w)
        stdio = (os.dup(0), os.dup(1), os.dup(2))  # create's own: the container process writes there
        null = os.open("/dev/null", os.O_RDWR)
        for fd in (0, 1, 2):  # ours go nowhere: a caller waiting for end of file waits for the container only
            os.dup2(null, fd)
        me = os.getpid()

        class _Created:
            @plugins.hookimpl
            def sandboxer_created(self, plan: Any, pid: int) -> None:
                ready.send(f"ok\t{pid}\t{start_time(pid)}\t{me}\t{start_time(me)}")

        plugins.register(_Created(), name="oci-create")
        try:
            execute(plan, Workload(argv=plan.args, stdio=stdio))
        except SandboxerError as e:
            ready.send(f"error\t{e}\t{e.hint or ''}")
            try:
                write_atomically(os.path.join(path, _ERROR), str(e))
            except OSError:
                pass  # deleted meanwhile
        ready.send("error\tthe container process exited during set-up\t")
        return 0

    answer = spawn(body, "create the container", close=(lock_fd,)).split("\t")
    return int(answer[1]), int(answer[2]), (int(answer[3]), int(answer[4]))


# --- start, kill, delete -------------------------------------------------------------------------

def start(cid: str) -> None:
    """Let PID 1 exec; return once it has (poststart hooks run, then we return), as runc does."""
    from ..runtime import sync

    path = _dir(cid)
    record = _read(cid)
    with _Lock(path):
        status = _status(cid, record)
        if status != "created":
            raise UsageError(f"cannot start container {cid}: it is {status}",
                             hint="only a created container starts; see 'sandboxer state'")
        fifo = os.path.join(path, _FIFO)
        try:  # before the gate opens: a short-lived process may be gone by the time we look again
            pidfd = os.pidfd_open(int(record["pid"]))
        except ProcessLookupError:
            pidfd = -1
        try:
            lines = _read_gate(fifo, pidfd) if pidfd >= 0 else []
        finally:
            if pidfd >= 0:
                os.close(pidfd)
        os.unlink(fifo)
    if not lines:
        try:
            with open(os.path.join(path, _ERROR)) as f:
                why = f": {f.read()}"
        except OSError:
            why = ""
        raise UsageError(f"container {cid} stopped before it was started{why}", hint="see 'sandboxer state'")
    for line in lines:
        if line[0] == "error":
            err = sync.error_from_fields(line)
            raise err
    _run_hooks(record, "poststart", "running")


def _pid_file(path: str) -> str:
    """``--pid-file`` checked before anything starts: written once the process runs, it must not fail then."""
    path = os.path.abspath(path)
    directory = os.path.dirname(path)
    if not os.path.isdir(directory):
        raise UsageError(f"--pid-file {path}: no such directory", hint="create the directory first")
    if not os.access(directory, os.W_OK | os.X_OK):
        raise UsageError(f"--pid-file {path}: the directory is not writable",
                         hint="give a file in a directory you can write")
    return path


def exec_process(cid: str, argv: list[str], *, process: str | None = None, cwd: str | None = None,
                 env: tuple[str, ...] = (), user: str | None = None, tty: bool = False,
                 console_socket: str | None = None, detach: bool = False, pid_file: str | None = None) -> int:
    """runc's ``exec``: one more process in a running container, with its namespaces, capabilities, seccomp
    filter and no_new_privs; ``process`` is a process.json (args, env, cwd, user, terminal) — what podman's
    conmon passes — and the flags override it.  Returns its exit code (0 at once with ``detach``)."""
    from ..runtime.enter import ExecOptions, enter

    record = _read(cid)
    status = _status(cid, record)
    if status != "running":
        raise UsageError(f"cannot exec in container {cid}: it is {status}",
                         hint="exec needs a running container (sandboxer start it first)")
    identity = dict(record["exec"])
    environment = list(identity["env"])
    if process is not None:
        proc = _process_json(process)
        argv = argv or [str(a) for a in proc.get("args") or []]
        environment = [str(e) for e in proc.get("env") or environment]
        cwd = cwd or proc.get("cwd")
        tty = tty or bool(proc.get("terminal"))
        who = proc.get("user") or {}
        if user is None and "uid" in who:
            user = f"{int(who['uid'])}:{int(who.get('gid', 0))}"
    if not argv:
        raise UsageError("exec needs a command", hint="give one after the ID, or args in --process")
    if tty and console_socket is None and not sys.stdin.isatty():
        raise UsageError("a terminal was asked for but there is none to relay and no --console-socket",
                         hint="give --console-socket SOCK (its listener gets the terminal)")
    if pid_file is not None:
        pid_file = _pid_file(pid_file)
    opts = ExecOptions(stdin_null=False, tty=tty, user=user, env=env, console_socket=console_socket,
                       detach=detach, pid_file=pid_file)
    return enter(int(record["pid"]), identity, argv, environment, cwd or identity["cwd"], opts,
                 started=record.get("pid_start"))


def _process_json(path: str) -> dict[str, Any]:
    """A process.json (runtime-spec config.md "process"), checked for the fields exec uses."""
    try:
        with open(path) as f:
            proc = jsonc.loads(f.read())
    except OSError as e:
        raise UsageError(f"cannot read --process {path}: {e.strerror}") from None
    except ValueError as e:
        raise UsageError(f"--process {path} is not valid JSON: {e}") from None
    if not isinstance(proc, dict) or not isinstance(proc.get("args", []), list) \
            or not isinstance(proc.get("env", []), list) or not isinstance(proc.get("user", {}), dict):
        raise UsageError(f"--process {path} is not a process object",
                         hint='give {"args": [...], "env": [...], "cwd": "/", "user": {"uid": 0, "gid": 0}}')
    return proc


def _read_gate(fifo: str, pidfd: int) -> list[list[str]]:
    """Open the gate (PID 1's blocked open for writing returns) and read PID 1's lines until its end
    closes at exec; [] if PID 1 (``pidfd``) died at the gate without opening it."""
    from ..runtime import sync

    fd = os.open(fifo, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC)
    try:
        poller = select.poll()
        poller.register(fd, select.POLLIN)
        poller.register(pidfd, select.POLLIN)
        while True:
            events = dict(poller.poll())
            if fd in events:  # what it wrote stays readable even if it has exited since
                break
            if pidfd in events:  # died at the gate (killed while created)
                return []
        os.set_blocking(fd, True)
        reader, lines = sync.Reader(fd), []
        while (line := reader.recv()) is not None:
            lines.append(line)
        return lines
    finally:
        os.close(fd)


def parse_signal(text: str) -> int:
    """``KILL``, ``SIGKILL``, ``kill``, ``9``, or a real-time one as ``RTMIN+3`` / ``SIGRTMAX-1`` (as runc)."""
    name = text.upper().removeprefix("SIG")
    number: int | None = None
    if text.isdecimal():
        number = int(text)
    elif name.startswith(("RTMIN", "RTMAX")):
        base = signals.SIGRTMIN if name.startswith("RTMIN") else signals.SIGRTMAX
        offset = name[5:]
        if offset == "" or (offset[0] in "+-" and offset[1:].isdecimal()):
            number = base + int(offset or "0")
    else:
        import signal  # its Signals enum, for names; the run and exec paths use the lighter ..signals

        member = signal.Signals.__members__.get(f"SIG{name}")
        number = int(member) if member is not None else None
    if number is None or (number != 0 and number not in signals.valid_signals()):  # 0: only "does it exist"
        raise UsageError(f"unknown signal {text!r}",
                         hint="a name (TERM, SIGKILL, RTMIN+1) or a number from 1 to "
                              f"{max(signals.valid_signals())}")
    return number


def kill(cid: str, sig: int, all_processes: bool = False) -> None:
    """Signal PID 1 (``all_processes``: every process of its PID namespace), created or running."""
    record = _read(cid)
    if _status(cid, record) == "stopped":
        raise UsageError(f"container {cid} is not running", hint="it has stopped; 'sandboxer delete' removes it")
    pid = int(record["pid"])
    targets = _pid_namespace_members(pid) if all_processes else [pid]
    for target in targets:
        signals.send(target, sig)


def _pid_namespace_members(pid: int) -> list[int]:
    try:
        ns = os.readlink(f"/proc/{pid}/ns/pid")
    except OSError:
        return [pid]
    members = [pid]
    for entry in os.listdir("/proc"):
        if entry.isdecimal() and int(entry) != pid:
            try:
                if os.readlink(f"/proc/{entry}/ns/pid") == ns:
                    members.append(int(entry))
            except OSError:
                pass
    return members


def _wait_gone(pid: int, started: int | None, timeout: float) -> bool:
    """Wait (on a pidfd, no polling) until that process has ended."""
    if not _alive(pid, started):
        return True
    try:
        pidfd = os.pidfd_open(pid)
    except ProcessLookupError:
        return True
    try:
        if not _alive(pid, started):  # the number was reused between the two looks
            return True
        return bool(select.select([pidfd], [], [], timeout)[0])
    finally:
        os.close(pidfd)


def delete(cid: str, force: bool = False) -> None:
    """Remove a stopped (or created) container; ``force`` kills a running one first.  poststop hooks
    run last and only warn.  ``force`` on an unknown id succeeds, as with runc (tools clean up after
    a failed create so), removing what a crashed create left."""
    path = _dir(cid)
    try:
        record = _read(cid)
    except UsageError:
        if not force:
            raise
        if _wait_while_created(cid, path):  # a create was at work: it finished, so delete what it made
            delete(cid, force=True)
        elif os.path.isdir(path) and not is_alive(path):  # what a crashed create left
            remove_tree(path)
        return
    with _Lock(path):
        status = _status(cid, record)
        if status == "running" and not force:
            raise UsageError(f"cannot delete container {cid}: it is running",
                             hint=f"stop it first (sandboxer kill {cid} KILL), or use delete --force")
        pid = int(record["pid"])
        if status != "stopped":
            signals.send(pid, signals.SIGKILL)
            _wait_gone(pid, record.get("pid_start"), 10.0)
        # the supervisor tears the sandbox down (mounts, its state dir) once PID 1 has gone
        if not _wait_gone(int(record["supervisor_pid"]), record.get("supervisor_start"), 10.0):
            print(f"sandboxer: warning: the supervisor of {cid} is still running", file=sys.stderr)
        _run_hooks(record, "poststop", "stopped")
        remove_tree(path)


#: how long ``delete --force`` waits for a ``create`` at work (hooks included) to finish or fail
_CREATE_WAIT_S = 60.0


def _wait_while_created(cid: str, path: str) -> bool:
    """Wait until a ``create`` that holds the container's lock has written its state (True) or failed
    and left (False): a tool's ``delete --force`` after its own create timed out must not succeed
    while that create goes on to leave a container behind."""
    state_file = os.path.join(path, _STATE)
    deadline = time.monotonic() + _CREATE_WAIT_S
    while os.path.isdir(path) and is_alive(path) and not os.path.exists(state_file):
        if time.monotonic() > deadline:
            raise UsageError(f"container {cid} is still being created",
                             hint="its create is still running (a slow hook?); delete --force it again later")
        time.sleep(0.05)
    return os.path.exists(state_file)


# --- features ------------------------------------------------------------------------------------

def features() -> dict[str, Any]:
    """What this runtime implements, as runtime-spec "features.md" describes it."""
    from ..runtime.capabilities import CAPABILITIES
    from ..runtime.mounts import _FLAG_OPTIONS, PROPAGATION
    from ..seccomp.profile import ACTIONS, ARCHITECTURES, FLAGS, OPERATORS
    from .spec import NAMESPACE_TYPES

    return {
        "ociVersionMin": "1.0.0",
        "ociVersionMax": "1.3.0",
        "hooks": ["prestart", "createRuntime", "createContainer", "startContainer", "poststart", "poststop"],
        "mountOptions": sorted([*_FLAG_OPTIONS, *PROPAGATION, "rro"]),
        "linux": {
            "namespaces": list(NAMESPACE_TYPES),
            "capabilities": list(CAPABILITIES),
            "cgroup": {"v1": False, "v2": False, "systemd": False, "systemdUser": False, "rdma": False},
            "seccomp": {"enabled": True, "actions": sorted(ACTIONS), "operators": sorted(OPERATORS),
                        "archs": sorted(ARCHITECTURES), "supportedFlags": sorted(FLAGS)},
            "apparmor": {"enabled": False},
            "selinux": {"enabled": False},
            "intelRdt": {"enabled": False},
            "mountExtensions": {"idmap": {"enabled": False}},
        },
    }
