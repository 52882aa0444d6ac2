"""The pytest plugin: ``@pytest.mark.sandbox`` runs a test in a fresh sandbox.

Registered through the ``pytest11`` entry point.  Where things run:

* session-, package-, module- and class-scoped fixtures, and the
  collectors' own set-up (``setup_module``…), run once in pytest's process
  and are inherited by every sandboxed test through fork;
* function-scoped fixtures, the test itself and their teardown run inside
  the test's sandbox;
* reports come back serialised and go through pytest's hooks exactly as a
  bare run's do (terminal, ``-x``, ``--lf``, JUnit XML, …).

``tmp_path`` and friends live under pytest's basetemp, which is bound into
every sandbox: they exist inside and keep what the test wrote.

Sandboxes come from a pool process (:mod:`sandboxer.pool`) that sets the
next one up while the current test runs; the test's process joins it.
"""

from __future__ import annotations

import os
from typing import Any

import pytest

from .handle import SandboxHandle
from .options import KEYWORDS, MarkerError, SandboxConfig, from_markers

_CONFIG_KEY = pytest.StashKey[SandboxConfig]()
#: the ini and command line's sandbox options, under every test's markers
_DEFAULTS_KEY = pytest.StashKey[dict[str, object]]()
#: per session: nodeid -> the isolation a test got; (nodeid, path) of kept layers
_ISOLATION_KEY = pytest.StashKey[dict[str, dict[str, object]]]()
_KEPT_KEY = pytest.StashKey[list[tuple[str, str]]]()
_POOL_KEY = pytest.StashKey[Any]()


def pytest_addoption(parser: pytest.Parser) -> None:
    group = parser.getgroup("sandboxer", "run tests in rootless sandboxes")
    group.addoption("--sandbox-all", action="store_true",
                    help="run every test in its own sandbox, marked or not")
    group.addoption("--no-sandbox", action="store_true",
                    help="run tests marked with @pytest.mark.sandbox bare (for debugging)")
    group.addoption("--sandbox-timeout", type=float, metavar="SECONDS",
                    help="kill a sandboxed test (and everything it started) after SECONDS")
    group.addoption("--sandbox-network", metavar="MODE",
                    help="the network of sandboxed tests: none (default, loopback only), host, pasta, slirp4netns, "
                         "or a user-defined network's name")
    group.addoption("--sandbox-keep-failed", action="store_true",
                    help="keep the writable layer of a failed sandboxed test and print its path")
    group.addoption("--sandbox-report", action="store_true",
                    help="show the isolation each sandboxed test actually got")
    parser.addini("sandbox_unavailable", "fail or skip sandboxed tests when this host can't set up a sandbox",
                  default="fail")
    parser.addini("sandbox_timeout", "default timeout of sandboxed tests, in seconds", default="")
    parser.addini("sandbox_network", "default network of sandboxed tests (none, host, pasta, slirp4netns or a "
                  "user-defined network)",
                  default="")


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers",
        "sandbox(**options): run this test in a fresh rootless sandbox (sandboxer). Options: network, "
        "volumes, writable, env, hostname, user, timeout, read_only, cap_add, cap_drop, seccomp, memory, "
        "cpus, pids, require.")
    config.stash[_ISOLATION_KEY] = {}
    config.stash[_KEPT_KEY] = []
    if config.getini("sandbox_unavailable") not in ("fail", "skip"):
        raise pytest.UsageError("sandbox_unavailable must be 'fail' or 'skip'")
    # checked once, now; with --no-sandbox nothing is sandboxed, so nothing of it is used
    config.stash[_DEFAULTS_KEY] = {} if config.getoption("no_sandbox") else _defaults(config)


def _defaults(config: pytest.Config) -> dict[str, object]:
    """The ini and command line's defaults, checked as markers are: one error at start-up, not one per test."""
    out: dict[str, object] = {}
    timeout = config.getoption("sandbox_timeout") or config.getini("sandbox_timeout")
    if timeout:
        try:
            out["timeout"] = float(timeout)
        except ValueError:
            raise pytest.UsageError(f"sandbox_timeout: not a number: {timeout!r}") from None
    network = config.getoption("sandbox_network") or config.getini("sandbox_network")
    if network:
        out["network"] = network
    for key, value in out.items():
        check, expected = KEYWORDS[key]
        if not check(value):
            raise pytest.UsageError(f"sandbox_{key} (--sandbox-{key}): {value!r}: expected {expected}")
    return out


