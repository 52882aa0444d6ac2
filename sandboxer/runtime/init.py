"""The sandbox side of set-up, in order, top to bottom.

Two forked processes do the work (DESIGN.md, "One sandbox, step by step"):

``setup_main`` — the *set-up process*, forked by the caller:
    unshare the user namespace → unshare mount+net+uts+ipc while the
    caller writes the id maps → wait while it attaches cgroup/network → unshare cgroup → make
    ``/`` private → mount the rootfs (snapshotter) → unshare pid → fork
    PID 1 → report its host PID → wait for it → report its wait status.

``container_main`` — PID 1 of the new PID namespace:
    mounts (/proc, /dev, /sys, volumes…) → masks and read-only paths →
    [the caller's prestart/createRuntime hooks → createContainer hooks] →
    pivot_root → hostname → rlimits → no_new_privs → bounding set → user
    and capabilities → seccomp → cwd → [wait for OCI start] →
    [startContainer hooks] → exec the workload.

Neither ever returns into the caller's stack: every path ends in
``os._exit``.  Nothing is imported after fork: once the root has moved,
the caller's Python library may not exist.  Failures travel to the caller over the message pipe as
``error`` messages naming the step.
"""

from __future__ import annotations

import os
import resource

from .. import signals
from .. import syscalls as sc
from ..errors import SetupError
from . import mounts, sync
from .capabilities import drop_bounding, switch_user_and_set_caps
from .plan import Plan
from .process import (
    STOP_SIGNALS,
    attach_terminal,
    env_dict,
    flush_std,
    own_session_keyring,
    reset_signals,
    stdin_devnull,
)
from .reaper import exec_workload, run_as_init

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Callable

__all__ = ["Pipes", "Workload", "setup_main", "container_main", "HANDED_OFF"]

#: the set-up process's report, instead of a wait status, when PID 1 was left to the caller's reaper
HANDED_OFF = "handed-off"

_EARLY_NS = sc.CLONE_NEWUSER | sc.CLONE_NEWNS | sc.CLONE_NEWNET | sc.CLONE_NEWUTS | sc.CLONE_NEWIPC


class Pipes:
    """File descriptors of the set-up handshake, as seen by the sandbox side."""

    __slots__ = ("msg_w", "go_r", "hooks_r", "status_w", "pty_slave", "started_w", "gate_w")

    def __init__(self, msg_w: int, go_r: int, hooks_r: int, status_w: int, pty_slave: int) -> None:
        self.msg_w = msg_w          #: messages to the caller; PID 1's copy closes at exec
        self.go_r = go_r            #: the caller's "go" after id maps and attachments
        #: the state JSON for our hooks, after the caller's createRuntime/prestart ones (-1: no hooks)
        self.hooks_r = hooks_r
        self.status_w = status_w    #: the set-up process's final report: PID 1's wait status
        self.pty_slave = pty_slave  #: the terminal for the workload, or -1
        #: OCI create: PID 1 tells the set-up process that start opened the gate; closes at exec
        self.started_w = -1
        #: OCI create: our end of the start gate, once start opened it: errors go there too; closes at exec
        self.gate_w = -1


class Workload:
    """What PID 1 finally runs: ``argv`` via exec, or ``call`` in-process.

    ``call`` serves the pytest plugin, which runs a test function inside
    the sandbox; its return value is the exit status.
    """

    __slots__ = ("argv", "call", "stdio", "pump")

    def __init__(self, argv: list[str] | None = None, call: Callable[[], int] | None = None,
                 stdio: tuple[int, int, int] | None = None,
                 pump: Callable[[int, float | None], None] | None = None) -> None:
        self.argv = argv
        self.call = call
        self.stdio = stdio  #: file descriptors to become the workload's 0, 1 and 2
        #: the caller's work while the sandbox runs (a supervisor relays output to its log):
        #: ``pump(status_fd, deadline)`` returns once ``status_fd`` is readable or at the deadline
        self.pump = pump


def setup_main(plan: Plan, pipes: Pipes, workload: Workload, caller: int) -> None:
    """The set-up process (see module docstring).  Never returns."""
    code = 125
    try:
        sc.set_pdeathsig(signals.SIGKILL)
        if os.getppid() != caller:
            os._exit(125)  # the caller died before the death signal was armed
        for sig in STOP_SIGNALS:
            signals.signal(sig, signals.SIG_IGN)  # PID 1 decides; reset there
        code = _setup(plan, pipes, workload)
    except BaseException as e:  # report everything: the caller must not hang
        sync.send_error(pipes.msg_w, e)
    finally:
        os._exit(code)


