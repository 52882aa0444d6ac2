"""The plan of one sandbox: everything decided before anything is forked.

The caller turns an OCI spec plus the rootfs choice into a :class:`Plan`
— mount options parsed, capability masks computed, the seccomp program
compiled, the id map read — so the forked set-up processes only execute
it, and every mistake in the input surfaces in the caller as a clear error.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from .. import syscalls as sc
from ..errors import ConfigError, UsageError
from .mounts import MountSpec, parse_options
from .userns import IdMap

if TYPE_CHECKING:
    from ..oci.spec import Spec
    from ..state import StateDir
    from ..storage import Snapshotter

__all__ = ["Plan", "Rootfs", "build_plan", "NAMESPACE_FLAGS"]

NAMESPACE_FLAGS = {
    "user": sc.CLONE_NEWUSER, "mount": sc.CLONE_NEWNS, "pid": sc.CLONE_NEWPID,
    "network": sc.CLONE_NEWNET, "uts": sc.CLONE_NEWUTS, "ipc": sc.CLONE_NEWIPC,
    "cgroup": sc.CLONE_NEWCGROUP, "time": sc.CLONE_NEWTIME,
}


@dataclass(frozen=True)
class Rootfs:
    """Where the sandbox's ``/`` comes from.

    ``kind`` is ``"host"`` (the host's ``/`` under a throwaway upper layer),
    ``"layers"`` (unpacked image layers, top first) or ``"bundle"`` (an OCI
    bundle's ``rootfs/``, used in place as runc does).
    """

    kind: str
    lowers: tuple[str, ...] = ()
    path: str | None = None


@dataclass
class Plan:
    """A sandbox ready to start.  Built by :func:`build_plan`."""

    id: str
    spec: Spec
    rootfs: Rootfs
    idmap: IdMap
    state: StateDir
    snapshotter: Snapshotter | None
    namespaces: int
    mounts: list[MountSpec]
    bounding: int
    effective: int
    permitted: int
    inheritable: int
    ambient: int
    rlimits: list[tuple[int, int, int]]
    seccomp_bpf: bytes | None
    seccomp_flags: int = 0
    name: str | None = None
    bundle: str | None = None
    init: bool = False
    stdin_null: bool = False
    debug: bool = False
    notices: list[str] = field(default_factory=list)

    @property
    def hostname(self) -> str | None:
        return self.spec.hostname

    @property
    def short_id(self) -> str:
        return self.id[:12]


def _mount_specs(spec: Spec) -> list[MountSpec]:
    out = []
    for i, m in enumerate(spec.mounts):
        if not m.destination.startswith("/"):
            raise ConfigError(f"mounts[{i}].destination", "must be an absolute path")
        ms = parse_options(m.destination, m.source, m.type, m.options)
        if ms.is_bind:
            if not m.source:
                raise ConfigError(f"mounts[{i}].source", "a bind mount needs a source")
            if not os.path.exists(m.source):
                raise UsageError(f"bind source {m.source} does not exist",
                                 hint="create it first, or fix the path given to -v/--volume")
        out.append(ms)
    return out


def _rlimits(spec: Spec) -> list[tuple[int, int, int]]:
    from ..oci.spec import RLIMITS

    assert spec.process is not None
    return [(RLIMITS[r.type], r.soft, r.hard) for r in spec.process.rlimits]


def _namespaces(spec: Spec) -> int:
    flags = 0
    assert spec.linux is not None
    for i, ns in enumerate(spec.linux.namespaces):
        if ns.path:
            raise ConfigError(f"linux.namespaces[{i}].path",
                              "joining existing namespaces is not supported yet",
                              hint="remove the path to create a new namespace")
        flags |= NAMESPACE_FLAGS[ns.type]
    if not flags & sc.CLONE_NEWUSER:
        # an unprivileged caller can create nothing else without one
        flags |= sc.CLONE_NEWUSER
    return flags


def _seccomp(spec: Spec, bounding_names: list[str]) -> tuple[bytes | None, int]:
    assert spec.linux is not None
    if spec.linux.seccomp is None:
        return None, 0
    from .. import seccomp

    profile = seccomp.load_profile(spec.linux.seccomp)
    profile = seccomp.resolve(profile, bounding_names)
    return seccomp.cached_bpf(profile), seccomp.filter_flags(profile)


def build_plan(spec: Spec, rootfs: Rootfs, state: StateDir, *, snapshotter: Snapshotter | None,
               idmap: IdMap, name: str | None = None, bundle: str | None = None,
               init: bool = False, stdin_null: bool = False, debug: bool = False) -> Plan:
    """Check ``spec`` against this host and precompute everything the child needs."""
    from ..oci.spec import require_runnable
    from .capabilities import mask

    require_runnable(spec)
    if spec.hooks and (spec.hooks.create_container or spec.hooks.start_container):
        which = "createContainer" if spec.hooks.create_container else "startContainer"
        raise ConfigError(f"hooks.{which}", "hooks run inside the container are not supported yet",
                          hint="use prestart/createRuntime/poststart/poststop hooks")
    if spec.linux is None:
        from ..oci.spec import Linux

        spec.linux = Linux()
    assert spec.process is not None
    proc = spec.process
    user = proc.user
    if not idmap.maps_uid(user.uid) or not idmap.maps_gid(user.gid):
        raise UsageError(f"user {user.uid}:{user.gid} is not mapped in the sandbox",
                         hint="only uid/gid 0 exists without a subuid/subgid range "
                              "(sudo usermod --add-subuids 100000-165535 --add-subgids 100000-165535 $USER)")
    caps = proc.capabilities
    names = {k: list(getattr(caps, k)) if caps else [] for k in
             ("bounding", "effective", "permitted", "inheritable", "ambient")}
    seccomp_bpf, seccomp_flags = _seccomp(spec, names["bounding"])
    return Plan(
        id=state.id, spec=spec, rootfs=rootfs, idmap=idmap, state=state, snapshotter=snapshotter,
        namespaces=_namespaces(spec), mounts=_mount_specs(spec),
        bounding=mask(names["bounding"]), effective=mask(names["effective"]),
        permitted=mask(names["permitted"]), inheritable=mask(names["inheritable"]),
        ambient=mask(names["ambient"]), rlimits=_rlimits(spec), seccomp_bpf=seccomp_bpf,
        seccomp_flags=seccomp_flags, name=name, bundle=bundle, init=init,
        stdin_null=stdin_null, debug=debug)