def _wants_sandbox(item: pytest.Item) -> bool:
    if item.config.getoption("no_sandbox"):
        return False
    return item.config.getoption("sandbox_all") or item.get_closest_marker("sandbox") is not None


def pytest_collection_finish(session: pytest.Session) -> None:
    """Check every sandboxed test's markers now, not inside a forked child.

    Only the tests that will run: this hook comes after every plugin's
    deselection (``-k``, ``-m``, ``--lf``), which ``pytest_collection_modifyitems``
    can't be sure of.
    """
    config = session.config
    defaults = config.stash[_DEFAULTS_KEY]
    problems = []
    sandboxed = False
    for item in session.items:
        if not _wants_sandbox(item):
            continue
        sandboxed = True
        if args := [m.args for m in item.iter_markers("sandbox") if m.args]:
            problems.append(f"{item.nodeid}: sandbox marker: positional arguments {args[0]!r}; use keywords")
            continue
        try:
            item.stash[_CONFIG_KEY] = from_markers([m.kwargs for m in item.iter_markers("sandbox")], defaults)
        except MarkerError as e:
            problems.append(f"{item.nodeid}: sandbox marker: {e}")
    if problems:
        raise pytest.UsageError("invalid sandbox markers:\n  " + "\n  ".join(problems))
    if sandboxed and not config.getoption("sandbox_keep_failed"):
        _pool(config).warm()  # its start-up overlaps the tests that run before the first sandboxed one


def _upfront_failure(config: SandboxConfig) -> str | None:
    """A demand this sandboxer cannot meet: fail clearly rather than run unlimited."""
    if config.limits:
        asked = ", ".join(f"{k}={v!r}" for k, v in config.limits.items())
        return (f"limits unavailable on this host: {asked} asked, but sandboxer has no cgroup driver yet; "
                "remove the keyword to run unlimited")
    if "cgroup" in config.require:
        return "requires cgroup limits, which this host can't give (no cgroup driver yet)"
    return None


@pytest.hookimpl(tryfirst=True)
def pytest_runtest_protocol(item: pytest.Item, nextitem: pytest.Item | None) -> bool | None:
    if not _wants_sandbox(item):
        return None
    from . import runner

    config = item.stash.get(_CONFIG_KEY, None) or SandboxConfig()
    item.ihook.pytest_runtest_logstart(nodeid=item.nodeid, location=item.location)
    options: dict[str, Any] = {"unavailable": item.config.getini("sandbox_unavailable"),
                               "pool": _pool(item.config)}
    keep = item.config.getoption("sandbox_keep_failed")
    if keep:
        options["upper_dir"], keep_lock = _keep_dir()
    failure = _upfront_failure(config)
    if failure:
        outcome = runner.Outcome(runner.refused(item, failure), {}, None)
    else:
        outcome = runner.run_item(item, nextitem, config, options)
    reports, isolation = outcome.reports, outcome.isolation
    # set-up and call first, as pytest logs them before its teardown: -x and --maxfail decide there
    # whether the session stops, and if it does the wider scopes are torn down now (their errors are
    # this test's), not after the session (where nothing would report them)
    for rep in reports:
        if rep.when != "teardown":
            _log(item, rep, isolation)
    if not outcome.torn_down:
        stopping = item.session.shouldfail or item.session.shouldstop
        runner.teardown_outside(item, None if stopping else nextitem, reports)
    if keep:
        _keep_or_remove(item, options["upper_dir"], keep_lock, reports)
    for rep in reports:
        if rep.when == "teardown":
            _log(item, rep, isolation)
    item.ihook.pytest_runtest_logfinish(nodeid=item.nodeid, location=item.location)
    if isolation:
        item.config.stash[_ISOLATION_KEY][item.nodeid] = isolation
    interrupt = outcome.interrupt
    if interrupt is not None:  # the test called pytest.exit() or got Ctrl-C: stop the session, as bare
        if interrupt["exit"]:
            raise pytest.exit.Exception(interrupt["msg"], interrupt["returncode"])
        raise KeyboardInterrupt
    return True


def _log(item: pytest.Item, rep: pytest.TestReport, isolation: dict[str, object]) -> None:
    if isolation:
        rep.user_properties.append(("sandbox", _describe(isolation)))
    item.ihook.pytest_runtest_logreport(report=rep)


