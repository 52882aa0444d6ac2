"""The public API: describe a sandbox, run a command in it.

:class:`SandboxOptions` says what ``sandboxer run`` says with flags; it is
turned into an OCI :class:`~sandboxer.oci.Spec` (as docker turns flags into
config.json) and handed to the runtime.  Bundles skip the first step.
"""

from __future__ import annotations

import os
import pwd
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

from .errors import UsageError
from .runtime.init import Workload
from .runtime.launcher import ExitStatus
from .runtime.launcher import run as _launch
from .runtime.plan import Plan, Rootfs, build_plan
from .runtime.userns import IdMap, IdMapping, default_idmap
from .state import StateDir, collect_garbage, new_id, validate_name

__all__ = ["SandboxOptions", "Volume", "run", "run_bundle", "prepare", "host_spec", "DEFAULT_PATH"]

DEFAULT_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"


@dataclass(frozen=True)
class Volume:
    """A host path bound into the sandbox (``-v SRC:DST[:ro|rw]``)."""

    source: str
    destination: str
    readonly: bool = False

    @classmethod
    def parse(cls, text: str) -> Volume:
        parts = text.split(":")
        if len(parts) == 2:
            parts.append("rw")
        if len(parts) != 3 or not parts[0] or not parts[1]:
            raise UsageError(f"invalid volume {text!r}", hint="use -v SRC:DST[:ro|rw]")
        src, dst, mode = parts
        if mode not in ("ro", "rw"):
            raise UsageError(f"invalid volume mode {mode!r} in {text!r}", hint="use ro or rw")
        if not dst.startswith("/"):
            raise UsageError(f"volume destination {dst!r} is not absolute",
                             hint="give the path inside the sandbox, e.g. -v ./src:/src")
        src = os.path.abspath(src)
        if not os.path.exists(src):
            raise UsageError(f"volume source {src} does not exist",
                             hint="create it first (sandboxer binds host paths, it does not create them)")
        return cls(src, os.path.normpath(dst), mode == "ro")


@dataclass
class SandboxOptions:
    """Everything ``sandboxer run`` can be told, with Docker's defaults."""

    command: Sequence[str] = ()
    name: str | None = None
    hostname: str | None = None
    env: Sequence[str] = ()
    workdir: str = "/"
    user: str | None = None
    volumes: Sequence[Volume] = ()
    tmpfs: Sequence[str] = ()
    read_only: bool = False
    cap_add: Sequence[str] = ()
    cap_drop: Sequence[str] = ()
    seccomp: str = "default"          #: "default", "unconfined" or a profile path
    no_new_privileges: bool = True
    init: bool = False
    interactive: bool = False
    tty: bool = False
    network: str = "none"
    storage_driver: str | None = None
    debug: bool = False
    notices: list[str] = field(default_factory=list)


def _cap_names(names: Sequence[str]) -> list[str]:
    from .oci.spec import CAPABILITIES

    out = []
    for raw in names:
        name = raw.upper()
        if name == "ALL":
            out.extend(CAPABILITIES)
            continue
        name = name if name.startswith("CAP_") else f"CAP_{name}"
        if name not in CAPABILITIES:
            raise UsageError(f"unknown capability {raw!r}", hint="see capabilities(7), e.g. NET_ADMIN")
        out.append(name)
    return out


def _capability_set(opts: SandboxOptions) -> list[str]:
    from .oci.spec import DEFAULT_CAPS

    drop = set(_cap_names(opts.cap_drop))
    add = _cap_names(opts.cap_add)
    kept = [c for c in DEFAULT_CAPS if c not in drop]
    return kept + [c for c in dict.fromkeys(add) if c not in kept]


def _resolve_user(spec_user: str | None, idmap: IdMap) -> tuple[int, int, str]:
    """``-u UID[:GID]`` or a user name from the host's passwd; returns (uid, gid, home)."""
    if not spec_user:
        return 0, 0, "/root"
    name, _, group = spec_user.partition(":")
    try:
        uid = int(name)
        home = "/"
        try:
            entry = pwd.getpwuid(uid)
            gid_default, home = entry.pw_gid, entry.pw_dir
        except KeyError:
            gid_default = uid
    except ValueError:
        try:
            entry = pwd.getpwnam(name)
        except KeyError:
            raise UsageError(f"unknown user {name!r}", hint="use a numeric -u UID[:GID]") from None
        uid, gid_default, home = entry.pw_uid, entry.pw_gid, entry.pw_dir
    try:
        gid = int(group) if group else gid_default
    except ValueError:
        import grp

        try:
            gid = grp.getgrnam(group).gr_gid
        except KeyError:
            raise UsageError(f"unknown group {group!r}", hint="use a numeric -u UID:GID") from None
    if not idmap.maps_uid(uid) or not idmap.maps_gid(gid):
        raise UsageError(f"user {uid}:{gid} is not mapped in the sandbox",
                         hint="without a subuid/subgid range only 0 exists "
                              "(sudo usermod --add-subuids 100000-165535 --add-subgids 100000-165535 $USER)")
    return uid, gid, home


