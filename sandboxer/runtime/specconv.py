"""OCI spec → :class:`Plan` (runc's ``specconv``), for bundles."""

from __future__ import annotations

import os
import stat

from ..errors import ConfigError, UsageError
from ..oci.spec import RLIMITS, Spec, require_runnable
from .capabilities import mask
from .mounts import PROPAGATION, MountSpec, parse_options
from .plan import NAMESPACE_FLAGS, Caps, Identity, Plan, Rootfs
from .userns import IdMap, IdMapping

TYPE_CHECKING = False
if TYPE_CHECKING:
    from ..state import StateDir

__all__ = ["plan_from_spec", "idmap_from_spec", "mount_specs", "seccomp_program"]


def mount_specs(spec: Spec) -> list[MountSpec]:
    out = []
    for i, m in enumerate(spec.mounts):
        ms = parse_options(m.destination, m.source, m.type, m.options)
        if ms.is_bind:
            if not m.source:
                raise ConfigError(f"mounts[{i}].source", "a bind mount needs a source")
            if not os.path.exists(m.source):
                raise UsageError(f"mounts[{i}]: bind source {m.source} does not exist",
                                 hint="create it first, or fix the path in config.json")
        out.append(ms)
    return out


def _namespaces(spec: Spec) -> tuple[int, tuple[tuple[int, str], ...]]:
    """The namespaces to create, and those to join by ``path`` (the user namespace first)."""
    assert spec.linux is not None
    flags, joins = 0, []
    for i, ns in enumerate(spec.linux.namespaces):
        if not ns.path:
            flags |= NAMESPACE_FLAGS[ns.type]
            continue
        where = f"linux.namespaces[{i}].path"
        if ns.type == "mount":
            raise ConfigError(where, "joining a mount namespace is not supported",
                              hint="the rootfs is mounted in a new one: remove the path")
        if not os.path.exists(ns.path):
            raise ConfigError(where, f"{ns.path} does not exist", hint="the process owning it may have ended")
        joins.append((NAMESPACE_FLAGS[ns.type], ns.path))
    user = NAMESPACE_FLAGS["user"]
    joins.sort(key=lambda j: j[0] != user)  # the user namespace first: it gives the rights to join the rest
    if not joins or joins[0][0] != user:
        # an unprivileged caller can create no other namespace without a user namespace
        flags |= user
    return flags, tuple(joins)


#: namespaced sysctls (runc's list) and the namespace each needs
_SYSCTL_IPC = ("kernel.msgmax", "kernel.msgmnb", "kernel.msgmni", "kernel.sem", "kernel.shmall",
               "kernel.shmmax", "kernel.shmmni", "kernel.shm_rmid_forced")


def _sysctls(spec: Spec) -> tuple[tuple[str, str, bool], ...]:
    """``linux.sysctl`` checked: only what the container's own namespaces scope, never the host's.

    Each is (path under /proc/sys, value, whether its namespace is joined rather than created).
    """
    assert spec.linux is not None
    out = []
    for key, value in spec.linux.sysctl.items():
        if key in _SYSCTL_IPC or key.startswith("fs.mqueue."):
            needs = "ipc"
        elif key.startswith("net."):
            needs = "network"
        elif key in ("kernel.hostname", "kernel.domainname"):
            needs = "uts"
        else:
            raise ConfigError(f"linux.sysctl[{key!r}]", "is not namespaced: it would change the host",
                              hint="only ipc (kernel.shm*, kernel.msg*, kernel.sem, fs.mqueue.*), "
                                   "net.* and kernel.hostname/domainname can be set")
        ns = spec.linux.namespace(needs)
        if ns is None:
            raise ConfigError(f"linux.sysctl[{key!r}]", f'needs a "{needs}" namespace of the container',
                              hint=f'add {{"type": "{needs}"}} to linux.namespaces')
        if "/" in key or ".." in key.split("."):
            raise ConfigError(f"linux.sysctl[{key!r}]", "is not a sysctl name")
        out.append(("/".join(key.split(".")), value, bool(ns.path)))
    return tuple(out)