def _pool(config: pytest.Config) -> Any:
    """This process's sandbox pool (:mod:`sandboxer.pool`), which starts on first use."""
    pool = config.stash.get(_POOL_KEY, None)
    if pool is None:
        from sandboxer.pool import Pool

        pool = config.stash[_POOL_KEY] = Pool()
    return pool


def pytest_unconfigure(config: pytest.Config) -> None:
    pool = config.stash.get(_POOL_KEY, None)
    if pool is not None:
        pool.close()  # waits: no sandbox of ours outlives the session


def _describe(isolation: dict[str, object]) -> str:
    ns = ",".join(isolation.get("namespaces", []))  # type: ignore[arg-type]
    return (f"namespaces={ns} seccomp={isolation.get('seccomp')} "
            f"no_new_privs={isolation.get('no_new_privs')} caps={isolation.get('capabilities')} "
            f"limits={isolation.get('limits')}")


def _keep_dir() -> tuple[str, int]:
    """A fresh directory for a test's writable layer, and the lock held on it while the test runs.

    It is ``keep-*`` until the test ends: a session killed meanwhile leaves it unlocked, and the
    next run's garbage collection removes it (:func:`sandboxer.state.collect_garbage`).  A failed
    test's becomes ``kept-*``, which nothing collects.
    """
    from sandboxer.state import create_locked_dir, state_root

    path = os.path.join(state_root(), f"keep-{os.urandom(8).hex()}")
    return path, create_locked_dir(path)


def _keep_or_remove(item: pytest.Item, path: str, lock: int, reports: list[pytest.TestReport]) -> None:
    """Keep a failed test's writable layer; remove it, or the empty directory of a sandbox that never started."""
    try:
        if any(r.failed for r in reports) and os.path.isdir(os.path.join(path, "upper")):
            kept = os.path.join(os.path.dirname(path), "kept-" + os.path.basename(path)[len("keep-"):])
            os.rename(path, kept)
            upper = os.path.join(kept, "upper")
            item.config.stash[_KEPT_KEY].append((item.nodeid, upper))
            for rep in reports:
                if rep.failed:
                    rep.sections.append(("sandbox", f"writable layer kept at {upper}"))
            return
        from sandboxer.state import remove_tree

        remove_tree(path)  # still locked: no other process's garbage collection races us
    finally:
        os.close(lock)


def pytest_terminal_summary(terminalreporter: Any, exitstatus: int, config: pytest.Config) -> None:
    isolation = config.stash[_ISOLATION_KEY]
    if isolation and (config.getoption("sandbox_report") or config.getoption("verbose") > 0):
        terminalreporter.section("sandbox isolation")
        for nodeid, facts in isolation.items():
            terminalreporter.write_line(f"{nodeid}: {_describe(facts)}")
    if kept := config.stash[_KEPT_KEY]:
        terminalreporter.section("kept sandbox layers")
        for nodeid, path in kept:
            terminalreporter.write_line(f"{nodeid}: {path}")


@pytest.fixture
def sandbox_factory(request: pytest.FixtureRequest) -> Any:
    """Make sandboxes on the host root: ``sandbox_factory(**SandboxOptions keywords)``.

    All of them are removed after the test.  Not in a sandboxed test: a
    sandbox has no ``/dev/fuse`` to make sandboxes in (refused at set-up,
    rather than failing later with a host error that blames the host).
    """
    if _wants_sandbox(request.node):
        name = "sandbox" if "sandbox" in request.fixturenames else "sandbox_factory"
        how = "remove its sandbox marker" if request.node.get_closest_marker("sandbox") else "leave out --sandbox-all"
        pytest.fail(f"the {name} fixture cannot be used inside a sandboxed test; a sandbox cannot make sandboxes "
                    f"of its own (it has no /dev/fuse) (hint: {how}: the fixture's commands run in sandboxes "
                    "already)", pytrace=False)
    handles: list[SandboxHandle] = []

    def make(**options: Any) -> SandboxHandle:
        handle = SandboxHandle(**options)
        handles.append(handle)
        return handle

    yield make
    for handle in handles:
        handle.close()


@pytest.fixture
def sandbox(sandbox_factory: Any) -> SandboxHandle:
    """A sandbox of this test's own: ``sandbox.run([...])``, ``write_file``, ``read_file``."""
    handle: SandboxHandle = sandbox_factory()
    return handle
