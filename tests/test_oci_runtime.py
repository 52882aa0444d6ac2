"""The OCI runtime command line (create/start/state/kill/delete/features), driven as runc is driven."""

from __future__ import annotations

import json
import os
import socket
import stat
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
from conftest import SANDBOXER, sandboxer
from test_bundle import BUSYBOX, make_bundle, write_config

pytestmark = pytest.mark.skipif(not os.path.exists(BUSYBOX), reason="needs busybox-static")

LOOP_UNTIL_TERM = 'trap "exit 3" TERM; while :; do sleep 0.05; done'


def oci_root() -> str:
    from sandboxer.state import state_root

    return os.path.join(state_root(), "oci")


def create(bundle: str, cid: str, *extra: str, globals_: tuple[str, ...] = ()) -> subprocess.CompletedProcess[str]:
    """``create`` with its stdout/stderr in files (the container keeps them open, as with runc)."""
    out, err = os.path.join(bundle, f"{cid}.out"), os.path.join(bundle, f"{cid}.err")
    with open(out, "w") as o, open(err, "w") as e:
        rc = subprocess.run([*SANDBOXER, *globals_, "create", "--bundle", bundle, *extra, cid],
                            stdin=subprocess.DEVNULL, stdout=o, stderr=e, timeout=60).returncode
    return subprocess.CompletedProcess([], rc, Path(out).read_text(), Path(err).read_text())


def state(cid: str, *globals_: str) -> dict:  # type: ignore[type-arg]
    p = sandboxer(*globals_, "state", cid)
    assert p.returncode == 0, p.stderr
    return json.loads(p.stdout)  # type: ignore[no-any-return]


def wait_status(cid: str, want: str, *globals_: str, timeout: float = 10) -> dict:  # type: ignore[type-arg]
    deadline = time.monotonic() + timeout
    while True:
        s = state(cid, *globals_)
        if s["status"] == want or time.monotonic() > deadline:
            assert s["status"] == want, s
            return s
        time.sleep(0.02)


@pytest.fixture
def bundle(tmp_path: Path) -> str:
    path = str(tmp_path / "bundle")
    os.mkdir(path)
    return path


@pytest.fixture
def cid(request: pytest.FixtureRequest) -> object:
    """A fresh container id, deleted (forced) after the test whatever happened."""
    name = f"t{os.getpid()}-{os.urandom(3).hex()}"
    yield name
    sandboxer("delete", "--force", name)


def test_whole_lifecycle(bundle: str, cid: str) -> None:
    make_bundle(bundle, ["sh", "-c", LOOP_UNTIL_TERM])
    pid_file = os.path.join(bundle, "pid")
    p = create(bundle, cid, "--pid-file", pid_file)
    assert p.returncode == 0, p.stderr
    assert p.stdout == ""  # create prints nothing: its exit status says it all
    pid = int(Path(pid_file).read_text())  # written before create returned
    s = state(cid)
    assert s["status"] == "created" and s["pid"] == pid and s["id"] == cid
    assert s["bundle"] == bundle and s["ociVersion"] and s["annotations"] == {}
    assert sandboxer("start", cid).returncode == 0
    s = state(cid)
    assert s["status"] == "running" and s["pid"] == pid
    assert open(f"/proc/{pid}/cmdline").read().startswith("sh\0")  # the workload, exec'ed
    assert sandboxer("kill", cid, "KILL").returncode == 0
    assert wait_status(cid, "stopped")["pid"] == 0
    p = sandboxer("delete", cid)
    assert p.returncode == 0, p.stderr
    assert not os.path.exists(os.path.join(oci_root(), cid))
    gone = sandboxer("state", cid)
    assert gone.returncode != 0 and f"container {cid} does not exist" in gone.stderr


def test_the_container_writes_to_creates_stdout(bundle: str, cid: str) -> None:
    make_bundle(bundle, ["sh", "-c", "echo to-stdout; echo to-stderr >&2; id -u"])
    p = create(bundle, cid)
    assert p.returncode == 0, p.stderr
    assert sandboxer("start", cid).returncode == 0
    wait_status(cid, "stopped")
    assert Path(bundle, f"{cid}.out").read_text() == "to-stdout\n0\n"
    assert Path(bundle, f"{cid}.err").read_text() == "to-stderr\n"


_PHASES = ("prestart", "createRuntime", "createContainer", "startContainer", "poststart", "poststop")


def _hook_bundle(bundle: str, args: list[str], failing: tuple[str, ...] = ()) -> str:
    """A bundle with a hook for every phase, each appending "PHASE STATE-JSON" to one log (returned):
    the host's ``hook.sh`` (a path in the runtime namespace) and, for startContainer, the rootfs's
    ``/hook.sh`` (a path in the container's), which reaches the log through a bind mount."""
    log = os.path.join(bundle, "log", "hooks.log")
    config = make_bundle(bundle, args)
    os.mkdir(os.path.dirname(log))
    config["mounts"].append({"destination": "/log", "type": "bind", "source": os.path.dirname(log),
                             "options": ["rbind", "rw"]})
    for hook, target in ((os.path.join(bundle, "hook.sh"), log),
                         (os.path.join(bundle, "rootfs", "hook.sh"), "/log/hooks.log")):
        Path(hook).write_text(f'#!/bin/sh\necho "$1 $(cat)" >> {target}\n[ "$2" != fail ]\n')
        os.chmod(hook, stat.S_IRWXU)
    config["hooks"] = {
        phase: [{"path": "/hook.sh" if phase == "startContainer" else os.path.join(bundle, "hook.sh"),
                 "args": ["hook.sh", phase, "fail" if phase in failing else "ok"]}]
        for phase in _PHASES}
    write_config(bundle, config)
    return log


def _phases(log: str) -> list[tuple[str, dict]]:  # type: ignore[type-arg]
    if not os.path.exists(log):
        return []
    return [(phase, json.loads(doc)) for phase, doc in (line.split(" ", 1) for line in open(log).read().splitlines())]