def _devices(spec: Spec) -> tuple[tuple[str, str], ...]:
    """``linux.devices``: without the right to mknod, a device is the host's node bound in (as rootless
    runc does) — so the host must have it, with the major:minor asked for; a FIFO is made in place."""
    assert spec.linux is not None
    out = []
    for i, dev in enumerate(spec.linux.devices):
        where = f"linux.devices[{i}]"
        path, kind = dev.get("path"), dev.get("type")
        if not isinstance(path, str) or not path.startswith("/") or kind not in ("c", "u", "b", "p"):
            raise ConfigError(where, "needs an absolute path and a type c, u, b or p")
        if kind == "p":
            out.append((path, "fifo"))
            continue
        try:
            st = os.stat(path)
        except OSError:
            raise ConfigError(where, f"there is no {path} on the host to bind in",
                              hint="a rootless runtime cannot create device nodes") from None
        is_kind = stat.S_ISBLK(st.st_mode) if kind == "b" else stat.S_ISCHR(st.st_mode)
        want = (dev.get("major"), dev.get("minor"))
        if not is_kind or (want != (None, None) and want != (os.major(st.st_rdev), os.minor(st.st_rdev))):
            raise ConfigError(where, f"the host's {path} is not the device asked for "
                                     f"({kind} {want[0]}:{want[1]})",
                              hint="a rootless runtime binds the host's node at the same path")
        out.append((path, "bind"))
    return tuple(out)


def seccomp_program(profile: dict[str, object] | str | None, bounding: list[str]) -> tuple[bytes | None, int]:
    """Compile an OCI (or Docker-format) profile — a dict, or a JSON file's path — for a bounding set."""
    if profile is None:
        return None, 0
    from .. import seccomp

    resolved = seccomp.resolve(seccomp.load_profile(profile), bounding)
    return seccomp.cached_bpf(resolved), seccomp.filter_flags(resolved)


#: ``linux.personality.domain`` -> the persona (linux/personality.h)
PERSONALITIES = {"LINUX": 0x0000, "LINUX32": 0x0008}


def _personality(raw: dict[str, object] | None) -> int | None:
    if raw is None:
        return None
    domain = raw.get("domain")
    if domain not in PERSONALITIES:
        raise ConfigError("linux.personality.domain", f"unsupported domain {domain!r}",
                          hint="LINUX or LINUX32")
    if raw.get("flags"):
        raise ConfigError("linux.personality.flags", "flags are not supported", hint="leave them out")
    return PERSONALITIES[str(domain)]


def _time_offsets(raw: dict[str, object] | None) -> tuple[tuple[str, int, int], ...]:
    """``linux.timeOffsets``: the clocks a time namespace shifts (written before its first process)."""
    out = []
    for clock, offset in (raw or {}).items():
        where = f"linux.timeOffsets.{clock}"
        if clock not in ("monotonic", "boottime"):
            raise ConfigError(where, "unknown clock", hint="monotonic or boottime")
        if not isinstance(offset, dict):
            raise ConfigError(where, "must be an object", hint='{"secs": N, "nanosecs": N}')
        secs, nanos = offset.get("secs", 0), offset.get("nanosecs", 0)
        if type(secs) is not int or type(nanos) is not int or not 0 <= nanos < 1_000_000_000:
            raise ConfigError(where, "secs must be an integer and nanosecs one from 0 to 999999999")
        out.append((clock, secs, nanos))
    return tuple(out)


def idmap_from_spec(spec: Spec) -> IdMap | None:
    """The spec's ``linux.uidMappings``/``gidMappings``, if it has any — or, when it joins the user
    namespace of a process (``/proc/PID/ns/user``), that namespace's maps."""
    joined = spec.linux.namespace("user") if spec.linux is not None else None
    if joined is not None and joined.path:
        pid = joined.path.removeprefix("/proc/").removesuffix("/ns/user")
        return _proc_idmap(pid) if pid.isdecimal() else None
    if spec.linux is None or not spec.linux.uid_mappings:
        return None
    return IdMap(tuple(IdMapping(m.container_id, m.host_id, m.size) for m in spec.linux.uid_mappings),
                 tuple(IdMapping(m.container_id, m.host_id, m.size) for m in spec.linux.gid_mappings))


