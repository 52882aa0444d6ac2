"""Run one test's protocol inside a fresh sandbox and bring its reports back.

The order of events, for one sandboxed test:

1. In pytest's process: set up the test's collectors (session, module,
   class) and every fixture of a wider scope than ``function``, so they
   exist once and are inherited by fork — not re-created per test.
2. Fork into a new sandbox (:func:`sandboxer.run` with an in-process
   workload).  There, read the isolation the test got (and go no further
   if it lacks what it requires), run the normal pytest protocol for the
   item — its function-scoped fixtures, the call, their teardown — with
   capturing and assertion rewriting exactly as pytest set them up, and
   write the serialised reports to a file descriptor shared with the parent.
3. Back in pytest's process: turn the reports into report objects (or, if
   the child crashed or timed out, into a failure that says what
   happened), tear down whatever scope the next test does not share, and
   hand everything to pytest's reporting hooks.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import sys
import tempfile
import time
import warnings
from collections.abc import Iterable, Iterator, Mapping, Sequence
from typing import Any, Literal, NamedTuple

import pytest
from _pytest.outcomes import TEST_OUTCOME
from _pytest.runner import CallInfo, runtestprotocol

from sandboxer.errors import SandboxerError
from sandboxer.syscalls import close_inherited

from .options import SandboxConfig

__all__ = ["Outcome", "run_item", "teardown_outside", "refused", "isolation_facts", "missing_isolation"]

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


def needed_binds(paths: Iterable[str], everywhere: bool = False) -> list[str]:
    """The outermost existing paths under the sandbox's private dirs (or anywhere, for an image root)."""
    found = sorted({os.path.realpath(p) for p in paths if p and os.path.exists(p)})
    out: list[str] = []
    for path in found:
        if ((everywhere or _under_private(path))
                and not any(path.startswith(o.rstrip("/") + "/") or path == o for o in out)):
            out.append(path)
    return out


_IMAGES_READY: set[str] = set()


def _ensure_image(name: str) -> None:
    """Pull a missing image once per session (and once across xdist workers: the store's lock)."""
    if name in _IMAGES_READY:
        return
    from sandboxer.images.ensure import ensure_image
    from sandboxer.images.progress import Silent

    ensure_image(name, "missing", progress=Silent())
    _IMAGES_READY.add(name)


def _python_paths(image: bool) -> list[str]:
    """Where this Python's code lives.  On the host root only what the private /tmp hides needs
    binding (prefixes included); in an image the library directories, never the host's whole /usr."""
    if not image:
        return [sys.prefix, sys.exec_prefix, sys.base_prefix, *sys.path]
    import sysconfig

    paths = [sysconfig.get_path(name) for name in ("stdlib", "platstdlib", "purelib", "platlib")]
    venv = [sys.prefix] if sys.prefix != sys.base_prefix else []
    return [*venv, *paths, *sys.path]


def _cache_dir(config: pytest.Config) -> list[str]:
    """The cache provider's directory, made now if a bare run would make it on first use."""
    cache = getattr(config, "cache", None)  # None: -p no:cacheprovider
    if cache is None:
        return []
    try:
        cache._ensure_cache_dir_and_supporting_files()
    except (AttributeError, OSError):
        return []
    return [str(cache._cachedir)]


def _user() -> str:
    import getpass

    try:
        return getpass.getuser()
    except (KeyError, OSError):
        return str(os.getuid())


def _setup_outside(item: pytest.Item) -> bool:
    """Step 1: collectors and wider-scoped fixtures, in pytest's own process.

    The item is marked active in pytest's set-up stack only while its
    request resolves the wide fixtures (their finalizers go to their own
    scope's node); its own set-up — function fixtures — happens in the child.
    An item that is not a :class:`pytest.Function` (a conftest's own
    :class:`pytest.Item`) has no fixtures: only its collectors are set up here.

    False if a collector or wide fixture failed or skipped: pytest keeps that
    outcome, and its own protocol reports it without calling the test.  Only
    their code is guarded: a mistake of ours is raised, never taken for theirs.
    """
    state = item.session._setupstate
    info = getattr(item, "_fixtureinfo", None)
    wide = [name for name in info.names_closure
            if (defs := info.name2fixturedefs.get(name)) and defs[-1].scope != "function"] if info else []
    request: Any = item._request if wide else None  # type: ignore[attr-defined]
    with _captured(item, "setup"):  # outside the guard: a mistake of ours is raised
        try:
            _setup_wide(state, item, request, wide)
        except TEST_OUTCOME:  # pytest.skip() and pytest.fail() too: they are no Exception
            return False
    return True