def test_hooks_run_at_the_moments_the_spec_names_with_the_state_on_stdin(bundle: str, cid: str) -> None:
    log = _hook_bundle(bundle, ["sh", "-c", LOOP_UNTIL_TERM])
    assert create(bundle, cid).returncode == 0
    pid = state(cid)["pid"]
    assert [p for p, _ in _phases(log)] == ["prestart", "createRuntime", "createContainer"]
    assert sandboxer("start", cid).returncode == 0
    assert [p for p, _ in _phases(log)] == [*_PHASES[:5]]
    assert sandboxer("kill", cid, "TERM").returncode == 0
    wait_status(cid, "stopped")
    assert [p for p, _ in _phases(log)] == [*_PHASES[:5]]  # poststop is delete's
    assert sandboxer("delete", cid).returncode == 0
    entries = _phases(log)
    assert [p for p, _ in entries] == [*_PHASES]
    assert all(doc["id"] == cid and doc["bundle"] == bundle and doc["ociVersion"] for _, doc in entries)
    assert [doc["status"] for _, doc in entries] == ["created"] * 4 + ["running", "stopped"]
    assert [doc.get("pid") for _, doc in entries] == [pid] * 5 + [None]  # the host's pid, in the container too


def test_failing_poststart_and_poststop_hooks_only_warn(bundle: str, cid: str) -> None:
    log = _hook_bundle(bundle, ["sh", "-c", LOOP_UNTIL_TERM], failing=("poststart", "poststop"))
    assert create(bundle, cid).returncode == 0
    p = sandboxer("start", cid)
    assert p.returncode == 0
    assert "warning: hooks.poststart[0]" in p.stderr
    assert state(cid)["status"] == "running"
    p = sandboxer("delete", "--force", cid)
    assert p.returncode == 0
    assert "warning: hooks.poststop[0]" in p.stderr
    assert [ph for ph, _ in _phases(log)] == [*_PHASES]
    assert not os.path.exists(os.path.join(oci_root(), cid))


def test_run_bundle_runs_every_hook_in_order(bundle: str) -> None:
    log = _hook_bundle(bundle, ["true"])
    p = sandboxer("run", "--bundle", bundle)
    assert p.returncode == 0, p.stderr
    assert [p for p, _ in _phases(log)] == [*_PHASES]


def test_create_container_hooks_see_the_container_and_the_host_start_container_ones_the_root(
        bundle: str, cid: str) -> None:
    """createContainer: the container's mount namespace (its /proc mounted at root.path) before
    pivot_root, the host's paths still there; startContainer: the container's root, confined as the
    workload (its seccomp filter and no_new_privs), as runc does."""
    log = _hook_bundle(bundle, ["sh", "-c", "readlink /proc/self/ns/mnt; grep -E '^(Seccomp|NoNewPrivs):' "
                                            "/proc/self/status"])
    rootfs = os.path.join(bundle, "rootfs")
    Path(rootfs, "marker").write_text("")
    probe = 'echo "$(readlink /proc/self/ns/mnt) $({check}) $(grep -E \'^(Seccomp|NoNewPrivs):\' ' \
            '/proc/self/status | tr -d \'\\t\\n\')" >> {out}'
    Path(bundle, "probe.sh").write_text("#!/bin/sh\n" + probe.format(
        check=f"[ -e {rootfs}/proc/self/status ] && echo proc-at-root-path", out=f"{bundle}/log/create"))
    Path(rootfs, "probe.sh").write_text("#!/bin/sh\n" + probe.format(
        check=f"[ -e /marker ] && [ ! -e {bundle} ] && echo container-root", out="/log/start"))
    for script in (os.path.join(bundle, "probe.sh"), os.path.join(rootfs, "probe.sh")):
        os.chmod(script, stat.S_IRWXU)
    config = json.loads(Path(bundle, "config.json").read_text())
    config["hooks"]["createContainer"].append({"path": os.path.join(bundle, "probe.sh")})
    config["hooks"]["startContainer"].append({"path": "/probe.sh"})
    config["linux"]["seccomp"] = {"defaultAction": "SCMP_ACT_ALLOW",
                                  "syscalls": [{"names": ["mknod"], "action": "SCMP_ACT_ERRNO"}]}
    write_config(bundle, config)
    p = create(bundle, cid)
    assert p.returncode == 0, p.stderr
    container_ns = os.readlink(f"/proc/{state(cid)['pid']}/ns/mnt")
    assert container_ns != os.readlink("/proc/self/ns/mnt")
    assert Path(bundle, "log", "create").read_text().split()[:2] == [container_ns, "proc-at-root-path"]
    assert sandboxer("start", cid).returncode == 0
    wait_status(cid, "stopped")
    assert Path(bundle, "log", "start").read_text().split() == [container_ns, "container-root",
                                                                "NoNewPrivs:1Seccomp:2"]
    workload = Path(bundle, f"{cid}.out").read_text().split()
    assert workload[0] == container_ns and workload[1:] == ["NoNewPrivs:", "1", "Seccomp:", "2"]
    assert [p for p, _ in _phases(log)] == [*_PHASES[:5]]


def _leftovers(root: str) -> list[str]:
    """What a container under the state root ``root`` (--root) left: sandbox state dirs, and
    processes holding a file under ``root`` (the supervisor, PID 1: locks, the gate)."""
    found = [e for e in os.listdir(os.path.join(root, "sandboxer")) if len(e) == 64]
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            if any(os.readlink(f"/proc/{pid}/fd/{fd}").startswith(root) for fd in os.listdir(f"/proc/{pid}/fd")):
                found.append(f"process {pid}")
        except OSError:
            pass
    return found


def _no_leftovers(root: str) -> None:
    deadline = time.monotonic() + 10
    while (left := _leftovers(root)) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not left


