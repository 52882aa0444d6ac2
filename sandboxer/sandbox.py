"""The public API: describe a sandbox, run a command in it.

:class:`SandboxOptions` says what ``sandboxer run`` says with flags.  For a
host-root sandbox it is turned straight into a :class:`Plan` (what docker
would write into config.json, without paying for the OCI dataclasses on
every start); bundles go through :mod:`sandboxer.runtime.specconv`.
"""

from __future__ import annotations

import os
import pwd
import sys

from .errors import HostError, SetupError, UsageError
from .records import record
from .runtime.capabilities import CAPABILITIES, DEFAULT_CAPS, mask
from .runtime.init import Workload
from .runtime.launcher import run as _launch
from .runtime.mounts import MASKED_PATHS, READONLY_PATHS, MountSpec, parse_options
from .runtime.plan import NAMESPACE_FLAGS, Caps, Identity, Plan, Rootfs
from .runtime.process import ExitStatus
from .runtime.userns import IdMap, default_idmap
from .state import IMAGE_LAYERS, StateDir, collect_garbage, new_id, validate_name
from .syscalls import CLONE_NEWUSER

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Callable, Sequence
    from typing import Any

    from .images.store import Image
    from .network import NetworkSpec
    from .oci.spec import Spec
    from .storage import Snapshotter

__all__ = ["SandboxOptions", "Volume", "run", "run_bundle", "load_bundle", "prepare", "execute", "release",
           "DEFAULT_PATH"]

DEFAULT_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"

_NSD = ("nosuid", "nodev", "noexec")
#: the host-root sandbox's own mounts (destination, source, type, options), before volumes
_HOST_MOUNTS = (
    ("/proc", "proc", "proc", _NSD),
    ("/dev", "tmpfs", "tmpfs", ("nosuid", "strictatime", "mode=755", "size=65536k")),
    ("/dev/pts", "devpts", "devpts", ("nosuid", "noexec", "newinstance", "ptmxmode=0666", "mode=0620")),
    ("/dev/shm", "shm", "tmpfs", (*_NSD, "mode=1777", "size=65536k")),
    ("/dev/mqueue", "mqueue", "mqueue", _NSD),
    ("/sys", "sysfs", "sysfs", (*_NSD, "ro")),
    # the host's scratch and runtime dirs hold its sockets and sessions: never share them
    ("/tmp", "tmpfs", "tmpfs", ("nosuid", "nodev", "mode=1777")),
    ("/var/tmp", "tmpfs", "tmpfs", ("nosuid", "nodev", "mode=1777")),
    ("/run", "tmpfs", "tmpfs", ("nosuid", "nodev", "mode=755")),
)


#: private tmpfs mounts only the host root needs (its /tmp and /run hold the host's sessions)
_HOST_ONLY = ("/tmp", "/var/tmp", "/run")


class Volume(record("Volume", "source destination readonly", defaults=(False,))):
    """A host path bound into the sandbox (``-v SRC:DST[:ro|rw]``)."""

    source: str
    destination: str
    readonly: bool
    __slots__ = ()

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