def _setup_wide(state: Any, item: pytest.Item, request: Any, wide: list[str]) -> None:
    state.setup(item.parent)
    state.stack[item] = ([], None)
    try:
        for name in wide:
            request.getfixturevalue(name)
    finally:
        del state.stack[item]


@contextlib.contextmanager
def _captured(item: pytest.Item, when: _When) -> Iterator[None]:
    """pytest's output and log capture around work done here for ``item``'s ``when`` phase, as its
    capture and logging plugins wrap the phase: what a wider scope's fixture prints or logs becomes
    the test's "Captured … setup/teardown" section, not stray terminal output."""
    pm = item.config.pluginmanager
    with contextlib.ExitStack() as stack:  # logging outermost, as its hooks wrap capture's: sections in that order
        logging_plugin = pm.getplugin("logging-plugin")
        if logging_plugin is not None:
            from _pytest.logging import caplog_records_key

            if when == "setup":
                item.stash[caplog_records_key] = {}  # as the plugin's set-up hook starts it
            if caplog_records_key in item.stash:
                phase = logging_plugin._runtest_for(item, when)  # a context manager, or (pytest 8) a generator
                stack.enter_context(phase if hasattr(phase, "__enter__") else _generator_context(phase))
        capman = pm.getplugin("capturemanager")
        if capman is not None:
            stack.enter_context(capman.item_capture(when, item))
        yield


@contextlib.contextmanager
def _generator_context(generator: Iterator[None]) -> Iterator[None]:
    yield from generator


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


def missing_isolation(config: SandboxConfig, isolation: dict[str, object]) -> list[str]:
    """Required isolation (``require=[...]``) that ``isolation`` (:func:`isolation_facts`) lacks."""
    namespaces = isolation.get("namespaces")
    got = set(namespaces) if isinstance(namespaces, list) else set()
    names = {"userns": "user", "pid": "pid", "mount": "mnt", "network": "net", "ipc": "ipc", "uts": "uts"}
    missing = [req for req, ns in names.items() if req in config.require and ns not in got]
    if "seccomp" in config.require and isolation.get("seccomp") != "filter":
        missing.append("seccomp")
    if "no_new_privs" in config.require and not isolation.get("no_new_privs"):
        missing.append("no_new_privs")
    return missing


class _Channel:
    """Line-delimited JSON records from the child to the parent, through a file
    both share: each record is written as soon as it exists, so a child that
    crashes later still delivers what it had (the set-up report, subtests…)."""

    def __init__(self, fd: int) -> None:
        self.fd = fd

    def send(self, kind: str, value: object) -> None:
        # what JSON cannot hold (an object a plugin hung on a report) travels as its str(), as JUnit
        # XML shows it anyway, rather than failing the test
        view = memoryview(json.dumps({kind: value}, default=str).encode() + b"\n")
        while view:
            view = view[os.write(self.fd, view):]

    @staticmethod
    def receive(fd: int) -> list[dict[str, Any]]:
        os.lseek(fd, 0, os.SEEK_SET)
        raw = b""
        while chunk := os.read(fd, 1 << 20):
            raw += chunk
        records = []
        for line in raw.splitlines():
            try:
                records.append(json.loads(line))
            except ValueError:
                break  # the child died mid-write: what came before is whole
        return records


def _intercept_logreport(item: pytest.Item, channel: _Channel) -> None:
    """Inside the child, every ``pytest_runtest_logreport`` call goes to the parent.

    The test's own reports and those a plugin logs in the middle of a call
    (subtests) are sent in order and *not* handed to the child's copies of
    the terminal, JUnit or ``-x`` plugins: their state lives in the parent,
    which replays the reports through its own hooks.  pluggy has no public
    way to swallow a hook call, so this wraps its hook executor — the same
    seam ``add_hookcall_monitoring`` uses.
    """
    config = item.config
    pm = config.pluginmanager
    inner = pm._inner_hookexec

    def hookexec(hook_name: str, hook_impls: Sequence[Any], caller_kwargs: Mapping[str, object],
                 firstresult: bool) -> object:
        __tracebackhide__ = True  # in every hook's stack now: never in a test's traceback
        if hook_name != "pytest_runtest_logreport":
            return inner(hook_name, hook_impls, caller_kwargs, firstresult)
        report: Any = caller_kwargs["report"]
        # plugins that keep per-test state here (subtests' failure count) settle the outcome now
        config.hook.pytest_report_teststatus(report=report, config=config)
        # record_property values JSON would change (a tuple into a list) go as JUnit XML writes them
        report.user_properties = [(name, v if isinstance(v, (str, int, float, bool, type(None))) else str(v))
                                  for name, v in report.user_properties]
        channel.send("report", config.hook.pytest_report_to_serializable(config=config, report=report))
        return []

    pm._inner_hookexec = hookexec


