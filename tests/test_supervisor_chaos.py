"""Detached sandboxes under abuse, as a user: SIGKILL at random moments, many at once, exec while stopping.

Whatever dies when, afterwards no process, state file, name, mount or
network namespace of these sandboxes is left, and ``ps -a`` tells the truth
about each of them.  Seeded (``SANDBOXER_CHAOS_SEED``), bounded in count
and in time.
"""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import threading
import time

from conftest import SANDBOXER, sandboxer

CYCLES = int(os.environ.get("SANDBOXER_CHAOS_CYCLES", "200"))
BUDGET_S = float(os.environ.get("SANDBOXER_CHAOS_BUDGET", "120"))
WORKERS = 4
SEED = int(os.environ.get("SANDBOXER_CHAOS_SEED", "20261128"))
VICTIMS = ("none", "run-cli", "supervisor", "workload", "exec-cli", "stop-cli", "rm-cli", "holder")
#: every third cycle's sandbox is on a user-defined network (the holder is a victim too)
NETWORK_EVERY = 3


def _marker_processes(marker: str, workload_only: bool = False) -> list[str]:
    """Our processes whose command line has ``marker``: supervisors and set-up processes keep the
    ``sandboxer run`` command line they were forked with; ``workload_only``: just the ``sleep``."""
    out = subprocess.run(["pgrep", "-u", str(os.getuid()), "-af", marker], capture_output=True, text=True)
    lines = [line for line in out.stdout.splitlines() if "pgrep" not in line]
    return [line for line in lines if line.split(" ", 1)[1].startswith("sleep ")] if workload_only else lines


def _check_clean_exit(p: subprocess.Popen[str], what: str) -> None:
    """A CLI that ran to its end: success, or one error line with its hint — never a traceback."""
    _, err = p.communicate(timeout=30)
    if p.returncode < 0:
        return  # we killed it
    assert "Traceback" not in err and "internal error" not in err, f"{what}: {err}"
    if p.returncode not in (0, 137):
        lines = [line for line in err.splitlines() if line.strip()]
        assert 1 <= len(lines) <= 2 and lines[0].startswith("sandboxer: "), f"{what}: {err!r}"


def _cli(*args: str) -> subprocess.Popen[str]:
    return subprocess.Popen([*SANDBOXER, *args], stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)


def _maybe_kill(p: subprocess.Popen[str], rng: random.Random, victim: str, me: str, what: str) -> None:
    if victim == me:
        time.sleep(rng.uniform(0, 0.2))
        p.kill()
    _check_clean_exit(p, what)


def _cycle(i: int, tag: str, network: str) -> None:
    rng = random.Random(SEED * 1000 + i)
    victim = rng.choice(VICTIMS)
    name, marker = f"{tag}-{i}", f"4444.{os.getpid()}{i:04d}"
    on_network = ["--network", network] if i % NETWORK_EVERY == 0 else []
    _maybe_kill(_cli("run", "-d", "--name", name, *on_network, "--", "sleep", marker), rng, victim, "run-cli",
                f"run {victim}")
    if victim == "holder":
        holder = _holder_pid()
        if holder:
            time.sleep(rng.uniform(0, 0.1))
            try:
                os.kill(holder, signal.SIGKILL)
            except ProcessLookupError:
                pass
    if victim in ("supervisor", "workload"):
        p = subprocess.run([*SANDBOXER, "inspect", "-f", "{{.State.SupervisorPid}} {{.State.Pid}}", name],
                           capture_output=True, text=True)
        fields = p.stdout.split()
        if p.returncode == 0 and len(fields) == 2 and fields[1].isdigit() and int(fields[1]):
            time.sleep(rng.uniform(0, 0.1))
            try:
                os.kill(int(fields[0 if victim == "supervisor" else 1]), signal.SIGKILL)
            except ProcessLookupError:
                pass
    _maybe_kill(_cli("exec", name, "sh", "-c", "sleep 0.05"), rng, victim, "exec-cli", f"exec {victim}")
    _maybe_kill(_cli("stop", "-t", "0", name), rng, victim, "stop-cli", f"stop {victim}")
    _maybe_kill(_cli("rm", "-f", name), rng, victim, "rm-cli", f"rm {victim}")


def _holder_pid() -> int | None:
    """The user-defined networks' holder of this state root, if it runs."""
    from sandboxer.network import rootlessns

    holder = rootlessns.current()
    return holder.pid if holder else None