@pytest.mark.parametrize("how", ["fail", "timeout"])
@pytest.mark.parametrize("phase", ["createRuntime", "createContainer", "startContainer"])
def test_a_failing_hook_fails_create_or_start_in_one_line_and_leaves_nothing(
        bundle: str, cid: str, tmp_path: Path, phase: str, how: str) -> None:
    log = _hook_bundle(bundle, ["sh", "-c", LOOP_UNTIL_TERM], failing=(phase,))
    if how == "timeout":
        config = json.loads(Path(bundle, "config.json").read_text())
        config["hooks"][phase] = [{"path": "/bin/sh", "args": ["sh", "-c", "sleep 30"], "timeout": 1}]
        write_config(bundle, config)
    root = ("--root", str(tmp_path / "root"))
    began = time.monotonic()
    try:
        p = create(bundle, cid, globals_=root)
        at_create = phase != "startContainer"
        if not at_create:
            assert p.returncode == 0, p.stderr
            p = sandboxer(*root, "start", cid)
            assert state(cid, *root)["status"] == "stopped"
            _no_leftovers(root[1])
            assert sandboxer(*root, "delete", cid).returncode == 0  # stopped, as the spec says, until deleted
    finally:
        sandboxer(*root, "delete", "--force", cid)
    assert time.monotonic() - began < 20
    assert p.returncode != 0
    why = "exited with status 1" if how == "fail" else "timed out after 1s"
    assert p.stderr.splitlines() == [p.stderr.splitlines()[0]] and f"hooks.{phase}[0]" in p.stderr
    assert p.stderr.startswith("sandboxer: error: ") and why in p.stderr
    _no_leftovers(root[1])
    assert not os.path.exists(os.path.join(root[1], "sandboxer", "oci", cid))
    # the lifecycle goes on at "destroy the container, run the poststop hooks" (runtime-spec runtime.md)
    assert [p for p, _ in _phases(log)] == [*_PHASES[:_PHASES.index(phase) + (how == "fail")], "poststop"]


def test_run_bundle_fails_on_a_failing_start_container_hook(bundle: str) -> None:
    _hook_bundle(bundle, ["echo", "never"], failing=("startContainer",))
    p = sandboxer("run", "--bundle", bundle)
    assert p.returncode != 0 and "never" not in p.stdout
    assert p.stderr.splitlines() == ["sandboxer: error: run hooks.startContainer[0] (/hook.sh): exited with status 1"]


def test_lifecycle_errors(bundle: str, cid: str) -> None:
    make_bundle(bundle, ["sh", "-c", LOOP_UNTIL_TERM])
    assert create(bundle, cid).returncode == 0
    again = create(bundle, cid)
    assert again.returncode != 0 and "already exists" in again.stderr
    assert sandboxer("start", cid).returncode == 0
    twice = sandboxer("start", cid)
    assert twice.returncode != 0 and "it is running" in twice.stderr
    refused = sandboxer("delete", cid)
    assert refused.returncode != 0 and "--force" in refused.stderr
    assert state(cid)["status"] == "running"  # untouched
    assert sandboxer("delete", "--force", cid).returncode == 0
    assert not os.path.exists(os.path.join(oci_root(), cid))


def test_start_of_a_stopped_container_fails(bundle: str, cid: str) -> None:
    make_bundle(bundle, ["true"])
    assert create(bundle, cid).returncode == 0
    assert sandboxer("start", cid).returncode == 0
    wait_status(cid, "stopped")
    p = sandboxer("start", cid)
    assert p.returncode != 0 and "it is stopped" in p.stderr
    k = sandboxer("kill", cid, "KILL")
    assert k.returncode != 0 and "not running" in k.stderr


@pytest.mark.parametrize("verb", ["state", "start", "kill", "delete"])
def test_unknown_or_missing_id(verb: str, tmp_path: Path) -> None:
    p = sandboxer(verb, "no-such-container")
    assert p.returncode != 0
    # kill without the global options may also mean a detached sandbox ('sandboxer kill NAME')
    what = "no such sandbox or container: no-such-container" if verb == "kill" else \
        "container no-such-container does not exist"
    assert p.stderr.splitlines()[0] == f"sandboxer: error: {what}"
    p = sandboxer("--root", str(tmp_path), verb, "no-such-container")
    assert p.returncode != 0 and "container no-such-container does not exist" in p.stderr
    missing = sandboxer(verb)
    assert missing.returncode != 0 and "usage" in missing.stderr
    if verb == "delete":  # as runc: tools clean up after a failed create with delete --force
        assert sandboxer("delete", "--force", "no-such-container").returncode == 0


def test_create_refuses_bad_input_and_leaves_nothing(bundle: str, cid: str, tmp_path: Path) -> None:
    make_bundle(bundle, ["true"])
    not_a_socket = tmp_path / "plain-file"
    not_a_socket.write_text("")
    p = create(bundle, cid, "--console-socket", str(not_a_socket))
    assert p.returncode != 0 and "is not a unix socket" in p.stderr
    assert p.stderr.startswith("sandboxer: error: ") and "Traceback" not in p.stderr
    p = create(bundle, cid, "--pid-file", str(tmp_path / "no-such-dir" / "pid"))
    assert p.returncode != 0 and "no such directory" in p.stderr
    locked = tmp_path / "locked"
    locked.mkdir(mode=0o555)
    p = create(bundle, cid, "--pid-file", str(locked / "pid"))  # refused before any hook or process runs
    assert p.returncode != 0 and "not writable" in p.stderr and "Errno" not in p.stderr, p.stderr
    config = json.loads(Path(bundle, "config.json").read_text())
    config["process"]["cwd"] = "relative"
    write_config(bundle, config)
    p = create(bundle, cid)
    assert p.returncode != 0 and "process.cwd" in p.stderr
    Path(bundle, "config.json").write_text("{not json")
    p = create(bundle, cid)
    assert p.returncode != 0 and "invalid JSON" in p.stderr
    assert not os.path.exists(os.path.join(oci_root(), cid))
    assert sandboxer("state", cid).returncode != 0