def _child(item: pytest.Item, config: SandboxConfig, out_fd: int, parent_ns: dict[str, str]) -> int:
    """Step 2, inside the sandbox.  Returns the exit status.

    Records, in order: ``isolation`` (from then on, a crash is the test's
    set-up's), the reports, ``junitxml``, ``coverage`` (under pytest-cov),
    and ``warnings`` last (the child got to the end) — or ``refused``
    instead of the test, when it lacks the isolation it requires: it must
    not run without it.
    """
    os.environ.update(config.env)
    # what pytest's own caller left open (a CI harness's pipe, a shell's 7<dir: a way to the host's files),
    # as sandboxer run drops it: those are inheritable, everything pytest opened is close-on-exec
    close_inherited()
    channel = _Channel(out_fd)
    isolation = isolation_facts(parent_ns)
    channel.send("isolation", isolation)
    if missing := missing_isolation(config, isolation):
        channel.send("refused", f"required isolation missing: {', '.join(missing)}")
        return 0
    junit = _JunitExtras(item)
    _intercept_logreport(item, channel)
    _arm_faulthandler(item.config)
    try:
        with warnings.catch_warnings(record=True) as caught:  # pytest's filters stay in force
            runtestprotocol(item, log=True, nextitem=_ParentsOnly(item))  # type: ignore[arg-type]
    except (KeyboardInterrupt, pytest.exit.Exception) as e:
        channel.send("interrupt", {"exit": isinstance(e, pytest.exit.Exception), "msg": str(getattr(e, "msg", e)),
                                   "returncode": getattr(e, "returncode", None)})
        caught = []
    channel.send("junitxml", junit.recorded())
    _send_coverage(channel)
    channel.send("warnings", [_warning_to_json(w) for w in caught])  # the last record: the child got to the end
    return 0


def _arm_faulthandler(config: pytest.Config) -> None:
    """``faulthandler_timeout`` in the child, as pytest's faulthandler plugin arms it around a test
    (its timer, a thread, did not come along in the fork; the parent's is cancelled: its stack says
    nothing about the test)."""
    try:
        from _pytest import faulthandler as plugin
    except ImportError:
        return
    stderr = config.stash.get(plugin.fault_handler_stderr_fd_key, None)  # None: -p no:faulthandler
    timeout = plugin.get_timeout_config_value(config)
    if stderr is None or timeout <= 0:
        return
    import faulthandler

    exit_on_timeout = getattr(plugin, "get_exit_on_timeout_config_value", lambda _config: False)(config)
    faulthandler.dump_traceback_later(timeout, file=stderr, exit=exit_on_timeout)


class _JunitExtras:
    """What ``record_xml_attribute`` and ``record_testsuite_property`` add to the junitxml plugin's state.

    The child has only a copy of that state: what the test added there is
    sent to the parent (:meth:`recorded`, in the child) and added to the
    parent's own (:meth:`add`).  ``record_property`` needs none of this: it
    travels on the report.
    """

    def __init__(self, item: pytest.Item) -> None:
        from _pytest.junitxml import xml_key

        self.item = item
        self.xml = item.config.stash.get(xml_key, None)
        self.suite_before = len(self.xml.global_properties) if self.xml is not None else 0

    def recorded(self) -> dict[str, Any]:
        if self.xml is None:
            return {}
        return {"attributes": self.xml.node_reporter(self.item.nodeid).attrs,
                "suite_properties": self.xml.global_properties[self.suite_before:]}

    def add(self, recorded: dict[str, Any]) -> None:
        if self.xml is None or not recorded:
            return
        reporter = self.xml.node_reporter(self.item.nodeid)
        for name, value in recorded["attributes"].items():
            reporter.add_attribute(name, value)
        for name, value in recorded["suite_properties"]:
            self.xml.add_global_property(name, value)