class SandboxOptions(record(
        "SandboxOptions",
        ("command", "name", "hostname", "env", "workdir", "user", "volumes", "tmpfs", "read_only",
         "cap_add", "cap_drop", "seccomp", "no_new_privileges", "init", "interactive", "tty", "network",
         "storage_driver", "debug", "upper_dir", "image", "publish", "dns", "add_host", "publish_all",
         "network_aliases"),
        defaults=((), None, None, (), None, None, (), (), False, (), (), "default", True, False, False,
                  False, "none", None, False, None, None, (), (), (), False, ()))):
    """Everything ``sandboxer run`` can be told, with Docker's defaults.

    ``command`` (argv), ``name``, ``hostname`` (default: the short id),
    ``env`` (``K=V``), ``workdir`` (default: the image's, else ``/``),
    ``user`` (``UID[:GID]`` or a name),
    ``volumes`` (:class:`Volume`), ``tmpfs`` (``DST[:OPTS]``), ``read_only``,
    ``cap_add``/``cap_drop`` (names, ``ALL``), ``seccomp`` (``"default"``,
    ``"unconfined"`` or a profile path), ``no_new_privileges``, ``init``,
    ``interactive`` (keep stdin), ``tty``, ``network`` (``"none"``,
    ``"host"``, ``"pasta"``, ``"slirp4netns[:allow_host_loopback=true]"`` or the name of a
    user-defined network), ``network_aliases`` (more names for peers on that network), ``publish``
    (``-p`` mappings), ``publish_all`` (``-P``: the image's exposed ports, each on a free host port),
    ``dns``, ``add_host`` (``NAME:IP``), ``storage_driver`` (None: automatic), ``debug``,
    ``upper_dir`` (a host directory that keeps the writable layer after the
    run, and reuses it on the next; default: a tmpfs that dies with the
    sandbox), ``image`` (a name in the image store, or an
    :class:`~sandboxer.images.store.Image` whose layers are in the store but
    that has no name, as a build's image-so-far; None: the host root).
    """

    command: Sequence[str]
    name: str | None
    hostname: str | None
    env: Sequence[str]
    workdir: str | None
    user: str | None
    volumes: Sequence[Volume]
    tmpfs: Sequence[str]
    read_only: bool
    cap_add: Sequence[str]
    cap_drop: Sequence[str]
    seccomp: str
    no_new_privileges: bool
    init: bool
    interactive: bool
    tty: bool
    network: str
    storage_driver: str | None
    debug: bool
    upper_dir: str | None
    image: str | Image | None
    publish: Sequence[str]
    dns: Sequence[str]
    add_host: Sequence[str]
    publish_all: bool
    network_aliases: Sequence[str]
    __slots__ = ()


def _cap_names(names: Sequence[str]) -> list[str]:
    out: list[str] = []
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


def capability_set(cap_add: Sequence[str], cap_drop: Sequence[str]) -> list[str]:
    """Docker's default set, less ``cap_drop``, plus ``cap_add`` (``ALL`` works in both)."""
    drop = set(_cap_names(cap_drop))
    kept = [c for c in DEFAULT_CAPS if c not in drop]
    return kept + [c for c in dict.fromkeys(_cap_names(cap_add)) if c not in kept]


class _HostAccounts:
    """The host's passwd and group databases, for host-root sandboxes."""

    def user(self, name: str) -> tuple[int, int, str] | None:
        try:
            entry = pwd.getpwnam(name)
        except KeyError:
            return None
        return entry.pw_uid, entry.pw_gid, entry.pw_dir

    def by_uid(self, uid: int) -> tuple[int, str] | None:
        try:
            entry = pwd.getpwuid(uid)
        except KeyError:
            return None
        return entry.pw_gid, entry.pw_dir

    def group(self, name: str) -> int | None:
        import grp

        try:
            return grp.getgrnam(name).gr_gid
        except KeyError:
            return None


def resolve_user(spec_user: str | None, idmap: IdMap, accounts: Any) -> tuple[int, int, str]:
    """``-u UID[:GID]`` or names from ``accounts`` (the host's or the image's); returns (uid, gid, home)."""
    if not spec_user:
        return 0, 0, "/root"
    name, _, group = spec_user.partition(":")
    if name.isdecimal():
        uid = int(name)
        gid_default, home = accounts.by_uid(uid) or (uid, "/")
    else:
        found = accounts.user(name)
        if found is None:
            raise UsageError(f"unknown user {name!r}", hint="use a numeric -u UID[:GID]")
        uid, gid_default, home = found
    if not group:
        gid = gid_default
    elif group.isdecimal():
        gid = int(group)
    else:
        found_gid = accounts.group(group)
        if found_gid is None:
            raise UsageError(f"unknown group {group!r}", hint="use a numeric -u UID:GID")
        gid = found_gid
    if not idmap.maps_uid(uid) or not idmap.maps_gid(gid):
        # without a subordinate range it is this host's limit (a test may skip on it); beyond one, a mistake
        if idmap.single:
            raise HostError(f"user {uid}:{gid} is not mapped in the sandbox",
                            hint="without a subuid/subgid range only 0 exists (sudo usermod --add-subuids "
                                 "100000-165535 --add-subgids 100000-165535 $USER)")
        top = max(m.container_id + m.size for m in idmap.uids) - 1
        raise UsageError(f"user {uid}:{gid} is not mapped in the sandbox", hint=f"the sandbox maps ids 0-{top}")
    return uid, gid, home