def _assert_network_clean(network: str) -> None:
    """No lease, DNAT rule or slirp4netns forward of a sandbox left on ``network``; the holder (if one
    runs) has only its bridge, lo and tap0 — once the kernel has torn the dead sandboxes' namespaces down."""
    from sandboxer.network import rootlessns, slirp
    from sandboxer.programs import require

    info = json.loads(sandboxer("network", "inspect", network, check=True).stdout)[0]
    assert info["Containers"] == {}, info
    leases = os.path.join(rootlessns.directory(), "leases", info["Id"])  # by id: names repeat across data dirs
    assert not os.path.isdir(leases) or os.listdir(leases) == []
    pid = _holder_pid()
    if pid is None:
        return
    enter = ["nsenter", "--preserve-credentials", "-U", "-n", "-t", str(pid)]
    deadline = time.monotonic() + 10
    while True:
        out = subprocess.run([*enter, "ip", "-o", "link"], capture_output=True, text=True).stdout
        links = sorted(line.split(":")[1].strip().split("@")[0] for line in out.splitlines())
        if all(link in ("lo", "tap0") or (link.startswith("sbx") and not link.startswith("sbxv")) for link in links):
            break
        assert time.monotonic() < deadline, f"veths outlived their sandboxes: {links}"
        time.sleep(0.1)
    rules = subprocess.run([*enter, require("nft"), "list", "chain", "ip", "sandboxer", "prerouting"],
                           capture_output=True, text=True).stdout
    assert "dnat" not in rules, rules
    assert slirp.list_hostfwd(os.path.join(rootlessns.directory(), "slirp.sock")) == []


def _net_and_cgroup_snapshot() -> tuple[set[str], set[str]]:
    """The host network namespace's interfaces (no veth may appear) and our cgroup's children."""
    cgroup = ""
    with open("/proc/self/cgroup") as f:
        for line in f:
            if line.startswith("0::"):
                cgroup = "/sys/fs/cgroup" + line.strip()[3:]
    children = set()
    if os.path.isdir(cgroup):
        children = {e for e in os.listdir(cgroup) if os.path.isdir(os.path.join(cgroup, e))}
    return set(os.listdir("/sys/class/net")), children


def _ours(tag: str) -> list[dict[str, object]]:
    listing = json.loads(sandboxer("ps", "-a", "--format", "json", check=True).stdout)
    return [r for r in listing if str(r.get("name") or "").startswith(tag + "-")]


def _assert_ps_is_truthful(tag: str) -> None:
    """Each record says running exactly when its workload runs (allowing a moment for a dying one)."""
    deadline = time.monotonic() + 10
    while True:
        wrong = []
        for record in _ours(tag):
            marker = f"4444.{os.getpid()}{int(str(record['name']).rsplit('-', 1)[1]):04d}"
            alive = bool(_marker_processes(marker, workload_only=True))
            if (record["status"] == "running") != alive:
                wrong.append((record["name"], record["status"], alive))
        if not wrong:
            return
        assert time.monotonic() < deadline, f"ps -a disagrees with the processes: {wrong}"
        time.sleep(0.1)


def _assert_nothing_left(tag: str, before: tuple[set[str], set[str]], fuse_before: set[str]) -> None:
    from sandboxer.state import state_root

    root = state_root()
    deadline = time.monotonic() + 10
    while _marker_processes(f"4444.{os.getpid()}") or _fuse_of(root) - fuse_before:
        assert time.monotonic() < deadline, (_marker_processes(f"4444.{os.getpid()}"), _fuse_of(root) - fuse_before)
        time.sleep(0.1)
    assert not [e for e in os.listdir(root) if len(e) == 64 or e.startswith(".building-")], os.listdir(root)
    names = os.path.join(root, "names")
    assert not [n for n in (os.listdir(names) if os.path.isdir(names) else []) if n.startswith(tag + "-")]
    records = os.path.join(root, "records")
    assert not _ours(tag)
    leftovers = [e for e in os.listdir(records) if not e.endswith(".json") and e.split(".")[0] not in
                 {r["id"] for r in json.loads(sandboxer("ps", "-a", "--format", "json", check=True).stdout)}]
    assert not leftovers, leftovers
    assert _net_and_cgroup_snapshot() == before  # no veth, no cgroup appeared


def _fuse_of(root: str | None = None) -> set[str]:
    """fuse-overlayfs daemons (the only mount-holding helpers a sandbox runs) serving sandboxes of this
    state root (compared with a snapshot: sandboxes of other tests may be running)."""
    if root is None:
        from sandboxer.state import state_root

        root = state_root()
    return {line for line in _marker_processes("fuse-overlayfs") if root in line}