def _warning_to_json(w: warnings.WarningMessage) -> dict[str, Any]:
    category = w.category
    return {"category": f"{category.__module__}:{category.__qualname__}", "message": str(w.message),
            "filename": w.filename, "lineno": w.lineno}


def _replay_warnings(records: list[dict[str, Any]]) -> None:
    """Warn again, in pytest's process, what the child recorded.

    This runs inside pytest's own ``catch_warnings`` for the item, so the
    warnings land in its record and are reported as a bare run's are.
    """
    with warnings.catch_warnings():
        warnings.simplefilter("always")  # the child's filters already chose these
        for rec in records:
            message = _rebuild_warning(rec["category"], rec["message"])
            warnings.warn_explicit(message, type(message), rec["filename"], rec["lineno"])


#: stand-ins for warning classes pytest's process cannot reach (defined inside a function), by name
_STAND_INS: dict[str, type[Warning]] = {}


def _rebuild_warning(name: str, text: str) -> Warning:
    """The child's warning as its class, found by name here, says ``text``: reported as a bare run
    reports it (``file:line: MyWarning: text``)."""
    module_name, _, qualname = name.partition(":")
    obj: Any = sys.modules.get(module_name)
    for part in qualname.split("."):
        obj = getattr(obj, part, None)
    if not (isinstance(obj, type) and issubclass(obj, Warning)):
        obj = _STAND_INS.get(name)
        if obj is None:  # same name and module, so the summary line reads the same
            obj = _STAND_INS[name] = type(qualname.rpartition(".")[2], (UserWarning,),
                                          {"__module__": module_name, "__qualname__": qualname})
    try:
        return obj(text)
    except Exception:  # a constructor of its own (MyWarning(code, text)): the instance, not its __init__
        warning = obj.__new__(obj)
        Warning.__init__(warning, text)
        try:
            if str(warning) == text:
                return warning
        except Exception:
            pass
    return UserWarning(f"{qualname}: {text}")


def _current_coverage() -> Any:
    cov_module = sys.modules.get("coverage")  # never imported just for this
    return cov_module.Coverage.current() if cov_module is not None else None


def _send_coverage(channel: _Channel) -> None:
    """This child's coverage data, for the parent to write where its combine() finds it: the data
    file's directory (the project's, often) is not the sandbox's to write."""
    cov = _current_coverage()
    if cov is None:
        return
    import binascii

    cov.stop()
    channel.send("coverage", binascii.b2a_base64(cov.get_data().dumps(), newline=False).decode())


def _write_coverage(encoded: str) -> None:
    """A child's coverage data as a parallel-mode data file (``.coverage.sandbox.PID.HEX``) beside ours."""
    cov = _current_coverage()
    if cov is None:
        return
    import binascii

    data = sys.modules["coverage"].CoverageData(basename=os.path.abspath(cov.config.data_file),
                                                suffix=f"sandbox.{os.getpid()}.{os.urandom(4).hex()}")
    data.loads(binascii.a2b_base64(encoded))  # written to disk as it loads


_When = Literal["setup", "call", "teardown"]


def _fail_report(item: pytest.Item, when: _When, message: str, duration: float) -> pytest.TestReport:
    def fail() -> None:
        # from None: made inside an ``except`` block, it would show that error again ("During handling…")
        raise pytest.fail.Exception(message, pytrace=False) from None

    rep: pytest.TestReport = item.ihook.pytest_runtest_makereport(item=item, call=CallInfo.from_call(fail, when))
    rep.duration = duration
    return rep


def _passed_report(item: pytest.Item, when: Literal["setup", "teardown"]) -> pytest.TestReport:
    return pytest.TestReport(item.nodeid, item.location, {}, "passed", None, when, [], 0.0)


def _crash_reports(item: pytest.Item, message: str, duration: float) -> list[pytest.TestReport]:
    """setup/call/teardown reports for a test whose sandboxed child never reported."""
    return _complete(item, [], message, duration)