def _seccomp(choice: str, bounding: list[str]) -> tuple[bytes | None, int]:
    if choice == "unconfined":
        return None, 0
    if choice == "default":
        from .seccomp import default_bpf

        return default_bpf(bounding)
    if not os.path.isfile(choice):
        raise UsageError(f"seccomp profile {choice} not found",
                         hint="give a path to an OCI or Docker JSON profile")
    from .runtime.specconv import seccomp_program

    return seccomp_program(choice, bounding)


def _host_mounts(opts: SandboxOptions, idmap: IdMap, image: bool = False) -> list[MountSpec]:
    mounts = []
    for dst, src, fstype, options in _HOST_MOUNTS:
        if image and dst in _HOST_ONLY:
            continue  # an image's own /tmp and /run are its business
        if dst == "/dev/pts" and idmap.maps_gid(5):
            options = (*options, "gid=5")  # the tty group, when the namespace has it
        mounts.append(parse_options(dst, src, fstype, options))
    ours = []
    for entry in opts.tmpfs:
        path, _, extra = entry.partition(":")
        if not path.startswith("/"):
            raise UsageError(f"--tmpfs destination {path!r} is not absolute")
        _check_destination(path, "--tmpfs")
        ours.append(parse_options(path, "tmpfs", "tmpfs",
                                  ["nosuid", "nodev", "mode=1777", *filter(None, extra.split(","))]))
    for v in opts.volumes:
        _check_destination(v.destination, "-v")
        ours.append(parse_options(v.destination, v.source, "bind", ["rbind", "rro" if v.readonly else "rw"]))
    # outer paths first, as docker and podman order them: a volume inside another stays visible
    # whatever order they were given in (stable: the given order among equals)
    ours.sort(key=lambda m: os.path.normpath(m.destination).count("/"))
    return mounts + ours


#: what a volume may cover under /proc: runc's list (files lxcfs-style tools replace)
_PROC_FILES = frozenset(f"/proc/{name}" for name in (
    "cpuinfo", "diskstats", "meminfo", "stat", "swaps", "uptime", "loadavg", "slabinfo", "net/dev"))


def _check_destination(path: str, option: str) -> None:
    """A mount may not replace what the sandbox's isolation stands on: its root, /proc (but the files
    runc allows), /sys, /dev — covering /proc/sys or /proc/kcore would undo their masks."""
    clean = os.path.normpath(path)
    if (clean in ("/", "/proc", "/sys", "/dev") or (clean.startswith("/proc/") and clean not in _PROC_FILES)
            or clean.startswith(("/sys/", "/dev/pts", "/dev/shm", "/dev/mqueue"))):
        raise UsageError(f"{option} destination {path!r} would replace the sandbox's own {clean}",
                         hint="mount somewhere else (the root, /proc, /sys and /dev are the sandbox's)")


def _namespaces(network: str) -> int:
    names = ["user", "mount", "pid", "uts", "ipc", "cgroup"]
    if network != "host":
        names.append("network")
    flags = 0
    for name in names:
        flags |= NAMESPACE_FLAGS[name]
    return flags


class _Root(record("_Root", "rootfs argv env workdir user accounts diff_ids exposed")):
    """Where the sandbox's ``/`` comes from, and what that implies for the rest of the plan."""

    rootfs: Rootfs
    argv: list[str]
    env: list[str]
    workdir: str
    user: str | None
    accounts: Any
    diff_ids: list[str]
    exposed: dict[str, Any]  #: the image's ExposedPorts, for -P
    __slots__ = ()