def _setup(plan: Plan, pipes: Pipes, workload: Workload) -> int:
    # joined namespaces first, as runc does: a joined user namespace (listed first) gives the rights to
    # join the others; without one, our own rights do (a rootless podman's netns, owned by its userns)
    for flag, path in plan.joins:
        _join(flag, path)
    if plan.sysctls:  # those of joined namespaces: our own /proc/sys shows them now
        mounts.write_sysctls("/", [s for s in plan.sysctls if s[2]])
    early = plan.namespaces & _EARLY_NS
    # the user namespace alone first, so that the caller writes its maps (two set-uid helpers, ~2 ms)
    # while we make the others (a network namespace alone takes ~0.6 ms): they belong to it all the same
    if early & sc.CLONE_NEWUSER:
        sc.unshare(sc.CLONE_NEWUSER)
    sync.send(pipes.msg_w, "userns")
    try:
        _step("unshare mount, network, UTS and IPC namespaces", sc.unshare, early & ~sc.CLONE_NEWUSER)
    except SetupError as e:
        sync.send_error(pipes.msg_w, e)
        os.read(pipes.go_r, 1)  # alive while the caller writes our maps; it reads why, then kills us
        return 125
    sync.send(pipes.msg_w, "namespaces")  # the attach hook may enter them now (slirp4netns: our netns)
    if os.read(pipes.go_r, 1) != b"g":
        return 125  # the caller gave up (it reported the reason itself)
    os.close(pipes.go_r)
    if plan.namespaces & sc.CLONE_NEWNET:
        _step("bring up lo", sc.interface_up, "lo")
    if plan.namespaces & sc.CLONE_NEWCGROUP:
        _step("unshare cgroup namespace", sc.unshare, sc.CLONE_NEWCGROUP)
    # a shared or slave rootfs (linux.rootfsPropagation) receives the host's mount events: a slave of them
    receive = plan.root_propagation & (sc.MS_SHARED | sc.MS_SLAVE)
    _step("make / private", sc.mount, None, "/", None, sc.MS_REC | (sc.MS_SLAVE if receive else sc.MS_PRIVATE))
    rootfs = _mount_rootfs(plan)
    if plan.namespaces & sc.CLONE_NEWPID:
        _step("unshare pid namespace", sc.unshare, sc.CLONE_NEWPID)
    if plan.namespaces & sc.CLONE_NEWTIME:  # like the PID namespace, it is PID 1's: ours only for children
        _step("unshare time namespace", sc.unshare, sc.CLONE_NEWTIME)
        if plan.time_offsets:  # only before a first process is in it
            _step("set the time namespace's offsets", _write, "/proc/self/timens_offsets",
                  "".join(f"{clock} {secs} {nanos}\n" for clock, secs, nanos in plan.time_offsets))
    # OCI create: from its exec on, PID 1 belongs to whoever reaps the caller's orphans (conmon, a
    # containerd shim: they wait for it themselves), as runc's does: we leave when it execs
    started_r = -1
    if plan.start_gate is not None:
        started_r, pipes.started_w = os.pipe()
    pid1 = os.fork()
    if pid1 == 0:
        if started_r >= 0:
            os.close(started_r)
        container_main(plan, pipes, workload, rootfs)
    sync.send(pipes.msg_w, "pid", pid1)
    os.close(pipes.msg_w)
    if pipes.pty_slave >= 0:
        os.close(pipes.pty_slave)
    if started_r >= 0:
        os.close(pipes.started_w)
        if os.read(started_r, 1) == b"g":  # start opened the gate (else PID 1 died before: ours to reap)
            os.read(started_r, 1)  # end of file: PID 1 has exec'ed (its end is close-on-exec), or died
            os.write(pipes.status_w, f"\n{HANDED_OFF}\n".encode())
            return 0
    while True:
        pid, status = os.waitpid(-1, 0)
        if pid == pid1:
            break  # other children: the fuse daemon, reaped in passing
    # on a line of its own whatever an --init PID 1 (which the workload can reach) wrote before
    os.write(pipes.status_w, f"\n{status}\n".encode())
    _unmount_rootfs(rootfs)
    return 0