def _complete(item: pytest.Item, reports: list[pytest.TestReport], message: str,
              duration: float, started: bool = False) -> list[pytest.TestReport]:
    """A full setup/call/teardown sequence from what a crashed child sent.

    The phase the child died in fails with ``message`` — the set-up when it
    had ``started`` the test's protocol and sent no set-up report (an error
    at set-up, as a bare run says); phases it finished keep their real
    reports, subtests' included.
    """
    phases = {r.when: r for r in reports if type(r) is pytest.TestReport}
    out = list(reports)
    if "setup" not in phases and started:
        return [*out, _fail_report(item, "setup", message, duration), _passed_report(item, "teardown")]
    if "setup" not in phases:
        out.insert(0, _passed_report(item, "setup"))
    if "call" not in phases and phases.get("setup", out[0]).passed and "teardown" not in phases:
        out.append(_fail_report(item, "call", message, duration))
        out.append(_passed_report(item, "teardown"))
    elif "teardown" not in phases:
        out.append(_fail_report(item, "teardown", message, duration))
    return out


def _crash_message(status: Any, timeout: float | None) -> str:
    if status.timed_out:
        return f"sandboxed test timed out after {float(timeout or 0)}s; process tree killed"
    if status.signal is not None:
        return f"sandboxed test killed by {signal.Signals(status.signal).name}"
    return f"sandboxed test exited with status {status.code} before reporting"


class Outcome(NamedTuple):
    """What one sandboxed test produced, for pytest's process to report."""

    reports: list[pytest.TestReport]
    isolation: dict[str, object]  #: what the child read from the kernel; empty if it never reported
    interrupt: dict[str, Any] | None  #: a ``pytest.exit`` or Ctrl-C inside the test, to raise again
    torn_down: bool = False  #: its wider scopes too (pytest's own protocol ran): see :func:`teardown_outside`


def run_item(item: pytest.Item, nextitem: pytest.Item | None, config: SandboxConfig,
             options: dict[str, Any]) -> Outcome:
    """Steps 1-3 for one item, but for the wider scopes' teardown (:func:`teardown_outside`), which
    waits until the set-up and call reports are logged: they decide whether the session stops."""
    from sandboxer import SandboxOptions, Volume, run
    from sandboxer.pool import poolable

    if not _setup_outside(item):  # pytest's own protocol reports it, and logs as it goes (-x sees it)
        runtest = item.runtest  # never outside the sandbox, should the set-up pass this second time
        item.runtest = lambda: pytest.fail("the set-up of wider-scoped fixtures failed, then passed: "  # type: ignore[method-assign]
                                           "not running this test outside its sandbox", pytrace=False)
        try:
            runtestprotocol(item, log=True, nextitem=nextitem)
        finally:
            item.runtest = runtest  # type: ignore[method-assign]
        return Outcome([], {}, None, torn_down=True)

    basetemp = item.config._tmp_path_factory.getbasetemp()  # type: ignore[attr-defined]
    image = config.image is not None
    read_only_paths = [*_python_paths(image), str(item.config.rootpath), os.getcwd()]
    # pytest's own temporary area is scratch space by definition: writable, like tmp_path; and its
    # cache directory, which a test's cache.set() writes to as in a bare run
    scratch = [str(basetemp), *(str(p) for p in basetemp.parents if p.name == f"pytest-of-{_user()}"),
               *_cache_dir(item.config)]
    # writable binds wherever they are (the overlay would swallow writes); in an image, the test's
    # own Python (stdlib, virtualenv, sys.path) is bound in read-only
    writable = needed_binds(scratch, everywhere=True)
    volumes = [Volume(p, p, False) for p in writable]
    volumes += [Volume(p, p, True) for p in needed_binds(read_only_paths, everywhere=image)
                if not any(p == w or p.startswith(w + "/") for w in writable)]
    volumes += [Volume(src, dst, ro) for src, dst, ro in config.volumes]
    opts = SandboxOptions(
        command=["pytest"], hostname=config.hostname, user=config.user, read_only=config.read_only,
        cap_add=config.cap_add, cap_drop=config.cap_drop, seccomp=config.seccomp, init=True,
        network=config.network, volumes=volumes, workdir=os.getcwd(), upper_dir=options.get("upper_dir"),
        image=config.image)
    parent_ns = {ns: os.readlink(f"/proc/self/ns/{ns}") for ns in _NAMESPACES}
    fd, path = tempfile.mkstemp(prefix="sandboxer-reports-")
    os.unlink(path)
    start = time.monotonic()

    def call() -> int:
        return _child(item, config, fd, parent_ns)

    pool = options.get("pool")
    if "faulthandler" in sys.modules:  # faulthandler_timeout's timer: the child runs the test, and its own
        sys.modules["faulthandler"].cancel_dump_traceback_later()
    try:
        if config.image is not None:
            _ensure_image(config.image)
        if pool is not None and poolable(opts):  # set up ahead of time by the pool; this process only joins
            status = pool.run(opts, call, timeout=config.timeout)
        else:
            status = run(opts, call, timeout=config.timeout, on_notice=lambda _msg: None)
        records = _Channel.receive(fd)
    except SandboxerError as e:
        return Outcome(_setup_error_reports(item, e, options.get("unavailable", "fail")), {}, None)
    finally:
        os.close(fd)
    duration = time.monotonic() - start
    hook = item.config.hook
    reports, isolation, interrupt, refusal, finished = [], {}, None, None, False
    for record in records:
        if "report" in record:
            rep = hook.pytest_report_from_serializable(config=item.config, data=record["report"])
            if isinstance(rep.longrepr, list):
                rep.longrepr = tuple(rep.longrepr)  # a skip's (path, line, reason); JSON made it a list
            reports.append(rep)
        elif "warnings" in record:
            _replay_warnings(record["warnings"])
            finished = True  # the child's last record: it got to the end
        elif "isolation" in record:
            isolation = record["isolation"]
        elif "interrupt" in record:
            interrupt = record["interrupt"]
        elif "refused" in record:
            refusal = record["refused"]
        elif "junitxml" in record:
            _JunitExtras(item).add(record["junitxml"])
        elif "coverage" in record:
            _write_coverage(record["coverage"])
    if refusal is not None:
        reports = _crash_reports(item, refusal, 0.0)
    elif not (status.code == 0 and finished) and interrupt is None:
        reports = _complete(item, reports, _crash_message(status, config.timeout), duration, started=bool(isolation))
    return Outcome(reports, isolation, interrupt)