def _proc_idmap(pid: str) -> IdMap | None:
    maps = []
    for kind in ("uid_map", "gid_map"):
        try:
            with open(f"/proc/{pid}/{kind}") as f:
                maps.append(tuple(IdMapping(*map(int, line.split())) for line in f if line.strip()))
        except (OSError, ValueError):
            return None
    return IdMap(maps[0], maps[1])


def plan_from_spec(spec: Spec, rootfs: Rootfs, state: StateDir, *, idmap: IdMap, name: str | None = None,
                   bundle: str | None = None, init: bool = False, debug: bool = False) -> Plan:
    """Check ``spec`` against this host and turn it into a plan."""
    require_runnable(spec)
    assert spec.process is not None and spec.root is not None
    proc, linux = spec.process, spec.linux
    user = proc.user
    if not idmap.maps_uid(user.uid) or not idmap.maps_gid(user.gid):
        raise ConfigError("process.user", f"{user.uid}:{user.gid} is not mapped in the user namespace",
                          hint="map it in linux.uidMappings/gidMappings (or use a subuid range)")
    for i, gid in enumerate(user.additional_gids):
        if not idmap.maps_gid(gid) or (idmap.single and gid != user.gid):  # a one-id map denies setgroups
            raise ConfigError(f"process.user.additionalGids[{i}]", f"group {gid} cannot be given: "
                              + ("it is not mapped in the user namespace" if not idmap.maps_gid(gid)
                                 else "a single-id map denies setgroups"),
                              hint="map it in linux.gidMappings (or use a subgid range: see 'sandboxer doctor')")
    caps = proc.capabilities
    names = {k: list(getattr(caps, k)) if caps else [] for k in
             ("bounding", "effective", "permitted", "inheritable", "ambient")}
    bpf, flags = seccomp_program(linux.seccomp if linux else None, names["bounding"])
    namespaces, joins = _namespaces(spec) if linux else (NAMESPACE_FLAGS["user"], ())
    plan = Plan(
        id=state.id, name=name, state=state, rootfs=rootfs, idmap=idmap,
        namespaces=namespaces,
        mounts=mount_specs(spec),
        masked_paths=tuple(linux.masked_paths) if linux else (),
        readonly_paths=tuple(linux.readonly_paths) if linux else (),
        root_readonly=spec.root.readonly, hostname=spec.hostname,
        args=list(proc.args), env=list(proc.env), cwd=proc.cwd,
        identity=Identity(user.uid, user.gid, tuple(user.additional_gids), user.umask),
        caps=Caps(*(mask(names[k]) for k in ("bounding", "effective", "permitted", "inheritable", "ambient"))),
        no_new_privileges=proc.no_new_privileges, oom_score_adj=proc.oom_score_adj,
        rlimits=tuple((RLIMITS[r.type], r.soft, r.hard) for r in proc.rlimits),
        seccomp_bpf=bpf, seccomp_flags=flags, terminal=proc.terminal, init=init,
        hooks=spec.hooks, spec=spec, bundle=bundle, annotations=dict(spec.annotations), debug=debug)
    if linux is not None:
        plan.joins, plan.sysctls, plan.devices = joins, _sysctls(spec), _devices(spec)
        plan.time_offsets, plan.personality = _time_offsets(linux.time_offsets), _personality(linux.personality)
        plan.root_propagation = PROPAGATION[linux.rootfs_propagation] if linux.rootfs_propagation else 0
    if (linux is None or linux.namespace("user") is None) and os.getuid() != 0:
        plan.notices.append("config.json asks for no user namespace: running rootless, sandboxer adds one "
                            "that maps you to root (runc would refuse)")
    return plan