def _host_root(opts: SandboxOptions) -> _Root:
    if not opts.command:
        raise UsageError("no command given", hint="sandboxer run [OPTIONS] -- CMD [ARG...]")
    workdir = opts.workdir or "/"
    mounted = [v.destination for v in opts.volumes] + [t.partition(":")[0] for t in opts.tmpfs]
    if (workdir != "/" and not os.path.isdir(workdir)
            and not any(workdir == m or workdir.startswith(m.rstrip("/") + "/") for m in mounted)):
        # the host root is the lower layer: the directory must exist on the host
        raise UsageError(f"working directory {workdir} does not exist",
                         hint="give an existing directory to -w (or create it in the command)")
    return _Root(Rootfs("host", ("/",)), list(opts.command), [f"PATH={DEFAULT_PATH}"], workdir, opts.user,
                 _HostAccounts(), [], {})


def _image_root(opts: SandboxOptions, store: Any) -> _Root:
    from .images.runconfig import ImageAccounts, image_defaults

    assert opts.image is not None
    image = store.image(opts.image) if isinstance(opts.image, str) else opts.image
    lowers = store.layer_dirs(image)
    defaults = image_defaults(image.run_config, opts.command, image.reference.familiar)
    env = defaults.env if any(e.startswith("PATH=") for e in defaults.env) else [f"PATH={DEFAULT_PATH}",
                                                                                  *defaults.env]
    return _Root(Rootfs("layers", tuple(lowers)), defaults.argv, env, opts.workdir or defaults.workdir,
                 opts.user or defaults.user, ImageAccounts(lowers), image.diff_ids,
                 image.run_config.get("ExposedPorts") or {})


def prepare(opts: SandboxOptions, sandbox_id: str | None = None) -> Plan:
    """Check the options against the host and plan a sandbox (host root, or an image).

    ``sandbox_id``: reuse an id (``sandboxer restart``); default a new one.
    """
    from . import storage

    if opts.name is not None:
        validate_name(opts.name)
    collect_garbage()
    if opts.image is None:
        return _plan(opts, _host_root(opts), None, sandbox_id)
    from .images.store import Store

    store = Store()
    with store.lock():  # an image pruned meanwhile must not lose layers this sandbox is about to use
        root = _image_root(opts, store)
        return _plan(opts, root, storage.choose(storage.RootfsKind.LAYERS, opts.storage_driver), sandbox_id)


def _network(opts: SandboxOptions, root: _Root) -> NetworkSpec:
    """``network`` (a mode string) and ``publish`` (``-p`` strings, ``-P``) checked now, not in the child."""
    if opts.network == "none" and not (opts.publish or opts.publish_all or opts.dns or opts.add_host):
        from .network import NetworkSpec

        return NetworkSpec("none")  # the common case, without parsing anything
    from .network import exposed_ports, parse_network, parse_publish, require_host

    ports = tuple(parse_publish(p) for p in opts.publish)
    if opts.publish_all:
        if root.rootfs.kind != "layers":
            raise UsageError("-P publishes the ports an image exposes, and there is no image",
                             hint="publish ports with -p [HOSTIP:][HOSTPORT:]CPORT")
        ports += exposed_ports(root.exposed)
    spec = parse_network(opts.network, ports, tuple(opts.dns), tuple(opts.add_host))
    low = [p for p in spec.ports if 0 < p.host_port < _unprivileged_port_start()]
    if low:
        raise UsageError(f"host port {low[0].host_port} is privileged on this host",
                         hint="use a port >= 1024, or: sudo sysctl net.ipv4.ip_unprivileged_port_start=0")
    require_host(spec)
    return spec


def _unprivileged_port_start() -> int:
    try:
        with open("/proc/sys/net/ipv4/ip_unprivileged_port_start") as f:
            return int(f.read())
    except (OSError, ValueError):
        return 1024