def test_start_reports_an_exec_failure(bundle: str, cid: str) -> None:
    make_bundle(bundle, ["no-such-program"])
    assert create(bundle, cid).returncode == 0
    p = sandboxer("start", cid)
    assert p.returncode != 0
    assert "exec no-such-program: executable file not found" in p.stderr
    assert wait_status(cid, "stopped")


@pytest.mark.parametrize("signal_text", ["TERM", "SIGTERM", "term", "15"])
def test_kill_takes_names_with_or_without_sig_and_numbers(bundle: str, cid: str, signal_text: str) -> None:
    make_bundle(bundle, ["sh", "-c", LOOP_UNTIL_TERM])
    assert create(bundle, cid).returncode == 0
    assert sandboxer("start", cid).returncode == 0
    assert sandboxer("kill", cid, signal_text).returncode == 0
    wait_status(cid, "stopped")


def test_kill_refuses_an_unknown_signal_and_kills_a_created_container(bundle: str, cid: str) -> None:
    make_bundle(bundle, ["sh", "-c", LOOP_UNTIL_TERM])
    assert create(bundle, cid).returncode == 0
    for bogus in ("BOGUS", "65", "99", "RTMIN+99", "RTMIN+x"):  # one line each, never a raw errno
        bad = sandboxer("kill", cid, bogus)
        assert bad.returncode != 0 and "unknown signal" in bad.stderr and "Errno" not in bad.stderr, bad.stderr
    assert state(cid)["status"] == "created"
    assert sandboxer("kill", cid, "SIGRTMIN+1").returncode == 0  # runc's spelling; PID 1 has no handler: ignored
    assert state(cid)["status"] == "created"
    assert sandboxer("kill", "--all", cid, "9").returncode == 0
    wait_status(cid, "stopped")
    assert sandboxer("delete", cid).returncode == 0


def test_delete_force_during_a_create_waits_for_it_and_leaves_nothing(bundle: str, cid: str) -> None:
    """containerd's pattern after a create timed out: delete --force.  It must not report success
    while that create goes on to leave a container behind."""
    hook = Path(bundle, "slow-hook.sh")
    hook.write_text("#!/bin/sh\nsleep 1.5\n")
    hook.chmod(0o755)
    config = make_bundle(bundle, ["sh", "-c", LOOP_UNTIL_TERM])
    config["hooks"] = {"prestart": [{"path": str(hook)}]}
    write_config(bundle, config)
    with open(Path(bundle, "create.out"), "w") as out:
        creating = subprocess.Popen([*SANDBOXER, "create", "--bundle", bundle, cid], stdin=subprocess.DEVNULL,
                                    stdout=out, stderr=out)
        try:
            deadline = time.monotonic() + 10
            while not os.path.isdir(os.path.join(oci_root(), cid)):  # the create is at work
                assert time.monotonic() < deadline
                time.sleep(0.02)
            assert sandboxer("delete", "--force", cid).returncode == 0
        finally:
            creating.wait(timeout=60)
    assert sandboxer("state", cid).returncode != 0  # deleted once created, not left behind
    assert not os.path.exists(os.path.join(oci_root(), cid))


def test_delete_of_a_created_container_needs_no_force(bundle: str, cid: str) -> None:
    make_bundle(bundle, ["sh", "-c", "echo never"])
    assert create(bundle, cid).returncode == 0
    pid = state(cid)["pid"]
    assert sandboxer("delete", cid).returncode == 0  # as runc: only a running one needs --force
    assert not os.path.exists(f"/proc/{pid}")
    assert Path(bundle, f"{cid}.out").read_text() == ""


def test_a_killed_supervisor_means_stopped(bundle: str, cid: str) -> None:
    """Until start, a supervisor holds the container; killed, it takes the waiting process along."""
    make_bundle(bundle, ["sh", "-c", LOOP_UNTIL_TERM])
    assert create(bundle, cid).returncode == 0
    record = json.loads(Path(oci_root(), cid, "state.json").read_text())
    os.kill(record["supervisor_pid"], 9)
    wait_status(cid, "stopped")
    assert sandboxer("start", cid).returncode != 0
    assert sandboxer("delete", cid).returncode == 0


@pytest.mark.parametrize("code", [0, 7])
def test_the_callers_reaper_gets_the_exit_status(bundle: str, cid: str, code: int) -> None:
    """As with runc, the container process is left to the caller's child subreaper at exec (conmon and
    containerd's shims wait for it themselves to learn its exit status)."""
    make_bundle(bundle, ["sh", "-c", f"echo reaped; exit {code}"])
    pid_file = os.path.join(bundle, "pid")
    reaper = f"""
import ctypes, os, signal, subprocess, sys
assert ctypes.CDLL(None).prctl(36, 1, 0, 0, 0) == 0  # PR_SET_CHILD_SUBREAPER
signal.alarm(30)
run = {list(SANDBOXER)!r}
with open({bundle!r} + "/out", "w") as out:
    assert subprocess.run([*run, "create", "--bundle", {bundle!r}, "--pid-file", {pid_file!r}, {cid!r}],
                          stdout=out, stdin=subprocess.DEVNULL).returncode == 0
pid = int(open({pid_file!r}).read())
assert subprocess.run([*run, "start", {cid!r}]).returncode == 0
while True:  # the supervisor and the set-up process come to us too
    child, status = os.waitpid(-1, 0)
    if child == pid:
        print(os.waitstatus_to_exitcode(status))
        break
"""
    p = subprocess.run([sys.executable, "-c", reaper], capture_output=True, text=True, timeout=60)
    assert p.returncode == 0, p.stderr
    assert p.stdout.strip() == str(code)
    assert Path(bundle, "out").read_text() == "reaped\n"
    assert state(cid)["status"] == "stopped"


