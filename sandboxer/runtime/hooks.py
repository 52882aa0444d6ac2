"""OCI lifecycle hooks (runtime-spec "config.md", POSIX-platform Hooks).

``prestart``, ``createRuntime``, ``poststart`` and ``poststop`` run in the
caller's (runtime) namespaces; ``createContainer`` and ``startContainer`` run
in the container's, from PID 1 (:mod:`sandboxer.runtime.init`), which gets
the state JSON for them from the caller (:func:`send_state`).  Each hook gets
the container state JSON on stdin (runtime-spec "runtime.md", State).  A
failing ``prestart``/``createRuntime``/``createContainer``/``startContainer``
hook aborts the start; a failing ``poststart``/``poststop`` hook is reported
as a warning, as the spec says.
"""

from __future__ import annotations

import json
import subprocess
import sys
from typing import TYPE_CHECKING

from ..errors import SetupError

if TYPE_CHECKING:
    from ..oci.spec import Hook
    from .plan import Plan

__all__ = ["run_hooks", "run_hook_list", "state_json", "state_document", "send_state"]

_FATAL = ("prestart", "create_runtime", "create_container", "start_container")


def state_document(*, oci_version: str, id: str, status: str, pid: int, bundle: str,
                   annotations: dict[str, str]) -> dict[str, object]:
    """The container state of runtime-spec "runtime.md" (what hooks read and ``state`` prints)."""
    state: dict[str, object] = {"ociVersion": oci_version, "id": id, "status": status, "bundle": bundle,
                                "annotations": dict(annotations)}
    if pid:
        state["pid"] = pid
    return state


def state_json(plan: Plan, status: str, pid: int) -> str:
    from ..oci.spec import OCI_VERSION

    return json.dumps(state_document(
        oci_version=plan.spec.oci_version if plan.spec else OCI_VERSION, id=plan.name or plan.id,
        status=status, pid=pid, bundle=plan.bundle or "", annotations=plan.annotations))


def run_hooks(plan: Plan, phase: str, *, pid: int, status: str) -> None:
    """Run every hook of ``phase`` (a :class:`Hooks` attribute name) in order."""
    hooks = getattr(plan.hooks, phase, None) if plan.hooks else None
    if hooks:
        run_hook_list(hooks, phase, state_json(plan, status, pid))


def send_state(fd: int, plan: Plan, pid: int) -> None:
    """Send PID 1 the state JSON (one line) its createContainer/startContainer hooks read: only the
    caller knows PID 1's host PID, the ``pid`` hooks are given."""
    from .sync import write_all

    write_all(fd, (state_json(plan, "created", pid) + "\n").encode())


def run_hook_list(hooks: list[Hook], phase: str, state: str) -> None:
    """Run ``hooks`` of ``phase`` in order, each with ``state`` (JSON) on stdin.

    A failure of a ``prestart``/``create*``/``startContainer`` hook raises; the others only warn.
    """
    for i, hook in enumerate(hooks):
        argv = list(hook.args) or [hook.path]
        env = dict(e.split("=", 1) for e in hook.env if "=" in e)
        try:
            done = subprocess.run(argv, executable=hook.path, input=state.encode(), env=env,
                                  timeout=hook.timeout, capture_output=True, check=False)
            said = done.stderr.decode(errors="replace").strip()[-200:]
            failure = (f"exited with status {done.returncode}" + (f": {said}" if said else "")
                       if done.returncode else None)
        except subprocess.TimeoutExpired:
            failure = f"timed out after {hook.timeout}s"
        except OSError as e:
            failure = e.strerror or str(e)
        if failure is None:
            continue
        where = f"hooks.{_camel(phase)}[{i}] ({hook.path})"
        if phase in _FATAL:
            raise SetupError(f"run {where}", failure)
        print(f"sandboxer: warning: {where} {failure}", file=sys.stderr)


def _camel(name: str) -> str:
    first, *rest = name.split("_")
    return first + "".join(p.title() for p in rest)
