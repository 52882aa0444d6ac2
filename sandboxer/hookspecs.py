"""Extension points of sandboxer, as pluggy hook specifications.

A plugin is a module or object with functions named like the specs below,
marked with :data:`sandboxer.plugins.hookimpl`, and registered through the
``sandboxer`` entry-point group::

    [project.entry-points.sandboxer]
    myplugin = "my_package.sandboxer_plugin"

The built-in snapshotters and lifecycle behaviour are plugins of these same
hooks (:mod:`sandboxer.builtins`).  The spec module is imported only where a
plugin manager is built; the hot ``run`` path calls built-ins directly when
no third-party plugin is installed (see :mod:`sandboxer.plugins`).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import pluggy

if TYPE_CHECKING:
    from .runtime.plan import Plan
    from .storage import Snapshotter

hookspec = pluggy.HookspecMarker("sandboxer")


@hookspec
def sandboxer_snapshotters() -> list[Snapshotter]:  # type: ignore[empty-body]
    """Return storage drivers this plugin provides.

    Each is an object of the :class:`sandboxer.storage.Snapshotter`
    protocol.  All results are pooled and ordered by ``priority``; the
    first whose ``unusable_reason()`` is None serves a run that names none.
    """


@hookspec
def sandboxer_configure(plan: Plan) -> None:
    """Adjust a sandbox's plan before anything is forked.

    Called in the caller's process with the complete :class:`Plan`
    (OCI spec, rootfs, id map).  Raise a :class:`SandboxerError` to refuse
    the run with a message the user sees.
    """


@hookspec
def sandboxer_attach(plan: Plan, pid: int) -> None:
    """Attach resources to a sandbox whose namespaces exist but which waits.

    ``pid`` is the sandbox's set-up process, already in its new user,
    mount and network namespaces, with its id maps written; it will not go
    on until every implementation returns.  Cgroup placement and network
    attachment (slirp4netns needs the PID) belong here, so no workload byte
    runs outside them.
    """


@hookspec
def sandboxer_created(plan: Plan, pid: int) -> None:
    """OCI ``create`` only: PID 1 (host PID ``pid``) is set up and waits for ``start`` to exec."""


@hookspec
def sandboxer_started(plan: Plan, pid: int) -> None:
    """The workload has exec'ed as ``pid`` (host PID); OCI poststart time."""


@hookspec
def sandboxer_stopped(plan: Plan, status: Any) -> None:
    """The sandbox has ended and been torn down; OCI poststop time.

    ``status`` is the :class:`sandboxer.runtime.process.ExitStatus`.
    """
