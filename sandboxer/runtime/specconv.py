"""OCI spec → :class:`Plan` (runc's ``specconv``), for bundles."""

from __future__ import annotations

import os

from ..errors import ConfigError, UsageError
from ..oci.spec import RLIMITS, Spec, require_runnable
from .capabilities import mask
from .mounts import MountSpec, parse_options
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


def _namespaces(spec: Spec) -> int:
    assert spec.linux is not None
    flags = 0
    for i, ns in enumerate(spec.linux.namespaces):
        if ns.path:
            raise ConfigError(f"linux.namespaces[{i}].path",
                              "joining existing namespaces is not supported yet",
                              hint="remove the path to create a new namespace")
        flags |= NAMESPACE_FLAGS[ns.type]
    # an unprivileged caller can create no other namespace without a user namespace
    return flags | NAMESPACE_FLAGS["user"]


def seccomp_program(profile: dict[str, object] | str | None, bounding: list[str]) -> tuple[bytes | None, int]:
    """Compile an OCI (or Docker-format) profile — a dict, or a JSON file's path — for a bounding set."""
    if profile is None:
        return None, 0
    from .. import seccomp

    resolved = seccomp.resolve(seccomp.load_profile(profile), bounding)
    return seccomp.cached_bpf(resolved), seccomp.filter_flags(resolved)


def idmap_from_spec(spec: Spec) -> IdMap | None:
    """The spec's ``linux.uidMappings``/``gidMappings``, if it has any."""
    if spec.linux is None or not spec.linux.uid_mappings:
        return None
    return IdMap(tuple(IdMapping(m.container_id, m.host_id, m.size) for m in spec.linux.uid_mappings),
                 tuple(IdMapping(m.container_id, m.host_id, m.size) for m in spec.linux.gid_mappings))


def plan_from_spec(spec: Spec, rootfs: Rootfs, state: StateDir, *, idmap: IdMap, name: str | None = None,
                   bundle: str | None = None, init: bool = False, debug: bool = False) -> Plan:
    """Check ``spec`` against this host and turn it into a plan."""
    require_runnable(spec)
    if spec.hooks and (spec.hooks.create_container or spec.hooks.start_container):
        which = "createContainer" if spec.hooks.create_container else "startContainer"
        raise ConfigError(f"hooks.{which}", "hooks run inside the container are not supported yet",
                          hint="use prestart/createRuntime/poststart/poststop hooks")
    assert spec.process is not None and spec.root is not None
    proc, linux = spec.process, spec.linux
    user = proc.user
    if not idmap.maps_uid(user.uid) or not idmap.maps_gid(user.gid):
        raise ConfigError("process.user", f"{user.uid}:{user.gid} is not mapped in the user namespace",
                          hint="map it in linux.uidMappings/gidMappings (or use a subuid range)")
    caps = proc.capabilities
    names = {k: list(getattr(caps, k)) if caps else [] for k in
             ("bounding", "effective", "permitted", "inheritable", "ambient")}
    bpf, flags = seccomp_program(linux.seccomp if linux else None, names["bounding"])
    plan = Plan(
        id=state.id, name=name, state=state, rootfs=rootfs, idmap=idmap,
        namespaces=_namespaces(spec) if linux else NAMESPACE_FLAGS["user"],
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
    if (linux is None or linux.namespace("user") is None) and os.getuid() != 0:
        plan.notices.append("config.json asks for no user namespace: running rootless, sandboxer adds one "
                            "that maps you to root (runc would refuse)")
    return plan