def test_global_root_log_and_log_format(bundle: str, tmp_path: Path, cid: str) -> None:
    root = str(tmp_path / "root")
    log = str(tmp_path / "runtime.log")
    g = ("--root", root, "--log", log, "--log-format", "json")
    make_bundle(bundle, ["sh", "-c", "echo under-root"])
    p = create(bundle, cid, globals_=g)
    assert p.returncode == 0, p.stderr
    assert os.path.isfile(os.path.join(root, "sandboxer", "oci", cid, "state.json"))
    assert sandboxer("state", cid).returncode != 0  # not under the default root
    assert state(cid, *g)["status"] == "created"
    assert sandboxer(*g, "start", cid).returncode == 0
    wait_status(cid, "stopped", *g)
    assert sandboxer(*g, "delete", cid).returncode == 0
    assert os.listdir(os.path.join(root, "sandboxer", "oci")) == []
    assert Path(bundle, f"{cid}.out").read_text() == "under-root\n"
    assert sandboxer(*g, "state", cid).returncode != 0
    entry = json.loads(Path(log).read_text().splitlines()[-1])
    assert entry["level"] == "error" and f"container {cid} does not exist" in entry["msg"]
    nowhere = sandboxer("--root", root, "--log", str(tmp_path / "no-dir" / "log"), "state", cid)
    assert nowhere.returncode != 0 and "cannot write --log" in nowhere.stderr  # said, not swallowed


def test_global_flags_accepted_and_refused(bundle: str, cid: str) -> None:
    assert sandboxer("--systemd-cgroup", "--rootless", "true", "features").returncode == 0
    p = sandboxer("--criu", "/usr/sbin/criu", "features")
    assert p.returncode != 0 and "--criu is refused" in p.stderr
    p = sandboxer("--no-such-global", "features")
    assert p.returncode != 0 and "unknown global option" in p.stderr
    make_bundle(bundle, ["true"])
    p = create(bundle, cid, "--no-pivot")
    assert p.returncode != 0 and "--no-pivot is refused" in p.stderr


def test_features() -> None:
    p = sandboxer("features")
    assert p.returncode == 0
    f = json.loads(p.stdout)
    assert (f["ociVersionMin"], f["ociVersionMax"]) == ("1.0.0", "1.3.0")
    assert "poststart" in f["hooks"] and "rbind" in f["mountOptions"]
    assert "user" in f["linux"]["namespaces"] and "CAP_KILL" in f["linux"]["capabilities"]
    assert f["linux"]["seccomp"]["enabled"] is True


@pytest.mark.parametrize("version", ["1.0.0", "1.1.0", "1.2.1", "1.3.0"])
def test_every_oci_version_from_1_0_to_1_3(bundle: str, cid: str, version: str) -> None:
    config = make_bundle(bundle, ["true"])
    config["ociVersion"] = version
    write_config(bundle, config)
    p = create(bundle, cid)
    assert p.returncode == 0, p.stderr
    assert state(cid)["ociVersion"] == version


@pytest.mark.skipif(os.getuid() == 0, reason="proves rootless behaviour; run as a normal user")
def test_a_config_without_a_user_namespace_runs_rootless(bundle: str, cid: str) -> None:
    config = make_bundle(bundle, ["sh", "-c", "id -u; cat /proc/self/uid_map"])
    config["linux"]["namespaces"] = [ns for ns in config["linux"]["namespaces"] if ns["type"] != "user"]
    config["linux"].pop("uidMappings", None)
    config["linux"].pop("gidMappings", None)
    write_config(bundle, config)
    p = create(bundle, cid)
    assert p.returncode == 0, p.stderr
    assert "no user namespace" in p.stderr and "maps you to root" in p.stderr
    assert sandboxer("start", cid).returncode == 0
    wait_status(cid, "stopped")
    out = Path(bundle, f"{cid}.out").read_text().split()
    assert out[0] == "0" and out[1:3] == ["0", str(os.getuid())]


def test_console_socket_receives_the_terminal(bundle: str, tmp_path: Path, cid: str) -> None:
    config = make_bundle(bundle, ["sh", "-c", "tty; echo on-the-terminal"])
    config["process"]["terminal"] = True
    write_config(bundle, config)
    path = str(tmp_path / "console.sock")
    received: list[int] = []
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as server:
        server.bind(path)
        server.listen(1)

        def receive() -> None:
            conn, _ = server.accept()
            with conn:
                _, fds, _, _ = socket.recv_fds(conn, 1024, 1)
                received.extend(fds)

        thread = threading.Thread(target=receive)
        thread.start()
        no_socket = create(bundle, cid)
        assert no_socket.returncode != 0 and "--console-socket" in no_socket.stderr
        p = create(bundle, cid, "--console-socket", path)
        thread.join(10)
    assert p.returncode == 0, p.stderr
    assert len(received) == 1
    master = received[0]
    assert sandboxer("start", cid).returncode == 0
    data = b""
    while True:
        try:
            chunk = os.read(master, 1024)
        except OSError:  # EIO: the terminal's last user closed it
            break
        if not chunk:
            break
        data += chunk
    os.close(master)
    assert b"/dev/pts/" in data or b"/dev/console" in data
    assert b"on-the-terminal" in data


# --- config features honoured (runtime-spec config.md / config-linux.md) ----------------------------

def _run_to_end(bundle: str, cid: str) -> subprocess.CompletedProcess[str]:
    """create + start + wait: the container's stdout (and create's stderr) as a CompletedProcess."""
    p = create(bundle, cid)
    if p.returncode != 0:
        return p
    start = sandboxer("start", cid)
    assert start.returncode == 0, start.stderr
    wait_status(cid, "stopped")
    return subprocess.CompletedProcess([], 0, Path(bundle, f"{cid}.out").read_text(),
                                       Path(bundle, f"{cid}.err").read_text())


def _mountinfo_root(out: str) -> str:
    return next(line for line in out.splitlines() if line.split()[4] == "/")


@pytest.mark.parametrize("propagation, optional", [("shared", "shared:"), ("rshared", "shared:"),
                                                   ("unbindable", "unbindable"), ("private", ""),
                                                   ("slave", "")])
