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

import os
import subprocess
import sys
from typing import TYPE_CHECKING

from .. import jsonc, signals
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

    return jsonc.dumps(state_document(
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
        failure = _run_one(hook, state)
        if failure is None:
            continue
        where = f"hooks.{_camel(phase)}[{i}] ({hook.path})"
        if phase in _FATAL:
            raise SetupError(f"run {where}", failure)
        print(f"sandboxer: warning: {where} {failure}", file=sys.stderr)


def _run_one(hook: Hook, state: str) -> str | None:
    """Run one hook; what went wrong, or None.

    Its stderr goes to a memory file, not a pipe: a hook that leaves a child running in the
    background (a network set-up daemon) must not hold the runtime until that child exits.  It
    runs in a process group of its own, so that a timeout kills the child it started too.
    """
    argv = list(hook.args) or [hook.path]
    env = dict(e.split("=", 1) for e in hook.env if "=" in e)
    err = os.memfd_create("hook-stderr", os.MFD_CLOEXEC)
    try:
        try:
            proc = subprocess.Popen(argv, executable=hook.path, stdin=subprocess.PIPE, stdout=subprocess.DEVNULL,
                                    stderr=err, env=env, start_new_session=True)
        except OSError as e:
            return e.strerror or str(e)
        try:
            proc.communicate(state.encode(), timeout=hook.timeout)
        except subprocess.TimeoutExpired:
            try:
                os.killpg(proc.pid, signals.SIGKILL)
            except ProcessLookupError:
                pass
            proc.wait()
            return f"timed out after {hook.timeout}s"
        if proc.returncode == 0:
            return None
        os.lseek(err, 0, os.SEEK_SET)
        said = os.read(err, 1 << 16).decode(errors="replace").strip()[-200:]
        return f"exited with status {proc.returncode}" + (f": {said}" if said else "")
    finally:
        os.close(err)


def _camel(name: str) -> str:
    first, *rest = name.split("_")
    return first + "".join(p.title() for p in rest)
