"""The sandbox pool (sandboxer.pool): sandboxes set up ahead, joined by the caller, torn down after."""

from __future__ import annotations

import os
import signal
import time
from collections.abc import Callable, Iterator

import pytest

from sandboxer import SandboxOptions
from sandboxer.errors import UsageError
from sandboxer.pool import Pool, join
from sandboxer.state import is_alive, state_root

OPTS = SandboxOptions(command=["pool"], workdir="/tmp")


@pytest.fixture
def pool() -> Iterator[Pool]:
    p = Pool()
    yield p
    p.close()


def run_in(pool: Pool, fn: Callable[[], object], opts: SandboxOptions = OPTS,
           timeout: float | None = None) -> tuple[object, str, str]:
    """Run ``fn`` joined into a pooled sandbox; (its exit status, what it returned as text, sandbox id)."""
    r, w = os.pipe()

    def call() -> int:
        os.close(r)
        os.write(w, str(fn()).encode())
        return 0

    parked = pool.get(opts)
    try:
        status = join(parked, call, timeout=timeout)
    finally:
        pool.release(parked)
    os.close(w)
    with os.fdopen(r) as f:
        return status, f.read(), parked.id


def _gone(sandbox_id: str) -> bool:
    path = os.path.join(state_root(), sandbox_id)
    deadline = time.monotonic() + 10
    while os.path.exists(path) and is_alive(path):
        if time.monotonic() > deadline:
            return False
        time.sleep(0.02)
    return True


def test_joined_workload_is_isolated_and_sandboxes_are_fresh(pool: Pool) -> None:
    outside = {ns: os.readlink(f"/proc/self/ns/{ns}") for ns in ("user", "pid", "mnt", "net", "uts", "ipc")}

    def inside() -> str:
        changed = sorted(ns for ns, link in outside.items() if os.readlink(f"/proc/self/ns/{ns}") != link)
        with open("/proc/self/status") as f:
            status = dict(line.split(":\t", 1) for line in f if ":\t" in line)
        found = os.path.exists("/etc/pool-marker")
        with open("/etc/pool-marker", "w") as f:  # the root-owned /etc: writable inside, never on the host
            f.write("x")
        return f"{','.join(changed)} {os.getuid()} {status['Seccomp'].strip()} {status['NoNewPrivs'].strip()} " \
               f"{os.uname().nodename} {found}"

    status, first, first_id = run_in(pool, inside)
    assert status.code == 0
    namespaces, uid, seccomp, nnp, hostname, found = first.split()
    assert namespaces == "ipc,mnt,net,pid,user,uts"
    assert (uid, seccomp, nnp, found) == ("0", "2", "1", "False")
    assert first_id.startswith(hostname)
    _, second, second_id = run_in(pool, inside)  # the one set up ahead: another sandbox, nothing left over
    assert second_id != first_id and second.split()[-1] == "False"
    assert not os.path.exists("/etc/pool-marker")
    assert _gone(first_id) and _gone(second_id)


def test_exit_status_signal_and_identity(pool: Pool) -> None:
    status, _, _ = run_in(pool, lambda: os._exit(7))
    assert (status.code, status.signal) == (7, None)
    def crash() -> None:
        import faulthandler

        faulthandler.disable()  # pytest's: its traceback would only be noise here
        os.kill(os.getpid(), signal.SIGSEGV)

    status, _, _ = run_in(pool, crash)
    assert (status.code, status.signal) == (139, signal.SIGSEGV)
    status, out, _ = run_in(pool, lambda: f"{os.getuid()}:{os.getgid()}", OPTS._replace(user="1000:1000"))
    assert status.code == 0 and out == "1000:1000"


def test_timeout_kills_the_whole_sandbox(pool: Pool) -> None:
    def sleeper() -> None:
        import subprocess

        subprocess.Popen(["sleep", "60"], start_new_session=True)  # left behind: dies with the sandbox
        time.sleep(60)

    start = time.monotonic()
    status, _, sandbox_id = run_in(pool, sleeper, timeout=0.5)
    assert status.timed_out and status.signal == signal.SIGKILL
    assert time.monotonic() - start < 10
    assert _gone(sandbox_id)


