"""``exec``: run one more command inside a running sandbox, as its workload runs.

The caller forks a child that joins PID 1's namespaces with setns — the
user namespace first (it grants the rights over the others), the mount
namespace last (it moves the root) — and forks again, since the PID
namespace applies only to children.  That grandchild takes the workload's
identity the way :mod:`sandboxer.runtime.init` gives it (working directory,
no_new_privs, bounding set, user and capability sets, seccomp last), then
execs.  Errors come back on a message pipe, as during set-up.
"""

from __future__ import annotations

import os
import signal

from .. import syscalls as sc
from ..errors import SetupError
from . import sync
from .capabilities import drop_bounding, switch_user_and_set_caps
from .init import env_dict
from .launcher import ExitStatus
from .reaper import exec_workload

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any

__all__ = ["enter", "NAMESPACES"]

#: join order: user first, mount last
NAMESPACES = ("user", "ipc", "uts", "net", "cgroup", "pid", "mnt")


def enter(pid: int, identity: dict[str, Any], argv: list[str], env: list[str], cwd: str,
          stdin_null: bool = True) -> int:
    """Run ``argv`` in the namespaces of ``pid`` with ``identity`` (see the supervisor's record); its status."""
    try:
        fds = [os.open(f"/proc/{pid}/ns/{ns}", os.O_RDONLY | os.O_CLOEXEC) for ns in NAMESPACES]
    except OSError as e:
        raise SetupError("join the sandbox", f"{e.strerror}: {e.filename}",
                         hint="is it still running? see 'sandboxer ps'") from None
    msg_r, msg_w = os.pipe2(os.O_CLOEXEC)
    child = os.fork()
    if child == 0:  # pragma: no cover - runs in the child
        code = 125
        try:
            sc.set_pdeathsig(signal.SIGKILL)
            for fd, ns in zip(fds, NAMESPACES, strict=True):
                try:
                    sc.setns(fd, 0)
                except OSError as e:
                    raise SetupError(f"join the {ns} namespace", e.strerror or str(e)) from e
            code = _run_in_namespace(identity, argv, env, cwd, stdin_null, msg_w)
        except BaseException as e:
            sync.send_error(msg_w, e, "exec")
        finally:
            os._exit(code)
    for fd in fds:
        os.close(fd)
    os.close(msg_w)
    reader = sync.Reader(msg_r)
    try:
        msg = reader.recv()  # end of file: the command has exec'ed
    finally:
        reader.close()
    _, status = os.waitpid(child, 0)
    if msg is not None and msg[0] == "error":
        raise sync.error_from_fields(msg)
    return ExitStatus.from_wait_status(status).code


def _run_in_namespace(identity: dict[str, Any], argv: list[str], env: list[str], cwd: str, stdin_null: bool,
                      msg_w: int) -> int:
    """In the joined namespaces: fork the command into the PID namespace and wait for it."""
    grandchild = os.fork()
    if grandchild == 0:
        code = 125
        try:
            if stdin_null:
                null = os.open("/dev/null", os.O_RDONLY)
                os.dup2(null, 0)
                os.close(null)
            _become(identity, cwd)
            exec_workload(argv, env_dict(env), msg_w)
        except BaseException as e:
            sync.send_error(msg_w, e, "exec")
        finally:
            os._exit(code)
    os.close(msg_w)
    while True:
        try:
            _, status = os.waitpid(grandchild, 0)
            break
        except InterruptedError:
            continue
    return ExitStatus.from_wait_status(status).code


def _become(identity: dict[str, Any], cwd: str) -> None:
    """The workload's identity, in init's order: seccomp last, or before the drop without no_new_privs."""
    import base64

    bpf = base64.b64decode(identity["seccomp"]) if identity.get("seccomp") else None
    if identity["no_new_privileges"]:
        sc.set_no_new_privs()
    elif bpf is not None:
        sc.seccomp_set_filter(bpf, identity["seccomp_flags"])
    bounding, effective, permitted, inheritable, ambient = identity["caps"]
    drop_bounding(bounding)
    switch_user_and_set_caps(identity["uid"], identity["gid"], identity["groups"], effective=effective,
                             permitted=permitted, inheritable=inheritable, ambient=ambient,
                             set_groups=identity["set_groups"])
    if identity["no_new_privileges"] and bpf is not None:
        sc.seccomp_set_filter(bpf, identity["seccomp_flags"])
    try:
        os.chdir(cwd)  # last, as the workload's user
    except OSError as e:
        raise SetupError(f"chdir to {cwd}", e.strerror or str(e), hint="give an existing directory to -w") from e


def identity_of(plan: Any) -> dict[str, Any]:
    """What :func:`enter` needs to give a command the workload's identity, as JSON-able data."""
    import base64

    who = plan.identity
    return {"uid": who.uid, "gid": who.gid, "groups": [g for g in who.groups if plan.idmap.maps_gid(g)],
            "caps": list(plan.caps), "no_new_privileges": plan.no_new_privileges,
            "seccomp": base64.b64encode(plan.seccomp_bpf).decode() if plan.seccomp_bpf else None,
            "seccomp_flags": plan.seccomp_flags, "set_groups": not plan.idmap.single,
            "env": list(plan.env), "cwd": plan.cwd}