def test_rootfs_propagation(bundle: str, cid: str, propagation: str, optional: str) -> None:
    config = make_bundle(bundle, ["cat", "/proc/self/mountinfo"])
    config["linux"]["rootfsPropagation"] = propagation
    write_config(bundle, config)
    p = _run_to_end(bundle, cid)
    assert p.returncode == 0, p.stderr
    fields = _mountinfo_root(p.stdout).split(" - ")[0].split()[6:]  # the optional fields of "/"
    if optional:
        assert any(f.startswith(optional) for f in fields), fields
    else:
        assert not any(f.startswith(("shared:", "unbindable")) for f in fields), fields


def test_devices_sysctl_and_process_fields(bundle: str, cid: str) -> None:
    fuse = os.stat("/dev/fuse")
    config = make_bundle(bundle, ["sh", "-c", "ls -ln /dev/fuse; test -p /dev/myfifo && echo fifo; "
                                              "cat /proc/sys/net/ipv4/ip_forward /proc/self/oom_score_adj; "
                                              "umask; id -u; id -G; ulimit -n"])
    config["linux"]["devices"] = [
        {"type": "c", "path": "/dev/fuse", "major": os.major(fuse.st_rdev), "minor": os.minor(fuse.st_rdev)},
        {"type": "p", "path": "/dev/myfifo"}]
    config["linux"]["sysctl"] = {"net.ipv4.ip_forward": "1"}
    config["process"]["oomScoreAdj"] = 321
    config["process"]["user"] = {"uid": 0, "gid": 0, "umask": 0o27, "additionalGids": [0]}
    config["process"]["rlimits"] = [{"type": "RLIMIT_NOFILE", "hard": 200, "soft": 100}]
    write_config(bundle, config)
    p = _run_to_end(bundle, cid)
    assert p.returncode == 0, p.stderr
    lines = p.stdout.splitlines()
    assert lines[0].startswith("c") and f"{os.major(fuse.st_rdev)}, {os.minor(fuse.st_rdev)}" in lines[0]
    assert lines[1:] == ["fifo", "1", "321", "0027", "0", "0", "100"]


def test_time_namespace_offsets_and_personality(bundle: str, cid: str) -> None:
    """A ``time`` namespace is created (its clocks shifted by ``linux.timeOffsets``), and
    ``linux.personality`` LINUX32 makes ``uname -m`` say i686: neither silently ignored."""
    config = make_bundle(bundle, ["sh", "-c", "readlink /proc/self/ns/time; cat /proc/self/timens_offsets; "
                                              "cut -d. -f1 /proc/uptime; uname -m"])
    config["linux"]["namespaces"].append({"type": "time"})
    config["linux"]["timeOffsets"] = {"boottime": {"secs": 86400 * 365}, "monotonic": {"secs": 7, "nanosecs": 5}}
    config["linux"]["personality"] = {"domain": "LINUX32"}
    write_config(bundle, config)
    p = _run_to_end(bundle, cid)
    assert p.returncode == 0, p.stderr
    ns, *offsets, uptime, machine = p.stdout.split("\n")[:-1]
    assert ns != os.readlink("/proc/self/ns/time")
    assert sorted(line.split() for line in offsets) == [["boottime", str(86400 * 365), "0"], ["monotonic", "7", "5"]]
    assert int(uptime) >= 86400 * 365 and machine in ("i686", "armv8l")
    assert sandboxer("delete", "--force", cid).returncode == 0
    for broken, where in (({"domain": "BOGUS"}, "linux.personality.domain"),):
        config["linux"]["personality"] = broken
        write_config(bundle, config)
        p = create(bundle, cid)
        assert p.returncode != 0 and where in p.stderr, p.stderr
    config["linux"].pop("personality")
    config["linux"]["timeOffsets"] = {"realtime": {"secs": 1}}
    write_config(bundle, config)
    p = create(bundle, cid)
    assert p.returncode != 0 and "linux.timeOffsets.realtime" in p.stderr, p.stderr


def test_refused_devices_and_sysctls_leave_nothing(bundle: str, cid: str) -> None:
    config = make_bundle(bundle, ["true"])
    config["linux"]["sysctl"] = {"kernel.panic": "1"}
    write_config(bundle, config)
    p = create(bundle, cid)
    assert p.returncode != 0 and "kernel.panic" in p.stderr and "not namespaced" in p.stderr
    config["linux"]["sysctl"] = {}
    config["linux"]["devices"] = [{"type": "c", "path": "/dev/fuse", "major": 1, "minor": 1}]
    write_config(bundle, config)
    p = create(bundle, cid)
    assert p.returncode != 0 and "linux.devices[0]" in p.stderr
    config["linux"]["devices"] = []
    config["process"]["user"] = {"uid": 0, "gid": 0, "additionalGids": [4242]}  # unmapped: refused, not dropped
    write_config(bundle, config)
    p = create(bundle, cid)
    assert p.returncode != 0 and "process.user.additionalGids[0]" in p.stderr, p.stderr
    assert not os.path.exists(os.path.join(oci_root(), cid))


@pytest.mark.skipif(os.getuid() == 0, reason="the subordinate map of a user; root maps straight through")
def test_uid_gid_mappings_and_a_non_root_user(bundle: str, cid: str) -> None:
    from sandboxer.runtime.userns import default_idmap

    idmap = default_idmap()
    if idmap.single:
        pytest.skip("this user has no /etc/subuid range")
    sub_uid, sub_gid = idmap.uids[1].host_id, idmap.gids[1].host_id
    config = make_bundle(bundle, ["sh", "-c", "id -u; id -g; id -G; cat /proc/self/uid_map"])
    config["linux"]["uidMappings"] = [{"containerID": 0, "hostID": os.getuid(), "size": 1},
                                      {"containerID": 1000, "hostID": sub_uid, "size": 10}]
    config["linux"]["gidMappings"] = [{"containerID": 0, "hostID": os.getgid(), "size": 1},
                                      {"containerID": 1000, "hostID": sub_gid, "size": 10}]
    config["process"]["user"] = {"uid": 1001, "gid": 1002, "additionalGids": [1003]}
    write_config(bundle, config)
    p = _run_to_end(bundle, cid)
    assert p.returncode == 0, p.stderr
    lines = p.stdout.splitlines()
    assert lines[:3] == ["1001", "1002", "1002 1003"]
    assert [line.split() for line in lines[3:]] == [["0", str(os.getuid()), "1"],
                                                   ["1000", str(sub_uid), "10"]]


