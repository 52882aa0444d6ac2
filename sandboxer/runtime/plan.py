"""The plan of one sandbox: the runtime's typed config, decided before fork.

A :class:`Plan` is to sandboxer what libcontainer's ``configs.Config`` is to
runc: everything the set-up processes execute, already checked and
precomputed — mount options parsed, capability masks, the seccomp program
compiled, the id map read — so the forked side only carries it out and
every mistake in the input surfaces in the caller as a clear error.

Plans come from an OCI spec (:mod:`sandboxer.runtime.specconv`, for
bundles) or straight from :class:`sandboxer.SandboxOptions` (host-root runs,
which skip building a spec: its dataclasses cost more than the rest of a
start).  Records on the ``run`` path are named tuples or slotted classes,
not dataclasses, for the same reason.
"""

from __future__ import annotations

from .. import syscalls as sc
from ..records import record

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any

    from ..network import NetworkSpec
    from ..oci.spec import Hooks, Spec
    from ..state import StateDir
    from ..storage import Snapshotter
    from .mounts import MountSpec
    from .userns import IdMap

__all__ = ["Plan", "Rootfs", "Identity", "Caps", "NAMESPACE_FLAGS"]

NAMESPACE_FLAGS = {
    "user": sc.CLONE_NEWUSER, "mount": sc.CLONE_NEWNS, "pid": sc.CLONE_NEWPID,
    "network": sc.CLONE_NEWNET, "uts": sc.CLONE_NEWUTS, "ipc": sc.CLONE_NEWIPC,
    "cgroup": sc.CLONE_NEWCGROUP, "time": sc.CLONE_NEWTIME,
}


class Rootfs(record("Rootfs", "kind lowers path", defaults=((), None))):
    """Where the sandbox's ``/`` comes from.

    ``kind`` is ``"host"`` (the host's ``/`` under a throwaway upper layer),
    ``"layers"`` (unpacked image layers, top first) or ``"bundle"`` (an OCI
    bundle's ``rootfs/``, used in place as runc does).
    """

    kind: str
    lowers: tuple[str, ...]
    path: str | None
    __slots__ = ()


class Identity(record("Identity", "uid gid groups umask")):
    """Who the workload runs as, inside the sandbox's user namespace."""

    uid: int
    gid: int
    groups: tuple[int, ...]
    umask: int | None
    __slots__ = ()


class Caps(record("Caps", "bounding effective permitted inheritable ambient")):
    """The five capability sets, as bit masks."""

    bounding: int
    effective: int
    permitted: int
    inheritable: int
    ambient: int
    __slots__ = ()


class Plan:
    """A sandbox ready to start.  Plugins may adjust it in ``sandboxer_configure``."""

    __slots__ = (
        "id", "name", "state", "rootfs", "snapshotter", "idmap", "namespaces", "mounts",
        "masked_paths", "readonly_paths", "root_readonly", "hostname", "args", "env", "cwd",
        "identity", "caps", "no_new_privileges", "oom_score_adj", "rlimits", "seccomp_bpf",
        "seccomp_flags", "terminal", "init", "stdin_null", "hooks", "spec", "bundle",
        "annotations", "debug", "notices", "upper_dir", "network", "attached", "start_gate",
        "console_socket", "joins", "root_propagation", "sysctls", "devices", "time_offsets", "personality",
    )

    def __init__(self, *, id: str, state: StateDir, rootfs: Rootfs, idmap: IdMap, namespaces: int,
                 mounts: list[MountSpec], args: list[str], env: list[str], identity: Identity,
                 caps: Caps, name: str | None = None, snapshotter: Snapshotter | None = None,
                 masked_paths: tuple[str, ...] = (), readonly_paths: tuple[str, ...] = (),
                 root_readonly: bool = False, hostname: str | None = None, cwd: str = "/",
                 no_new_privileges: bool = True, oom_score_adj: int | None = None,
                 rlimits: tuple[tuple[int, int, int], ...] = (), seccomp_bpf: bytes | None = None,
                 seccomp_flags: int = 0, terminal: bool = False, init: bool = False,
                 stdin_null: bool = False, hooks: Hooks | None = None, spec: Spec | None = None,
                 bundle: str | None = None, annotations: dict[str, str] | None = None,
                 debug: bool = False, upper_dir: str | None = None, network: NetworkSpec | None = None) -> None:
        self.id = id                      #: 64 hex digits
        self.name = name                  #: the user's name for it, unique while it runs
        self.state = state                #: its locked state directory
        self.rootfs = rootfs
        self.snapshotter = snapshotter    #: None for bundles (their rootfs is used in place)
        self.idmap = idmap
        self.namespaces = namespaces      #: CLONE_NEW* flags to create
        self.mounts = mounts              #: in order, relative to the new root
        self.masked_paths = masked_paths
        self.readonly_paths = readonly_paths
        self.root_readonly = root_readonly
        self.hostname = hostname
        self.args = args
        self.env = env                    #: ``K=V`` strings
        self.cwd = cwd
        self.identity = identity
        self.caps = caps
        self.no_new_privileges = no_new_privileges
        self.oom_score_adj = oom_score_adj
        self.rlimits = rlimits            #: (resource, soft, hard)
        self.seccomp_bpf = seccomp_bpf    #: a compiled program, or None for unconfined
        self.seccomp_flags = seccomp_flags
        self.terminal = terminal
        self.init = init
        self.stdin_null = stdin_null
        self.hooks = hooks                #: OCI hooks (bundles only)
        self.spec = spec                  #: the OCI spec this plan came from, if any
        self.bundle = bundle
        self.annotations = annotations or {}
        self.debug = debug
        self.notices: list[str] = []      #: one-line messages for the user
        #: a host directory for the snapshotter's upper/work dirs, kept after the run
        #: (default: a tmpfs that dies with the sandbox)
        self.upper_dir = upper_dir
        #: what ``--network`` asked for (None: none, or whatever a bundle's namespaces say)
        self.network = network
        #: things the attach hook started for this sandbox (slirp4netns…): closed when it ends
        self.attached: list[Any] = []
        #: OCI ``create``: a FIFO PID 1 opens before exec and waits on until ``start`` opens it
        self.start_gate: str | None = None
        #: OCI ``--console-socket``: where the pty master goes (SCM_RIGHTS) instead of being relayed
        self.console_socket: str | None = None
        #: namespaces to join instead of creating: (CLONE_NEW* flag, path), the user namespace first
        self.joins: tuple[tuple[int, str], ...] = ()
        #: MS_SHARED/MS_SLAVE/MS_PRIVATE/MS_UNBINDABLE (with MS_REC) for the new ``/``; 0: leave it private
        self.root_propagation = 0
        #: (``/proc/sys`` path relative to it, value, in a joined namespace?): those of joined namespaces
        #: are written before the user namespace is made (its owner's rights), the others by PID 1
        self.sysctls: tuple[tuple[str, str, bool], ...] = ()
        #: device nodes: (path inside, "bind" to bind the host's node at the same path, or "fifo")
        self.devices: tuple[tuple[str, str], ...] = ()
        #: a time namespace's clock offsets: (``monotonic``/``boottime``, seconds, nanoseconds)
        self.time_offsets: tuple[tuple[str, int, int], ...] = ()
        #: ``personality(2)`` persona for the workload (``PER_LINUX32``…); None: leave it
        self.personality: int | None = None

    @property
    def short_id(self) -> str:
        return self.id[:12]

    def __repr__(self) -> str:
        return f"<Plan {self.short_id} {self.rootfs.kind} {self.args!r}>"