def teardown_outside(item: pytest.Item, nextitem: pytest.Item | None, reports: list[pytest.TestReport]) -> None:
    """Step 3: tear down the scopes the next test does not share, in pytest's process.

    A failure there belongs to this test's teardown report, as in a bare run.  As pytest's own
    protocol does, pass ``nextitem=None`` when the session is about to stop (``-x``, ``--maxfail``):
    everything is torn down now, and its errors reported on this test.
    """
    def teardown() -> None:
        __tracebackhide__ = True  # not part of the failure's story: pytest's own frames here are hidden too
        item.session._setupstate.teardown_exact(nextitem)

    before = len(item._report_sections)
    with _captured(item, "teardown"):
        call = CallInfo.from_call(teardown, "teardown")
    captured = [(f"Captured {key} {when}", text) for when, key, text in item._report_sections[before:]]
    rep = item.ihook.pytest_runtest_makereport(item=item, call=call) if call.excinfo is not None else None
    for i, old in enumerate(reports):
        if old.when == "teardown":
            if rep is None:
                old.sections.extend(captured)
            else:  # the child's sections (everything up to its own teardown), then ours
                rep.sections = [*old.sections, *captured]
                reports[i] = rep
            return
    if rep is not None:
        reports.append(rep)


def _setup_error_reports(item: pytest.Item, err: SandboxerError, unavailable: str) -> list[pytest.TestReport]:
    """The sandbox could not be set up.

    A mistake in the test's own sandbox (a marker's value, an image that
    can't be had) always fails; ``sandbox_unavailable`` (fail or skip) is
    only for a host that cannot sandbox.
    """
    from sandboxer.errors import ConfigError, UsageError
    from sandboxer.images.store import StoreError

    hint = f" (hint: {err.hint})" if err.hint else ""
    if isinstance(err, (UsageError, ConfigError, StoreError)):
        return _crash_reports(item, f"invalid sandbox for this test: {err}{hint}", 0.0)
    reason = f"sandbox unavailable: {err}{hint}"
    if unavailable != "skip":
        return _crash_reports(item, reason, 0.0)
    path, lineno, _ = item.location
    skipped = pytest.TestReport(item.nodeid, item.location, {}, "skipped", (path, (lineno or 0) + 1, reason),
                                "setup", [], 0.0)
    return [skipped, _passed_report(item, "teardown")]


def refused(item: pytest.Item, message: str) -> list[pytest.TestReport]:
    """Reports for a sandboxed test that must not run as asked: a failure saying why."""
    return _crash_reports(item, message, 0.0)