@pytest.mark.skipif(os.getuid() == 0, reason="rootless: the other container's user namespace is joined too")
def test_joining_another_containers_namespaces_by_path(bundle: str, tmp_path: Path, cid: str) -> None:
    make_bundle(bundle, ["sh", "-c", LOOP_UNTIL_TERM])
    assert create(bundle, cid).returncode == 0
    assert sandboxer("start", cid).returncode == 0
    pid = state(cid)["pid"]
    other = str(tmp_path / "joiner")
    os.mkdir(other)
    config = make_bundle(other, ["sh", "-c", "for ns in net user uts; do readlink /proc/self/ns/$ns; done"])
    namespaces = [ns for ns in config["linux"]["namespaces"] if ns["type"] not in ("user", "network")]
    config["linux"]["namespaces"] = [*namespaces, {"type": "user", "path": f"/proc/{pid}/ns/user"},
                                     {"type": "network", "path": f"/proc/{pid}/ns/net"}]
    config["linux"].pop("uidMappings", None)
    config["linux"].pop("gidMappings", None)
    write_config(other, config)
    joiner = f"{cid}-j"
    try:
        p = _run_to_end(other, joiner)
    finally:
        sandboxer("delete", "--force", joiner)
    assert p.returncode == 0, p.stderr
    net, user, uts = p.stdout.split()
    assert net == os.readlink(f"/proc/{pid}/ns/net") and user == os.readlink(f"/proc/{pid}/ns/user")
    assert uts != os.readlink(f"/proc/{pid}/ns/uts")  # created, not joined
    config["linux"]["namespaces"].append({"type": "mount", "path": f"/proc/{pid}/ns/mnt"})
    config["linux"]["namespaces"] = [ns for ns in config["linux"]["namespaces"]
                                     if ns != {"type": "mount"}]
    write_config(other, config)
    refused = create(other, joiner)
    assert refused.returncode != 0 and "joining a mount namespace is not supported" in refused.stderr


def _podman_like_bundle(bundle: str, args: list[str]) -> None:
    """What rootless podman gives its runtime: no user namespace in config.json, its network namespace joined
    by path, a sysctl there, a read-only cgroup mount (to be run as root of another user namespace)."""
    config = make_bundle(bundle, args)
    linux = config["linux"]
    linux["namespaces"] = [ns for ns in linux["namespaces"] if ns["type"] not in ("user", "network")]
    linux["namespaces"].append({"type": "network", "path": "/proc/self/ns/net"})  # opened by our set-up process
    linux.pop("uidMappings", None)
    linux.pop("gidMappings", None)
    linux["sysctl"] = {"net.ipv4.ping_group_range": "0 0"}
    config["mounts"].append({"destination": "/sys/fs/cgroup", "type": "cgroup", "source": "cgroup",
                             "options": ["ro", "nosuid", "noexec", "nodev"]})
    write_config(bundle, config)


@pytest.mark.skipif(os.getuid() == 0, reason="rootless podman's case: root in a user namespace of a user")
def test_as_root_of_another_user_namespace_joining_its_network(bundle: str, cid: str) -> None:
    """What rootless podman asks of its runtime: run as root of podman's user namespace, no user namespace
    in config.json, join podman's network namespace by path, set a sysctl there, a read-only cgroup mount."""
    _podman_like_bundle(bundle, ["sh", "-c", "cat /proc/sys/net/ipv4/ping_group_range; id -u; "
                                             "readlink /proc/self/ns/net; ls -d /sys/fs/cgroup"])
    _as_podman(bundle, cid, f"while $RUNTIME state {cid} | grep -q running; do sleep 0.02; done; "
                            f"$RUNTIME delete {cid}")
    lines = Path(bundle, "out").read_text().split("\n")
    assert lines[0].split() == ["0", "0"]
    assert lines[1] == "0"
    assert lines[2] == Path(bundle, "netns").read_text().strip()
    assert lines[3] == "/sys/fs/cgroup"


@pytest.mark.skipif(os.getuid() == 0, reason="rootless podman's case: root in a user namespace of a user")
def test_exec_as_root_of_another_user_namespace_joins_its_network(bundle: str, cid: str) -> None:
    """`podman exec` with sandboxer as the runtime: the container's network namespace (podman's, joined by
    path) is owned by podman's user namespace — joined before the container's own, which would take the
    rights to it away."""
    _podman_like_bundle(bundle, ["sh", "-c", LOOP_UNTIL_TERM])
    _as_podman(bundle, cid, f"$RUNTIME exec {cid} sh -c 'readlink /proc/self/ns/net; exit 4' > {bundle}/exec; "
                            f"echo $? >> {bundle}/exec; $RUNTIME delete --force {cid}")
    assert Path(bundle, "exec").read_text().split() == [Path(bundle, "netns").read_text().strip(), "4"]