def test_left_behind_processes_die_at_release(pool: Pool) -> None:
    def leave() -> int:
        import subprocess

        return subprocess.Popen(["sleep", "60"], start_new_session=True).pid

    status, _, sandbox_id = run_in(pool, leave)
    assert status.code == 0
    assert _gone(sandbox_id)  # the state lock is held by every process of the sandbox


def test_set_up_errors_keep_their_class_and_hint(pool: Pool) -> None:
    with pytest.raises(UsageError) as err:
        pool.get(OPTS._replace(network="no-such-network"))
    assert "no-such-network" in str(err.value) and err.value.hint
    status, _, _ = run_in(pool, lambda: "still serving")  # the pool goes on
    assert status.code == 0


def test_a_dead_pool_is_replaced(pool: Pool) -> None:
    assert run_in(pool, lambda: 1)[0].code == 0
    pool._proc.kill()
    pool._proc.wait()
    assert run_in(pool, lambda: 1)[0].code == 0


def test_close_tears_everything_down() -> None:
    before = set(os.listdir(state_root()))
    pool = Pool()
    status, _, _ = run_in(pool, lambda: 1)
    assert status.code == 0
    proc = pool._proc
    pool.close()  # the sandbox set up ahead goes too
    assert proc.poll() is not None
    assert set(os.listdir(state_root())) <= before


def test_sandboxes_follow_the_callers_settings(pool: Pool, tmp_path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A session may point sandboxer elsewhere after the pool started: the next sandbox follows."""
    assert run_in(pool, lambda: 1)[0].code == 0  # the pool runs, and has one set up ahead already
    monkeypatch.setenv("SANDBOXER_STATE_DIR", str(tmp_path / "state"))
    parked = pool.get(OPTS)
    try:
        assert os.path.isdir(tmp_path / "state" / parked.id)
    finally:
        pool.release(parked)
    assert _gone(parked.id)


def test_workload_cannot_reach_the_pool(pool: Pool) -> None:
    """Neither the test's process nor the sandbox's PID 1 holds the pool's socket or pipes."""
    r, w = os.pipe()

    def inside() -> int:
        os.close(r)
        os.write(w, f"{pool._sock.fileno()} {sorted(os.listdir('/proc/1/fd'))}".encode())
        return 0

    status = pool.run(OPTS, inside)
    os.close(w)
    with os.fdopen(r) as f:
        assert (status.code, f.read()) == (0, "-1 ['0', '1', '2']")


def test_third_party_plugins_keep_sandboxes_in_process(monkeypatch: pytest.MonkeyPatch) -> None:
    """A plugin attaches the set-up process (a cgroup): a workload joining later would escape it."""
    from sandboxer import plugins
    from sandboxer.pool import poolable

    assert poolable(OPTS)
    assert not poolable(OPTS._replace(upper_dir="/tmp/kept"))
    assert poolable(OPTS._replace(network="slirp4netns")) and not poolable(OPTS._replace(network="mynet"))
    monkeypatch.setattr(plugins, "external_entry_points", lambda: [("limits", "some.module:Plugin")])
    assert not poolable(OPTS)


def test_ids_map_as_in_any_sandbox(pool: Pool, tmp_path) -> None:
    """The pool's sandboxes are user namespaces nested in its own, mapped without newuidmap: ids
    still land on the caller's subordinate ranges on the host."""
    from sandboxer import Volume
    from sandboxer.runtime.userns import default_idmap

    idmap = default_idmap()
    if idmap.single or os.getuid() == 0:
        pytest.skip("no subordinate ids here: the pool does not nest")
    target = tmp_path / "owned"

    def chown() -> int:
        target.write_text("x")
        os.chown(target, 1000, 1000)
        return 0

    status, _, _ = run_in(pool, chown, OPTS._replace(volumes=(Volume(str(tmp_path), str(tmp_path)),)))
    assert status.code == 0

    st = target.stat()
    assert (st.st_uid, st.st_gid) == (idmap.host_uid(1000), idmap.host_gid(1000))
