"""Run one test's protocol inside a fresh sandbox and bring its reports back.

The order of events, for one sandboxed test:

1. In pytest's process: set up the test's collectors (session, module,
   class) and every fixture of a wider scope than ``function``, so they
   exist once and are inherited by fork — not re-created per test.
2. Fork into a new sandbox (:func:`sandboxer.run` with an in-process
   workload).  There, run the normal pytest protocol for the item — its
   function-scoped fixtures, the call, their teardown — with capturing and
   assertion rewriting exactly as pytest set them up, and write the
   serialised reports to a file descriptor shared with the parent.
3. Back in pytest's process: turn the reports into report objects (or, if
   the child crashed or timed out, into a failure that says what
   happened), tear down whatever scope the next test does not share, and
   hand everything to pytest's reporting hooks.
"""

from __future__ import annotations

import json
import os
import signal
import sys
import tempfile
import time
from collections.abc import Iterable
from typing import Any

import pytest
from _pytest.runner import CallInfo, runtestprotocol

from sandboxer.errors import SandboxerError

from .options import SandboxConfig

__all__ = ["run_item", "isolation_facts"]

#: directories the sandbox replaces with fresh tmpfs mounts; paths under them
#: that a test needs (its virtualenv, rootdir, basetemp) are bound in
_PRIVATE_DIRS = ("/tmp", "/var/tmp", "/run", "/dev/shm")
_NAMESPACES = ("user", "mnt", "pid", "net", "uts", "ipc", "cgroup")


class _ParentsOnly:
    """A stand-in ``nextitem`` whose chain is the item's parents: the child tears
    down the item (its function-scoped fixtures) and nothing wider."""

    def __init__(self, item: pytest.Item) -> None:
        self._chain = item.listchain()[:-1]

    def listchain(self) -> list[pytest.Item]:
        return self._chain  # type: ignore[return-value]


def _under_private(path: str) -> bool:
    return any(path == d or path.startswith(d + "/") for d in _PRIVATE_DIRS)


def needed_binds(paths: Iterable[str]) -> list[str]:
    """The outermost existing paths under the sandbox's private dirs."""
    found = sorted({os.path.realpath(p) for p in paths if p and os.path.exists(p)})
    out: list[str] = []
    for path in found:
        if _under_private(path) and not any(path.startswith(o.rstrip("/") + "/") or path == o for o in out):
            out.append(path)
    return out


def _user() -> str:
    import getpass

    try:
        return getpass.getuser()
    except (KeyError, OSError):
        return str(os.getuid())


def _setup_outside(item: pytest.Item) -> None:
    """Step 1: collectors and wider-scoped fixtures, in pytest's own process.

    The item is marked active in pytest's set-up stack only while its
    request resolves the wide fixtures (their finalizers go to their own
    scope's node); its own set-up — function fixtures — happens in the child.
    """
    state = item.session._setupstate
    state.setup(item.parent)  # type: ignore[arg-type]
    state.stack[item] = ([], None)
    try:
        infos = item._fixtureinfo.name2fixturedefs  # type: ignore[attr-defined]
        for name in item.fixturenames:  # type: ignore[attr-defined]
            defs = infos.get(name)
            if defs and defs[-1].scope != "function":
                item._request.getfixturevalue(name)  # type: ignore[attr-defined]
    finally:
        del state.stack[item]


def isolation_facts(parent_ns: dict[str, str]) -> dict[str, object]:
    """What this process actually got, read from the kernel (runs inside)."""
    status = {}
    with open("/proc/self/status") as f:
        for line in f:
            key, _, value = line.partition(":")
            status[key] = value.strip()
    new_ns = [ns for ns in _NAMESPACES if os.readlink(f"/proc/self/ns/{ns}") != parent_ns.get(ns)]
    return {
        "namespaces": new_ns,
        "seccomp": {"0": "disabled", "1": "strict", "2": "filter"}.get(status.get("Seccomp", ""), "unknown"),
        "no_new_privs": status.get("NoNewPrivs") == "1",
        "capabilities": status.get("CapEff", ""),
        "limits": "not enforced (no cgroup driver yet)",
    }


def _child(item: pytest.Item, config: SandboxConfig, out_fd: int, parent_ns: dict[str, str]) -> int:
    """Step 2, inside the sandbox.  Returns the exit status."""
    os.environ.update(config.env)
    hook = item.config.hook
    reports = runtestprotocol(item, log=False, nextitem=_ParentsOnly(item))  # type: ignore[arg-type]
    payload = {
        "reports": [hook.pytest_report_to_serializable(config=item.config, report=r) for r in reports],
        "isolation": isolation_facts(parent_ns),
    }
    _save_coverage()
    data = json.dumps(payload).encode()
    view = memoryview(data)
    while view:
        view = view[os.write(out_fd, view):]
    return 0


def _save_coverage() -> None:
    """Write this child's coverage data where the parent's combine() finds it."""
    cov_module = sys.modules.get("coverage")
    if cov_module is None:
        return
    cov = cov_module.Coverage.current()
    if cov is None:
        return
    cov.stop()
    cov._data_suffix = f"sandbox.{os.getpid()}.{os.urandom(4).hex()}"  # parallel-mode file name
    cov.save()


def _coverage_dirs() -> list[str]:
    cov_module = sys.modules.get("coverage")
    cov = cov_module.Coverage.current() if cov_module else None
    if cov is None:
        return []
    data_file = cov.get_data().data_filename()
    return [os.path.dirname(os.path.abspath(data_file))]