def _as_podman(bundle: str, cid: str, then: str) -> None:
    """As root of a user namespace of our own with a network namespace (podman's, here ours): create and start
    the bundle's container, then run the shell commands ``then`` ($RUNTIME: sandboxer), which must succeed."""
    # our own state root: the fallback /tmp/sandboxer-0 may belong to the real root of this host
    script = (f"export SANDBOXER_STATE_DIR={bundle}/state RUNTIME='{' '.join(SANDBOXER)}'; "
              f"readlink /proc/self/ns/net > {bundle}/netns; "
              f"$RUNTIME create --bundle {bundle} {cid} > {bundle}/out 2> {bundle}/err < /dev/null || exit 1; "
              f"$RUNTIME start {cid} || exit 2; {then} || exit 3")
    p = subprocess.run(["unshare", "--map-root-user", "--net", "sh", "-c", script], capture_output=True, text=True,
                       timeout=60)
    assert p.returncode == 0, p.stderr + Path(bundle, "err").read_text()


def test_parallel_starts_of_short_lived_processes(bundle: str, cid: str) -> None:
    """start must not miss a process that execs and exits at once (it looked for it after opening the gate)."""
    from concurrent.futures import ThreadPoolExecutor

    make_bundle(bundle, ["true"])
    ids = [f"{cid}-{i}" for i in range(8)]
    try:
        for one in ids:
            assert create(bundle, one).returncode == 0
        with ThreadPoolExecutor(len(ids)) as pool:
            started = list(pool.map(lambda one: sandboxer("start", one), ids))
        assert [p.stderr for p in started if p.returncode != 0] == []
    finally:
        for one in ids:
            sandboxer("delete", "--force", one)
    assert not any(os.path.exists(os.path.join(oci_root(), one)) for one in ids)


def test_exec_runs_a_process_in_the_running_container(bundle: str, cid: str) -> None:
    """runc's exec: by arguments, by a process.json (what conmon passes, so `podman exec` works), and
    detached with a pid file; as the container's process runs (namespaces, seccomp, no_new_privs)."""
    make_bundle(bundle, ["sh", "-c", LOOP_UNTIL_TERM])
    assert create(bundle, cid).returncode == 0
    assert sandboxer("start", cid).returncode == 0
    pid = state(cid)["pid"]
    p = sandboxer("exec", cid, "sh", "-c", "echo $$; readlink /proc/self/ns/pid; grep -E '^(Seccomp|NoNewPrivs):' "
                                           "/proc/self/status | tr -d '\\t\\n'; exit 3")
    assert p.returncode == 3, p.stderr
    ns_pid, ns, security = p.stdout.split()
    assert int(ns_pid) > 1 and ns == os.readlink(f"/proc/{pid}/ns/pid")
    theirs = "".join(line.replace("\t", "").strip() for line in open(f"/proc/{pid}/status")
                     if line.startswith(("Seccomp:", "NoNewPrivs:")))
    assert sorted(security.replace("Seccomp", " Seccomp").split()) == sorted(theirs.replace("Seccomp", " Seccomp")
                                                                             .split())  # the container's
    process = Path(bundle, "process.json")
    process.write_text(json.dumps({"args": ["sh", "-c", "echo $GREETING from $(pwd) as $(id -u)"],
                                   "env": ["PATH=/bin", "GREETING=hello"], "cwd": "/tmp",
                                   "user": {"uid": 0, "gid": 0}, "terminal": False}))
    p = sandboxer("exec", "--process", str(process), cid)
    assert (p.returncode, p.stdout) == (0, "hello from /tmp as 0\n"), p.stderr
    pid_file = Path(bundle, "exec.pid")
    process.write_text(json.dumps({"args": ["/bin/busybox", "sleep", "30"], "env": ["PATH=/bin"], "cwd": "/"}))
    started = time.monotonic()
    with open(Path(bundle, "exec.out"), "w") as out:  # the process keeps exec's stdio, as runc's does
        rc = subprocess.run([*SANDBOXER, "exec", "--detach", "--pid-file", str(pid_file), "--process", str(process),
                             cid], stdin=subprocess.DEVNULL, stdout=out, stderr=out, timeout=20).returncode
    assert rc == 0 and time.monotonic() - started < 10, Path(bundle, "exec.out").read_text()
    child = int(pid_file.read_text())
    assert open(f"/proc/{child}/cmdline").read() == "/bin/busybox\x00sleep\x0030\x00"
    assert os.readlink(f"/proc/{child}/ns/pid") == os.readlink(f"/proc/{pid}/ns/pid")
    nowhere = sandboxer("exec", "--detach", "--pid-file", str(Path(bundle, "no-dir", "x.pid")), cid, "sleep", "31")
    assert nowhere.returncode != 0 and "no such directory" in nowhere.stderr  # and nothing was started:
    assert "sleep 31" not in sandboxer("exec", cid, "/bin/busybox", "ps", check=True).stdout
    assert sandboxer("kill", cid, "KILL").returncode == 0
    wait_status(cid, "stopped")  # the detached process dies with the container's PID namespace
    deadline = time.monotonic() + 10
    from sandboxer.procfs import same_process

    while same_process(child, None):
        assert time.monotonic() < deadline
        time.sleep(0.05)
    stopped = sandboxer("exec", cid, "true")
    assert stopped.returncode != 0 and "it is stopped" in stopped.stderr and stopped.stderr.count("error:") == 1


@pytest.mark.parametrize("args, message", [
    (("exec", "--process", "/nonexistent.json", "CID"), "cannot read --process"),
    (("exec", "--process", "BAD", "CID"), "is not a process object"),
    (("exec", "--detach", "nosuch-container", "true"), "container nosuch-container does not exist"),
    (("exec", "CID"), "exec needs a command"),
])
def test_exec_bad_input_is_one_line(bundle: str, cid: str, args: tuple[str, ...], message: str) -> None:
    make_bundle(bundle, ["sh", "-c", LOOP_UNTIL_TERM])
    assert create(bundle, cid).returncode == 0
    assert sandboxer("start", cid).returncode == 0
    bad = Path(bundle, "bad.json")
    bad.write_text('["not", "an", "object"]')
    p = sandboxer(*(cid if a == "CID" else str(bad) if a == "BAD" else a for a in args))
    assert p.returncode != 0 and message in p.stderr and p.stderr.count("error:") == 1, p.stderr
    assert state(cid)["status"] == "running"