def _seccomp_profile(choice: str) -> dict[str, object] | None:
    from . import seccomp

    if choice == "unconfined":
        return None
    if choice == "default":
        return seccomp.default_profile()
    if not os.path.isfile(choice):
        raise UsageError(f"seccomp profile {choice} not found", hint="give a path to an OCI or Docker JSON profile")
    return seccomp.load_profile(choice)


def host_spec(opts: SandboxOptions, sandbox_id: str, idmap: IdMap):  # type: ignore[no-untyped-def]
    """The OCI spec of a host-root sandbox (what ``docker run`` makes of its flags)."""
    from .oci.spec import Capabilities, Linux, Mount, Namespace, Process, Root, Spec, User
    from .oci.template import MASKED_PATHS, READONLY_PATHS

    uid, gid, home = _resolve_user(opts.user, idmap)
    hostname = opts.hostname or sandbox_id[:12]
    caps = _capability_set(opts)
    env = [f"PATH={DEFAULT_PATH}", f"HOSTNAME={hostname}", f"HOME={home}"]
    if opts.tty:
        env.append("TERM=" + os.environ.get("TERM", "xterm"))
    env.extend(opts.env)
    devpts = ["nosuid", "noexec", "newinstance", "ptmxmode=0666", "mode=0620"]
    if idmap.maps_gid(5):
        devpts.append("gid=5")
    nsd = ["nosuid", "nodev", "noexec"]
    mounts = [
        Mount("/proc", "proc", "proc", nsd),
        Mount("/dev", "tmpfs", "tmpfs", ["nosuid", "strictatime", "mode=755", "size=65536k"]),
        Mount("/dev/pts", "devpts", "devpts", devpts),
        Mount("/dev/shm", "shm", "tmpfs", [*nsd, "mode=1777", "size=65536k"]),
        Mount("/dev/mqueue", "mqueue", "mqueue", nsd),
        Mount("/sys", "sysfs", "sysfs", [*nsd, "ro"]),
        # the host's scratch and runtime dirs hold its sockets: never share them
        Mount("/tmp", "tmpfs", "tmpfs", ["nosuid", "nodev", "mode=1777"]),
        Mount("/var/tmp", "tmpfs", "tmpfs", ["nosuid", "nodev", "mode=1777"]),
        Mount("/run", "tmpfs", "tmpfs", ["nosuid", "nodev", "mode=755"]),
    ]
    for dst in opts.tmpfs:
        path, _, extra = dst.partition(":")
        if not path.startswith("/"):
            raise UsageError(f"--tmpfs destination {path!r} is not absolute")
        mounts.append(Mount(path, "tmpfs", "tmpfs",
                            ["nosuid", "nodev", "mode=1777", *filter(None, extra.split(","))]))
    for v in opts.volumes:
        mounts.append(Mount(v.destination, v.source, "bind", ["rbind", "rro" if v.readonly else "rw"]))
    namespaces = ["pid", "ipc", "uts", "mount", "cgroup", "user"]
    if opts.network == "none":
        namespaces.append("network")
    elif opts.network != "host":
        raise UsageError(f"network mode {opts.network!r} is not available yet",
                         hint="use --network none (the default) or --network host")
    seccomp = _seccomp_profile(opts.seccomp)
    return Spec(
        process=Process(
            terminal=opts.tty, user=User(uid=uid, gid=gid), args=list(opts.command), env=env,
            cwd=opts.workdir,
            capabilities=Capabilities(bounding=caps, effective=caps if uid == 0 else [],
                                      permitted=caps if uid == 0 else []),
            no_new_privileges=opts.no_new_privileges),
        root=Root("/", readonly=opts.read_only),
        hostname=hostname,
        mounts=mounts,
        linux=Linux(namespaces=[Namespace(t) for t in namespaces],
                    masked_paths=list(MASKED_PATHS), readonly_paths=list(READONLY_PATHS),
                    seccomp=seccomp),
    )