def test_sigkill_anything_at_random_moments_leaves_nothing_behind() -> None:
    tag = f"chaos{os.getpid()}"
    network = f"{tag}-net"
    sandboxer("network", "create", network, check=True)
    try:
        before, fuse_before = _net_and_cgroup_snapshot(), _fuse_of()
        deadline = time.monotonic() + BUDGET_S
        counter = iter(range(CYCLES))
        lock = threading.Lock()
        done: list[int] = []
        failures: list[BaseException] = []

        def worker() -> None:
            while time.monotonic() < deadline and not failures:
                with lock:
                    i = next(counter, None)
                if i is None:
                    return
                try:
                    _cycle(i, tag, network)
                    done.append(i)
                except BaseException as e:  # the first failure stops everyone; reported below
                    failures.append(e)

        threads = [threading.Thread(target=worker) for _ in range(WORKERS)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        if failures:
            raise failures[0]
        _assert_ps_is_truthful(tag)
        leftover = [str(r["id"]) for r in _ours(tag)]  # an rm whose CLI was killed leaves an exited record
        if leftover:
            sandboxer("rm", "-f", *leftover, check=True)
        # a run CLI killed while creating the state dir leaves it to the next sandboxer start to collect
        # (every run does); the last cycles' have no next one
        sandboxer("gc", check=True)
        _assert_nothing_left(tag, before, fuse_before)
        _assert_network_clean(network)
        sandboxer("network", "rm", network, check=True)
        assert len(done) >= min(CYCLES, 50), f"only {len(done)} cycles in {BUDGET_S} s"
        kinds = {random.Random(SEED * 1000 + i).choice(VICTIMS) for i in done}
        assert kinds == set(VICTIMS)
        print(f"{len(done)} cycles in {time.monotonic() - deadline + BUDGET_S:.1f} s, seed {SEED}")
    finally:  # a failed run must not leave its network behind (nor the holder it keeps alive)
        if leftover := [str(r["id"]) for r in _ours(tag)]:
            sandboxer("rm", "-f", *leftover)
        sandboxer("network", "rm", network)  # gone already when the run passed: that call just fails


def test_fifty_concurrent_detached_sandboxes_run_and_go() -> None:
    tag = f"fifty{os.getpid()}"
    before, fuse_before = _net_and_cgroup_snapshot(), _fuse_of()
    names = [f"{tag}-{i}" for i in range(50)]
    procs = [_cli("run", "-d", "--name", n, "--", "sleep", f"4444.{os.getpid()}{i:04d}") for i, n in enumerate(names)]
    try:
        for p in procs:
            out, err = p.communicate(timeout=120)
            assert p.returncode == 0, err
            assert len(out.strip()) == 64
        running = {str(r["name"]) for r in _ours(tag) if r["status"] == "running"}
        assert running == set(names)
        assert len(_marker_processes(f"4444.{os.getpid()}", workload_only=True)) == 50
    finally:
        sandboxer("rm", "-f", *names, check=True, timeout=120)
    _assert_nothing_left(tag, before, fuse_before)


def test_exec_while_the_sandbox_is_being_stopped_fails_cleanly() -> None:
    tag = f"execstop{os.getpid()}"
    before, fuse_before = _net_and_cgroup_snapshot(), _fuse_of()
    rng = random.Random(SEED)
    outcomes = set()
    for i in range(12):
        name = f"{tag}-{i}"
        sandboxer("run", "-d", "--name", name, "--", "sleep", f"4444.{os.getpid()}{i:04d}", check=True)
        execs = [_cli("exec", name, "sh", "-c", "sleep 2") for _ in range(3)]
        time.sleep(rng.uniform(0, 0.15))
        stop = _cli("stop", "-t", "0", name)
        late = _cli("exec", name, "true")
        for p in [*execs, late, stop]:
            _, err = p.communicate(timeout=30)
            assert "Traceback" not in err and "internal error" not in err, err
            if p is stop:
                assert p.returncode == 0, err
                continue
            if p.returncode == 137:  # it ran, and died with the sandbox: says so in one line
                assert err.strip() == f"sandboxer: the command was killed: sandbox {name} stopped"
            elif p.returncode != 0:
                assert p.returncode == 125 and len(err.strip().splitlines()) <= 2, (p.returncode, err)
                assert err.startswith("sandboxer: error: ")
            outcomes.add(p.returncode)
        assert sandboxer("exec", name, "true").returncode == 125  # stopped: refused, state untouched
        assert next(r for r in _ours(tag) if r["name"] == name)["status"] == "exited"
        sandboxer("rm", name, check=True)
    assert 137 in outcomes  # the race was really exercised
    _assert_nothing_left(tag, before, fuse_before)
