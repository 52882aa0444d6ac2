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
def sandboxer_attach(plan: Plan, pid: int) -> None:
    """Network attachment: the mode's user-mode stack on the waiting sandbox, with its published ports."""
    if plan.network is None or plan.network.stack is None:
        return
    from importlib import import_module

    stack = import_module(f".network.{plan.network.stack}", __package__).start(pid, plan.network, plan.state.path)
    plan.attached.append(stack)
    if stack.ports or hasattr(stack, "describe"):
        import json

        if stack.ports:  # for 'sandboxer port'
            plan.state.record("ports", json.dumps([m._asdict() for m in stack.ports]))
        if hasattr(stack, "describe"):  # a user-defined network's address, for inspect and the pytest handle
            plan.state.record("network", json.dumps(stack.describe()))
        if plan.debug:
            for mapping in stack.ports:
                plan.notices.append(f"published {mapping}")


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