def _plan(opts: SandboxOptions, root: _Root, snapshotter: Snapshotter | None,
          sandbox_id: str | None = None) -> Plan:
    from . import storage
    from .plugins import call

    image = root.rootfs.kind == "layers"
    idmap = default_idmap()
    uid, gid, home = resolve_user(root.user, idmap, root.accounts)
    network = _network(opts, root)
    namespaces = _namespaces(network.mode)
    mounts = _host_mounts(opts, idmap, image=image)
    caps = capability_set(opts.cap_add, opts.cap_drop)
    bpf, flags = _seccomp(opts.seccomp, caps)
    if not image:
        # read-only needs no writable layer: the host root is bound as it is (no FUSE, native speed) —
        # unless the workload holds CAP_SYS_ADMIN: the bind's read-only flag is the sandbox's own, which
        # it could remount writable (and unmount what covers the host's /proc and /tmp): over a throwaway
        # layer, undoing it reaches nothing of the host's
        bare = (opts.read_only and opts.storage_driver is None and opts.upper_dir is None
                and "CAP_SYS_ADMIN" not in caps)
        snapshotter = None if bare else storage.choose(storage.RootfsKind.HOST, opts.storage_driver)
    sandbox_id = sandbox_id or new_id()
    hostname = opts.hostname or sandbox_id[:12]
    if len(hostname.encode()) > 64:  # sethostname's limit, said before anything starts
        raise UsageError(f"--hostname {hostname[:20]!r}…: longer than 64 bytes",
                         hint="a host name of at most 64 characters")
    if "\x00" in hostname:
        raise UsageError("--hostname: contains a NUL byte", hint="a host name of at most 64 characters")
    joins: tuple[tuple[int, str], ...] = ()
    outbound_missing = ""
    if network.stack == "bridge":
        # they go into peers' /etc/hosts: a host name (a DNS label's 63 characters at most) each
        validate_name(hostname, "--hostname", 63)
        for alias in opts.network_aliases:
            validate_name(alias, "--network-alias", 63)
        joins, outbound_missing = _join_network_holder()
        namespaces &= ~CLONE_NEWUSER
        names = (*([opts.name] if opts.name else []), *opts.network_aliases, hostname)
        network = network._replace(aliases=tuple(dict.fromkeys(names)))
        if not outbound_missing and not network.dns:
            from .network import DNS_ADDRESS

            network = network._replace(dns=(DNS_ADDRESS,))  # slirp4netns's, on the holder
    elif opts.network_aliases:
        raise UsageError("--network-alias names a sandbox on a user-defined network",
                         hint="create one with 'sandboxer network create NAME' and run with --network NAME")
    env = [*root.env, f"HOSTNAME={hostname}", f"HOME={home}"]
    if opts.tty:
        env.append("TERM=" + os.environ.get("TERM", "xterm"))
    env.extend(opts.env)
    state = StateDir.create(sandbox_id, opts.name)
    try:
        if network.stack is not None:
            from .network import etc_files

            for source, destination in etc_files(state.path, hostname, network):
                mounts.append(parse_options(destination, source, "bind", ["bind", "ro"]))
        if root.diff_ids:
            state.record(IMAGE_LAYERS, "\n".join(root.diff_ids) + "\n")  # kept by 'image prune' while we run
        bits = mask(caps)
        plan = Plan(
            id=sandbox_id, name=opts.name, state=state, rootfs=root.rootfs,
            snapshotter=snapshotter, idmap=idmap, namespaces=namespaces, mounts=mounts,
            masked_paths=MASKED_PATHS, readonly_paths=READONLY_PATHS, root_readonly=opts.read_only,
            hostname=hostname, args=root.argv, env=env, cwd=root.workdir,
            identity=Identity(uid, gid, (), None),
            # Docker: a non-root user starts with empty effective/permitted sets
            caps=Caps(bits, bits if uid == 0 else 0, bits if uid == 0 else 0, 0, 0),
            no_new_privileges=opts.no_new_privileges, seccomp_bpf=bpf, seccomp_flags=flags,
            terminal=opts.tty, init=opts.init, stdin_null=not opts.interactive, debug=opts.debug,
            upper_dir=opts.upper_dir, network=network)
        plan.joins = joins
        if outbound_missing:
            plan.notices.append(outbound_missing)
        if idmap.single and os.getuid() != 0:
            plan.notices.append("no subuid/subgid range for this user: the sandbox maps only "
                                "uid/gid 0 (sudo usermod --add-subuids 100000-165535 "
                                "--add-subgids 100000-165535 $USER)")
        call("sandboxer_configure", plan=plan)
    except BaseException:
        state.release()
        raise
    return plan


