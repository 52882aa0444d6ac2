"""The built-in plugin: sandboxer's own implementations of its hooks."""

from __future__ import annotations

from .plugins import hookimpl

TYPE_CHECKING = False
if TYPE_CHECKING:
    from .runtime.plan import Plan
    from .storage import Snapshotter


@hookimpl
def sandboxer_snapshotters() -> list[Snapshotter]:
    from .storage.copy import CopySnapshotter
    from .storage.fuse import FuseOverlay
    from .storage.overlay import KernelOverlay

    return [KernelOverlay(), FuseOverlay(), CopySnapshotter()]


@hookimpl
def sandboxer_started(plan: Plan, pid: int) -> None:
    """Run the OCI ``poststart`` hooks."""
    if plan.hooks is None:
        return
    from .runtime.hooks import run_hooks

    run_hooks(plan, "poststart", pid=pid, status="running")


@hookimpl
def sandboxer_stopped(plan: Plan, status: object) -> None:
    """Run the OCI ``poststop`` hooks."""
    if plan.hooks is None:
        return
    from .runtime.hooks import run_hooks

    run_hooks(plan, "poststop", pid=0, status="stopped")