def _crash_reports(item: pytest.Item, message: str, duration: float) -> list[pytest.TestReport]:
    """setup/call/teardown reports for a test whose sandboxed child never reported."""

    def fail() -> None:
        pytest.fail(message, pytrace=False)

    call = CallInfo.from_call(fail, "call")
    rep = item.ihook.pytest_runtest_makereport(item=item, call=call)
    rep.duration = duration
    ok = [pytest.TestReport(item.nodeid, item.location, {}, "passed", None, when, [], 0.0)
          for when in ("setup", "teardown")]
    return [ok[0], rep, ok[1]]


def _crash_message(status: Any, timeout: float | None) -> str:
    if status.timed_out:
        return f"sandboxed test timed out after {float(timeout or 0)}s; process tree killed"
    if status.signal is not None:
        return f"sandboxed test killed by {signal.Signals(status.signal).name}"
    return f"sandboxed test exited with status {status.code} before reporting"


def run_item(item: pytest.Item, nextitem: pytest.Item | None, config: SandboxConfig,
             options: dict[str, Any]) -> tuple[list[pytest.TestReport], dict[str, object]]:
    """Steps 1-3 for one item; returns its reports and the isolation it got."""
    from sandboxer import SandboxOptions, Volume, run

    try:
        _setup_outside(item)
    except Exception:
        # a collector or wide fixture failed: pytest's own protocol reports it
        # as a setup error without ever calling the test
        return runtestprotocol(item, log=False, nextitem=nextitem), {}

    basetemp = item.config._tmp_path_factory.getbasetemp()  # type: ignore[attr-defined]
    read_only_paths = [sys.prefix, sys.exec_prefix, sys.base_prefix, *sys.path, str(item.config.rootpath),
                       os.getcwd()]
    # pytest's own temporary area is scratch space by definition: writable, like tmp_path
    scratch = [str(basetemp), *(str(p) for p in basetemp.parents if p.name == f"pytest-of-{_user()}")]
    writable = needed_binds([*scratch, *_coverage_dirs()])
    volumes = [Volume(p, p, False) for p in writable]
    volumes += [Volume(p, p, True) for p in needed_binds(read_only_paths)
                if not any(p == w or p.startswith(w + "/") for w in writable)]
    volumes += [Volume(src, dst, ro) for src, dst, ro in config.volumes]
    opts = SandboxOptions(
        command=["pytest"], hostname=config.hostname, user=config.user, read_only=config.read_only,
        cap_add=config.cap_add, cap_drop=config.cap_drop, seccomp=config.seccomp, init=True,
        network=config.network, volumes=volumes, workdir=os.getcwd(), upper_dir=options.get("upper_dir"))
    parent_ns = {ns: os.readlink(f"/proc/self/ns/{ns}") for ns in _NAMESPACES}
    fd, path = tempfile.mkstemp(prefix="sandboxer-reports-")
    os.unlink(path)
    start = time.monotonic()
    try:
        status = run(opts, lambda: _child(item, config, fd, parent_ns), timeout=config.timeout,
                     on_notice=lambda _msg: None)
        os.lseek(fd, 0, os.SEEK_SET)
        raw = b""
        while chunk := os.read(fd, 1 << 20):
            raw += chunk
    except SandboxerError as e:
        reports = _unavailable_reports(item, e, options.get("unavailable", "fail"))
        _teardown_outside(item, nextitem, reports)
        return reports, {}
    finally:
        os.close(fd)
    duration = time.monotonic() - start
    hook = item.config.hook
    if status.code == 0 and raw:
        payload = json.loads(raw)
        reports = [hook.pytest_report_from_serializable(config=item.config, data=d) for d in payload["reports"]]
        isolation = payload["isolation"]
    else:
        reports, isolation = _crash_reports(item, _crash_message(status, config.timeout), duration), {}
    _teardown_outside(item, nextitem, reports)
    return reports, isolation


def _teardown_outside(item: pytest.Item, nextitem: pytest.Item | None, reports: list[pytest.TestReport]) -> None:
    """Step 3: tear down the scopes the next test does not share, in pytest's process.

    A failure there belongs to this test's teardown report, as in a bare run.
    """
    call = CallInfo.from_call(lambda: item.session._setupstate.teardown_exact(nextitem), "teardown")
    if call.excinfo is None:
        return
    rep = item.ihook.pytest_runtest_makereport(item=item, call=call)
    for i, old in enumerate(reports):
        if old.when == "teardown":
            rep.sections = [*old.sections, *rep.sections]
            reports[i] = rep
            return
    reports.append(rep)


def _unavailable_reports(item: pytest.Item, err: SandboxerError, mode: str) -> list[pytest.TestReport]:
    """The sandbox could not be set up: fail (default) or skip, as ``sandbox_unavailable`` says."""
    reason = f"sandbox unavailable: {err}" + (f" (hint: {err.hint})" if err.hint else "")
    if mode != "skip":
        return _crash_reports(item, reason, 0.0)
    path, lineno, _ = item.location
    skipped = pytest.TestReport(item.nodeid, item.location, {}, "skipped", (path, (lineno or 0) + 1, reason),
                                "setup", [], 0.0)
    done = pytest.TestReport(item.nodeid, item.location, {}, "passed", None, "teardown", [], 0.0)
    return [skipped, done]


def refused(item: pytest.Item, nextitem: pytest.Item | None, message: str, *,
            teardown: bool = True) -> list[pytest.TestReport]:
    """Reports for a sandboxed test that must not run as asked: a failure saying why."""
    reports = _crash_reports(item, message, 0.0)
    if teardown:
        _teardown_outside(item, nextitem, reports)
    return reports