def _join(flag: int, path: str) -> None:
    """Join the namespace at ``path`` (OCI ``linux.namespaces[].path``)."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
        try:
            sc.setns(fd, flag)
        finally:
            os.close(fd)
    except OSError as e:
        raise SetupError(f"join namespace {path}", e.strerror or str(e),
                         hint="joining another sandbox's namespaces needs its user namespace joined too") from e


def _step(what: str, fn: Callable[..., object], *args: object) -> None:
    try:
        fn(*args)
    except OSError as e:
        raise SetupError(what, e.strerror or str(e)) from e


def _mount_rootfs(plan: Plan) -> str:
    """Mount the sandbox's root at a private path (a bundle's: its own); returns that path.

    The scratch tmpfs exists only in this mount namespace, so the upper
    layer and the mount point vanish with the sandbox whatever happens.
    """
    scratch = os.path.join(plan.state.path, "scratch")
    _step("mount scratch tmpfs", sc.mount, "tmpfs", scratch, "tmpfs", sc.MS_NODEV | sc.MS_NOSUID, "mode=0755")
    if plan.rootfs.kind == "bundle":  # bound onto itself, as runc does: the hooks (createContainer,
        # a prestart one entering our mount namespace) find our mounts where config.json's root.path says
        assert plan.rootfs.path is not None
        _step(f"bind rootfs {plan.rootfs.path}", sc.mount, plan.rootfs.path, plan.rootfs.path, None,
              sc.MS_BIND | sc.MS_REC)
        return plan.rootfs.path
    target = os.path.join(scratch, "root")
    os.mkdir(target, 0o755)
    if plan.snapshotter is None:  # a read-only host root needs no overlay: bind it, as bwrap does
        _step("bind the host root", sc.mount, "/", target, None, sc.MS_BIND | sc.MS_REC)
        _step("make the host root read-only", sc.mount_setattr_rdonly_recursive, target)
        return target
    assert plan.snapshotter is not None
    layers = plan.upper_dir  # kept on disk (pytest --sandbox-keep-failed, the sandbox fixture)
    if layers is None:
        layers = os.path.join(scratch, "layers")
        os.mkdir(layers, 0o700)
    try:
        plan.snapshotter.mount(plan.rootfs.lowers, layers, target)
    except OSError as e:
        raise SetupError(f"mount rootfs ({plan.snapshotter.name})", e.strerror or str(e),
                         hint="try another --storage-driver; see 'sandboxer doctor'") from e
    return target


def _unmount_rootfs(rootfs: str) -> None:
    """Detach the rootfs so a FUSE daemon sees the unmount and exits."""
    try:
        sc.umount(rootfs, sc.MNT_DETACH)
    except OSError:
        pass


def container_main(plan: Plan, pipes: Pipes, workload: Workload, rootfs: str) -> None:
    """PID 1 of the sandbox (see module docstring).  Never returns."""
    code = 125
    try:
        sc.set_pdeathsig(signals.SIGKILL)
        code = _container(plan, pipes, workload, rootfs)
    except BaseException as e:
        for fd in (pipes.gate_w, pipes.msg_w):  # the gate first: the caller kills us once it reads msg_w
            if fd >= 0:
                sync.send_error(fd, e)
        code = getattr(e, "exit_code", 125)
    finally:
        os._exit(code)


def _container(plan: Plan, pipes: Pipes, workload: Workload, rootfs: str) -> int:
    if workload.stdio is not None:
        for target, fd in enumerate(workload.stdio):
            os.dup2(fd, target)
    if pipes.pty_slave >= 0:
        attach_terminal(pipes.pty_slave)  # a session of its own, the pty its controlling terminal
    else:
        # a session of its own with no controlling terminal, as runc's init: the caller's terminal
        # stays out of reach (TIOCSTI would type into the user's shell); signals come via the caller
        os.setsid()
        if plan.stdin_null and workload.stdio is None:
            _step("open /dev/null", stdin_devnull)

    # -- the mount table, then the new root
    mounts.mount_all(rootfs, plan.mounts)
    if plan.devices:
        mounts.add_devices(rootfs, plan.devices)
    if plan.sysctls:
        mounts.write_sysctls(rootfs, [s for s in plan.sysctls if not s[2]])
    if pipes.pty_slave >= 0:
        _step("bind /dev/console", mounts.bind_console, rootfs, os.ttyname(0))
    mounts.mask_paths(rootfs, plan.masked_paths)
    mounts.readonly_paths(rootfs, plan.readonly_paths)
    hooks, hook_state = plan.hooks, ""  # the OCI hooks; the state JSON they read
    if pipes.hooks_r >= 0:
        assert hooks is not None
        sync.send(pipes.msg_w, "hooks")  # the caller runs prestart/createRuntime hooks, then sends it
        hook_state = _receive_state(pipes.hooks_r)
        if not hook_state:
            return 125  # the caller gave up (it reported the reason itself)
        from .hooks import run_hook_list  # loaded by the caller before fork (see launcher.run)

        # in our namespaces, before pivot_root: their paths resolve, and they see, the runtime's tree
        run_hook_list(hooks.create_container, "create_container", hook_state)
    if plan.root_readonly:
        _step("make the root read-only", mounts.remount_readonly, rootfs)
    # the OCI start gate lives in the caller's state dir: keep a handle on it across pivot_root
    gate = -1 if plan.start_gate is None else os.open(plan.start_gate, os.O_PATH | os.O_CLOEXEC)
    mounts.pivot_into(rootfs)
    if plan.root_propagation:
        _step("set the rootfs propagation", sc.mount, None, "/", None, plan.root_propagation)

    # -- identity and limits
    if plan.seccomp_bpf is None:  # keyctl allowed: the caller's session keyring must not be the sandbox's
        own_session_keyring()
    if plan.hostname is not None:
        _step("set hostname", sc.sethostname, plan.hostname)
    _set_rlimits(plan.rlimits)
    if plan.personality is not None:
        _step("set the personality", sc.personality, plan.personality)
    if plan.oom_score_adj is not None:
        _step("set oom_score_adj", _write, "/proc/self/oom_score_adj", str(plan.oom_score_adj))
    if plan.no_new_privileges:
        _step("set no_new_privs", sc.set_no_new_privs)
    elif plan.seccomp_bpf is not None:
        _load_seccomp(plan)  # needs CAP_SYS_ADMIN without no_new_privs: before the drop

    # -- privileges: the bounding set, the user, the capability sets, seccomp last
    caps, who = plan.caps, plan.identity
    drop_bounding(caps.bounding)
    if who.umask is not None:
        os.umask(who.umask)
    switch_user_and_set_caps(who.uid, who.gid, [g for g in who.groups if plan.idmap.maps_gid(g)],
                             effective=caps.effective, permitted=caps.permitted,
                             inheritable=caps.inheritable, ambient=caps.ambient,
                             set_groups=not plan.idmap.single)
    if plan.no_new_privileges and plan.seccomp_bpf is not None:
        _load_seccomp(plan)
    try:
        os.chdir(plan.cwd)
    except OSError as e:
        raise SetupError(f"chdir to {plan.cwd}", e.strerror or str(e),
                         hint="the working directory must exist in the sandbox (-w)") from e
    if gate >= 0:
        sync.send(pipes.msg_w, "created")
        pipes.gate_w = _await_start(gate, pipes.started_w)
    if hooks is not None and hooks.start_container:
        # as runc does: from here, confined as the workload will be (its user, capabilities, no_new_privs
        # and seccomp filter) — the hook is a program of the container's root filesystem
        run_hook_list(hooks.start_container, "start_container", hook_state)  # imported with the state above
    return _run_workload(plan, pipes, workload)


def _receive_state(hooks_r: int) -> str:
    """The state JSON line the caller sends (:func:`sandboxer.runtime.hooks.send_state`); "" if none."""
    line = sync.Reader(hooks_r).recv()
    os.close(hooks_r)
    return "\t".join(line) if line else ""


def _await_start(gate: int, started_w: int) -> int:
    """Block until OCI ``start`` opens the gate FIFO; returns our end, which closes at exec.

    Reopened through ``/proc/self/fd`` (as runc does with its exec.fifo): opening a FIFO for
    writing waits for a reader, and the path itself is outside our new root.
    """
    try:
        fd = os.open(f"/proc/self/fd/{gate}", os.O_WRONLY | os.O_CLOEXEC)
    except OSError as e:
        raise SetupError("wait for start", e.strerror or str(e),
                         hint="the container needs /proc mounted (a proc entry in mounts)") from e
    os.close(gate)
    os.write(fd, b"start\n")
    sc.set_pdeathsig(0)  # the set-up process leaves when we exec (see _setup); we stay
    os.write(started_w, b"g")
    return fd


def _write(path: str, text: str) -> None:
    with open(path, "w") as f:
        f.write(text)


def _set_rlimits(rlimits: tuple[tuple[int, int, int], ...]) -> None:
    for rtype, soft, hard in rlimits:
        try:
            resource.setrlimit(rtype, (soft, hard))
        except (OSError, ValueError) as e:
            raise SetupError(f"set rlimit {rtype}", str(e),
                             hint="a rootless sandbox cannot raise a hard limit above the caller's") from e


def _load_seccomp(plan: Plan) -> None:
    assert plan.seccomp_bpf is not None
    try:
        sc.seccomp_set_filter(plan.seccomp_bpf, plan.seccomp_flags)
    except OSError as e:
        raise SetupError("load seccomp filter", e.strerror or str(e)) from e


def _run_workload(plan: Plan, pipes: Pipes, workload: Workload) -> int:
    reset_signals()
    call, argv = workload.call, workload.argv
    if call is not None:
        def start() -> int:
            os.close(pipes.msg_w)  # end of file for the caller: the workload has started
            try:
                return call()
            finally:
                flush_std()  # os._exit follows: Python's buffers would be lost
    else:
        assert argv
        env = env_dict(plan.env)

        def start() -> int:
            exec_workload(argv, env, pipes.msg_w, pipes.gate_w)
            return 127
    return run_as_init(start, pipes.msg_w, pipes.status_w) if plan.init else start()