def _join_network_holder() -> tuple[tuple[tuple[int, str], ...], str]:
    """A sandbox on a user-defined network lives in the user namespace of the network holder (started
    now if need be), as rootless podman's containers live in its pause process's: so that namespace
    owns the sandbox's network namespace, and the bridge's helper may plug a veth into it.

    Returns the namespace to join, and why there is no outbound access ("" if there is)."""
    from .network import networks, rootlessns

    with rootlessns.lock():
        holder = rootlessns.ensure(networks.any_live_lease)
        missing = rootlessns.outbound_missing()
    return ((CLONE_NEWUSER, holder.user_ns),), missing


def _print_notice(message: str) -> None:
    print(f"sandboxer: notice: {message}", file=sys.stderr)


def execute(plan: Plan, workload: Workload, timeout: float | None = None,
            forward_signals: bool = True) -> ExitStatus:
    """Run a prepared plan and release its state, whatever happens."""
    try:
        return _launch(plan, workload, tty=plan.terminal, timeout=timeout, forward_signals=forward_signals)
    except SetupError as err:
        from .doctor import probe_userns_blocker  # an unshare that failed: say why, as doctor would

        blocker = probe_userns_blocker()
        if blocker is None:
            raise
        raise blocker from err
    finally:
        release(plan)


def release(plan: Plan) -> None:
    """What a sandbox held outside itself once it has ended: its helpers and its state directory."""
    for thing in plan.attached:  # slirp4netns and friends go with the sandbox, whatever happened
        thing.close()
    plan.state.release()


def run(opts: SandboxOptions, call: Callable[[], int] | None = None,
        on_notice: Callable[[str], None] = _print_notice, *, timeout: float | None = None,
        stdio: tuple[int, int, int] | None = None, forward_signals: bool = True) -> ExitStatus:
    """Run ``opts.command`` (or ``call``, in-process) in a fresh host-root sandbox.

    ``stdio``: file descriptors for the workload's stdin, stdout and stderr
    (default: ours).  ``timeout``: kill the whole sandbox after that many
    seconds (the status then has ``timed_out``).  ``forward_signals=False``:
    SIGINT and the like stay ours (a KeyboardInterrupt kills the sandbox)
    instead of going to its PID 1.
    """
    plan = prepare(opts)
    for notice in plan.notices:
        on_notice(notice)
    workload = Workload(call=call, stdio=stdio) if call else Workload(argv=plan.args, stdio=stdio)
    return execute(plan, workload, timeout, forward_signals)


def load_bundle(bundle: str) -> tuple[Spec, str]:
    """A bundle's checked spec and the absolute path of its rootfs."""
    from .oci.spec import load, require_runnable

    if not os.path.isdir(bundle):
        raise UsageError(f"bundle {bundle} is not a directory",
                         hint="give the bundle's directory, the one holding config.json and rootfs/")
    spec = load(bundle)
    require_runnable(spec)
    assert spec.root is not None
    rootfs = spec.root.path if os.path.isabs(spec.root.path) else os.path.join(bundle, spec.root.path)
    if not os.path.isdir(rootfs):
        raise UsageError(f"bundle rootfs {rootfs} is not a directory", hint="set root.path in config.json")
    return spec, rootfs


def run_bundle(bundle: str, sandbox_id: str | None = None, *, debug: bool = False,
               init: bool = False, timeout: float | None = None) -> ExitStatus:
    """Run an OCI bundle (``rootfs/`` + ``config.json``) as runc does (``timeout``: as :func:`run`)."""
    from .runtime.specconv import idmap_from_spec, plan_from_spec

    bundle = os.path.abspath(bundle)
    spec, rootfs = load_bundle(bundle)
    if sandbox_id is not None:
        validate_name(sandbox_id)
    collect_garbage()
    idmap = idmap_from_spec(spec) or default_idmap()
    state = StateDir.create(new_id(), sandbox_id)
    try:
        plan = plan_from_spec(spec, Rootfs("bundle", path=rootfs), state, idmap=idmap, name=sandbox_id,
                              bundle=bundle, init=init, debug=debug)
    except BaseException:
        state.release()
        raise
    for notice in plan.notices:
        _print_notice(notice)
    return execute(plan, Workload(argv=plan.args), timeout)