def _idmap_from_spec(spec) -> IdMap | None:  # type: ignore[no-untyped-def]
    if not spec.linux or not spec.linux.uid_mappings:
        return None
    def conv(maps):  # type: ignore[no-untyped-def]
        return tuple(IdMapping(m.container_id, m.host_id, m.size) for m in maps)
    return IdMap(conv(spec.linux.uid_mappings), conv(spec.linux.gid_mappings))


def prepare(opts: SandboxOptions) -> Plan:
    """Check the options against the host and plan a host-root sandbox."""
    from . import storage
    from .plugins import call

    if not opts.command:
        raise UsageError("no command given", hint="sandboxer run [OPTIONS] -- CMD [ARG...]")
    if opts.name is not None:
        validate_name(opts.name)
    collect_garbage()
    idmap = default_idmap()
    if idmap.single and os.getuid() != 0:
        opts.notices.append("no subuid/subgid range for this user: the sandbox maps only "
                            "uid/gid 0 (sudo usermod --add-subuids 100000-165535 "
                            "--add-subgids 100000-165535 $USER)")
    snapshotter = storage.choose(storage.RootfsKind.HOST, opts.storage_driver)
    sandbox_id = new_id()
    spec = host_spec(opts, sandbox_id, idmap)
    if opts.workdir != "/" and not os.path.isdir(opts.workdir):
        # host root: the directory must exist on the host (it is the lower layer)
        raise UsageError(f"working directory {opts.workdir} does not exist",
                         hint="give an existing directory to -w (or create it in the command)")
    state = StateDir.create(sandbox_id, opts.name)
    try:
        os.mkdir(os.path.join(state.path, "scratch"), 0o700)
        plan = build_plan(spec, Rootfs("host", ("/",)), state, snapshotter=snapshotter, idmap=idmap,
                          name=opts.name, init=opts.init, stdin_null=not opts.interactive,
                          debug=opts.debug)
        call("sandboxer_configure", plan=plan)
    except BaseException:
        state.release()
        raise
    plan.notices.extend(opts.notices)
    return plan


def _execute(plan: Plan, workload: Workload, tty: bool) -> ExitStatus:
    try:
        return _launch(plan, workload, tty=tty)
    finally:
        plan.state.release()


def _print_notice(message: str) -> None:
    print(f"sandboxer: notice: {message}", file=sys.stderr)


def run(opts: SandboxOptions, call: Callable[[], int] | None = None,
        on_notice: Callable[[str], None] = _print_notice) -> ExitStatus:
    """Run ``opts.command`` (or ``call``, in-process) in a fresh host-root sandbox."""
    plan = prepare(opts)
    for notice in plan.notices:
        on_notice(notice)
    workload = Workload(call=call) if call else Workload(argv=list(opts.command))
    return _execute(plan, workload, opts.tty)


def run_bundle(bundle: str, sandbox_id: str | None = None, *, debug: bool = False,
               init: bool = False) -> ExitStatus:
    """Run an OCI bundle (``rootfs/`` + ``config.json``) as runc does."""
    from .oci.spec import load

    bundle = os.path.abspath(bundle)
    spec = load(bundle)
    if spec.root is None or spec.process is None:
        from .oci.spec import require_runnable

        require_runnable(spec)
    assert spec.root is not None and spec.process is not None
    rootfs = spec.root.path if os.path.isabs(spec.root.path) else os.path.join(bundle, spec.root.path)
    if not os.path.isdir(rootfs):
        raise UsageError(f"bundle rootfs {rootfs} is not a directory", hint="set root.path in config.json")
    if sandbox_id is not None:
        validate_name(sandbox_id)
    collect_garbage()
    idmap = _idmap_from_spec(spec) or default_idmap()
    state = StateDir.create(new_id(), sandbox_id)
    try:
        os.mkdir(os.path.join(state.path, "scratch"), 0o700)
        plan = build_plan(spec, Rootfs("bundle", path=rootfs), state, snapshotter=None, idmap=idmap,
                          name=sandbox_id, bundle=bundle, init=init, debug=debug)
    except BaseException:
        state.release()
        raise
    return _execute(plan, Workload(argv=list(spec.process.args)), spec.process.terminal)

