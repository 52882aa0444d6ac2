"""Detached sandboxes (`run -d`, ps, logs, stop, kill, wait, rm), run as a user runs them."""

from __future__ import annotations

import os
import select
import signal
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from conftest import SANDBOXER, busybox_store, needs_subids, sandboxer


def _name(tag: str) -> str:
    return f"{tag}-{os.getpid()}-{os.urandom(3).hex()}"


def _ps(*args: str) -> str:
    return sandboxer("ps", *args, check=True).stdout


def _pids_running(marker: str) -> list[int]:
    out = subprocess.run(["pgrep", "-u", str(os.getuid()), "-f", marker], capture_output=True, text=True)
    return [int(p) for p in out.stdout.split()]


def test_detached_lifecycle_with_logs_stop_wait_and_rm() -> None:
    name = _name("life")
    script = 'trap "echo got TERM; exit 3" TERM; echo started; while :; do sleep 0.05; done'
    p = sandboxer("run", "-d", "--name", name, "--", "sh", "-c", script, check=True)
    sandbox_id = p.stdout.strip()
    assert len(sandbox_id) == 64
    assert name in _ps() and "Up " in _ps()
    deadline = time.monotonic() + 5
    while "started" not in sandboxer("logs", name).stdout:
        assert time.monotonic() < deadline
        time.sleep(0.05)
    assert sandboxer("rm", name).returncode == 125  # still running
    sandboxer("stop", "-t", "5", name, check=True)
    assert sandboxer("logs", sandbox_id[:12], check=True).stdout == "started\ngot TERM\n"
    assert sandboxer("wait", name, check=True).stdout.strip() == "3"
    assert "Exited (3) " in _ps("-a") and name not in _ps()
    sandboxer("rm", name, check=True)
    assert name not in _ps("-a")


def test_stop_kills_after_the_timeout_and_nothing_is_left() -> None:
    name = _name("stubborn")
    sandboxer("run", "-d", "--name", name, "--", "sleep", "3333.75", check=True)
    assert _pids_running("sleep 3333.75")
    start = time.monotonic()
    sandboxer("stop", "-t", "0.5", name, check=True)  # sleep as PID 1 ignores SIGTERM
    assert time.monotonic() - start < 5
    assert sandboxer("wait", name, check=True).stdout.strip() == "137"
    assert not _pids_running("sleep 3333.75")
    sandboxer("rm", name, check=True)


def test_a_killed_supervisor_takes_its_sandbox_along() -> None:
    import json

    name = _name("orphan")
    sandboxer("run", "-d", "--name", name, "--", "sleep", "3333.5", check=True)
    record = next(r for r in json.loads(_ps("--format", "json")) if r["name"] == name)
    os.kill(record["supervisor_pid"], signal.SIGKILL)
    deadline = time.monotonic() + 10
    while _pids_running("sleep 3333.5"):
        assert time.monotonic() < deadline, "the sandbox outlived its supervisor"
        time.sleep(0.05)
    assert "Exited (?)" in next(line for line in _ps("-a").splitlines() if name in line)  # ps tells the truth
    sandboxer("rm", name, check=True)


def test_how_a_sandbox_ended_is_recorded_and_shown() -> None:
    """Exit code, the signal that killed it, --timeout: in inspect's State and in ps -a's STATUS."""
    import json

    tag = _name("why")
    names = {f"{tag}-{k}": cmd for k, cmd in (
        ("exit", ["--", "sh", "-c", "exit 3"]),
        ("term", ["--init", "--", "sh", "-c", "kill -TERM $$; sleep 5"]),  # not PID 1: TERM kills it
        ("kill", ["--", "sleep", "3333.25"]),
        ("timeout", ["--timeout", "0.5", "--", "sleep", "3333.125"]))}
    try:
        for name, cmd in names.items():
            sandboxer("run", "-d", "--name", name, *cmd, check=True)
        sandboxer("kill", "-s", "KILL", f"{tag}-kill", check=True)
        codes = {name: sandboxer("wait", name, check=True, timeout=20).stdout.strip() for name in names}
        assert codes == {f"{tag}-exit": "3", f"{tag}-term": "143", f"{tag}-kill": "137", f"{tag}-timeout": "137"}
        states = {f["Name"]: f["State"] for f in json.loads(sandboxer("inspect", *names, check=True).stdout)}
        want = {"exit": (3, None, "exit"), "term": (143, 15, "signal"), "kill": (137, 9, "signal"),
                "timeout": (137, 9, "timeout")}
        for kind, (code, sig, reason) in want.items():
            state = states[f"{tag}-{kind}"]
            assert (state["ExitCode"], state["Signal"], state["Reason"]) == (code, sig, reason), state
            assert state["OOMKilled"] is False and state["Error"] == "" and state["Status"] == "exited"
        assert sandboxer("inspect", "-f", "{{.Config.Timeout}}", f"{tag}-timeout", check=True).stdout == "0.5\n"
        lines = {name: next(line for line in _ps("-a").splitlines() if name + " " in line) for name in names}
        assert " Exited (3) " in lines[f"{tag}-exit"] and "ago" in lines[f"{tag}-exit"]
        assert "Exited (143) " in lines[f"{tag}-term"] and ", SIGTERM" in lines[f"{tag}-term"]
        assert "Exited (137) " in lines[f"{tag}-kill"] and ", SIGKILL" in lines[f"{tag}-kill"]
        assert "Exited (137) " in lines[f"{tag}-timeout"] and ", timed out" in lines[f"{tag}-timeout"]
        assert not _pids_running("sleep 3333.125") and not _pids_running("sleep 3333.25")
    finally:
        sandboxer("rm", "-f", *names)


def test_run_timeout_kills_a_foreground_sandbox_and_says_so() -> None:
    start = time.monotonic()
    p = sandboxer("run", "--timeout", "0.5", "--", "sh", "-c", "echo hi; sleep 3333.0625")
    assert time.monotonic() - start < 10
    assert (p.returncode, p.stdout) == (137, "hi\n")
    assert "timed out after 0.5 s" in p.stderr
    assert not _pids_running("sleep 3333.0625")
    assert sandboxer("run", "--timeout", "5", "--", "true").returncode == 0  # a quick one is untouched
    for bad in ("0", "-1", "soon", "nan"):
        p = sandboxer("run", "--timeout", bad, "--", "true")
        assert p.returncode == 125 and "--timeout takes a" in p.stderr


def test_oom_kills_are_claimed_only_from_a_cgroup_of_the_sandboxs_own(tmp_path: Path) -> None:
    """In a cgroup shared with the supervisor (every sandbox here: no cgroup driver placed it), another
    process's OOM kill is not the sandbox's: OOMKilled stays false.  The counter reads memory.events."""
    from sandboxer.supervisor import _OomWatch, oom_kills

    events = tmp_path / "memory.events"
    events.write_text("low 0\nhigh 0\nmax 4\noom 2\noom_kill 1\noom_group_kill 0\n")
    assert oom_kills(str(events)) == 1
    assert oom_kills(str(tmp_path / "missing")) is None
    watch = _OomWatch()
    child = subprocess.Popen(["sleep", "30"])
    try:
        with open("/proc/self/cgroup") as f:
            ours = next((line[3:].strip() for line in f if line.startswith("0::")), "")
        assert watch.watch(child.pid) == ours  # the same cgroup as ours: nothing to watch
        assert watch.events is None and watch.killed() is False
    finally:
        child.kill()
        child.wait()
    watch.events, watch.before = str(events), 0  # as if it had its own cgroup, with one kill since start
    assert watch.killed() is True


def test_many_detached_sandboxes_start_and_all_go_with_rm_f() -> None:
    names = [_name(f"many{i}") for i in range(8)]
    procs = [subprocess.Popen([*SANDBOXER, "run", "-d", "--name", n, "--", "sleep", "3333.125"],
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE) for n in names]
    assert all(p.wait(timeout=60) == 0 for p in procs)
    listing = _ps()
    assert all(n in listing for n in names)
    sandboxer("rm", "-f", *names, check=True)
    assert not _pids_running("sleep 3333.125")
    assert not any(n in _ps("-a") for n in names)


def test_bad_names_and_signals_are_one_line() -> None:
    p = sandboxer("logs", "no-such-sandbox")
    assert p.returncode == 125 and "no such sandbox: no-such-sandbox" in p.stderr
    name = _name("sig")
    sandboxer("run", "-d", "--name", name, "--", "sh", "-c", "trap 'exit 7' USR1; while :; do sleep 0.05; done",
              check=True)
    assert sandboxer("kill", "-s", "BOGUS", name).returncode == 125
    sandboxer("kill", "-s", "USR1", name, check=True)
    assert sandboxer("wait", name, check=True).stdout.strip() == "7"
    assert sandboxer("kill", name).returncode == 125  # not running any more
    sandboxer("rm", name, check=True)
    assert sandboxer("run", "-d", "-t", "--", "true").returncode == 125


def test_commands_on_several_names_handle_each_and_report_the_missing_ones() -> None:
    """As docker's: ``rm a nosuch b`` removes a and b, says nosuch does not exist, and exits non-zero."""
    import json

    a, b = _name("multi-a"), _name("multi-b")
    for name in (a, b):
        sandboxer("run", "-d", "--name", name, "--", "sleep", "3333.0625", check=True)
    try:
        p = sandboxer("inspect", a, "nosuch-sandbox", b)
        assert p.returncode == 125 and "no such sandbox: nosuch-sandbox" in p.stderr
        assert [f["Name"] for f in json.loads(p.stdout)] == [a, b]
        p = sandboxer("stop", "-t", "1", "nosuch-sandbox", a)
        assert p.returncode == 125 and p.stdout.split() == [a] and p.stderr.count("error:") == 1
        p = sandboxer("kill", b, "nosuch-sandbox")
        assert p.returncode == 125 and "no such sandbox or container: nosuch-sandbox" in p.stderr
        assert a not in _ps() and b not in _ps()
    finally:
        p = sandboxer("rm", "-f", a, "nosuch-sandbox", b)
    assert p.returncode == 125 and p.stdout.split() == [a, b], p.stderr
    assert a not in _ps("-a") and b not in _ps("-a")


def test_exec_joins_the_sandbox_as_its_workload_runs() -> None:
    name = _name("exec")
    sandboxer("run", "-d", "--name", name, "--hostname", "boxy", "--", "sh", "-c",
              "echo from-the-workload > /tmp/note; sleep 3333.875", check=True)
    try:
        deadline = time.monotonic() + 5
        while sandboxer("exec", name, "test", "-e", "/tmp/note").returncode != 0:
            assert time.monotonic() < deadline
            time.sleep(0.05)
        p = sandboxer("exec", "-e", "EXTRA=1", name, "sh", "-c",
                      "hostname; cat /tmp/note; echo $EXTRA; id -u; grep -E '^(CapEff|NoNewPrivs|Seccomp):' "
                      "/proc/self/status",
                      check=True)
        lines = p.stdout.split("\n")
        assert lines[:4] == ["boxy", "from-the-workload", "1", "0"]  # its UTS, mount ns (/tmp) and env
        assert "CapEff:\t00000000a80425fb" in p.stdout and "NoNewPrivs:\t1" in p.stdout
        assert "Seccomp:\t2" in p.stdout
        pids = sandboxer("exec", name, "sh", "-c", "ls /proc | grep -c '^[0-9]'", check=True).stdout
        assert int(pids) < 10  # the sandbox's PID namespace, not the host's
        assert sandboxer("exec", "-u", "1000", name, "id", "-u", check=True).stdout.strip() == "1000"
        assert sandboxer("exec", name, "sh", "-c", "exit 5").returncode == 5
        missing = sandboxer("exec", name, "no-such-command")
        assert missing.returncode == 127 and "executable file not found" in missing.stderr
    finally:
        sandboxer("rm", "-f", name, check=True)
    gone = sandboxer("exec", name, "true")
    assert gone.returncode == 125 and "no such sandbox" in gone.stderr


def test_a_detached_sandbox_keeps_none_of_its_callers_descriptors(tmp_path: Path) -> None:
    """``run -d`` returns, and the caller's pipe sees end of file: the supervisor does not hold it for
    the sandbox's lifetime; ``exec`` hands the joined command nothing of its caller's either."""
    name = _name("fds")
    r, w = os.pipe()
    secret = tmp_path / "secret"
    secret.write_text("host only")
    opened = os.open(tmp_path, os.O_RDONLY | os.O_DIRECTORY)
    dir_fd = os.dup2(opened, 57)  # a number no shell or ls of the sandbox would have open
    os.close(opened)
    try:
        subprocess.run([*SANDBOXER, "run", "-d", "--name", name, "--", "sleep", "3333.3125"], pass_fds=(w, dir_fd),
                       check=True, capture_output=True, timeout=60)
        os.close(w)
        w = -1
        ready = select.select([r], [], [], 10)[0]
        assert ready and os.read(r, 1) == b"", "a process of the detached sandbox holds the caller's pipe"
        script = f"cat /proc/self/fd/{dir_fd}/secret; ls /proc/self/fd"
        p = subprocess.run([*SANDBOXER, "exec", name, "sh", "-c", script], pass_fds=(dir_fd,),
                           capture_output=True, text=True, timeout=60)
        assert p.stdout.split()[-1].isdigit(), p.stderr  # the listing ran
        assert "host only" not in p.stdout and str(dir_fd) not in p.stdout.split(), p.stdout
    finally:
        for fd in (r, w, dir_fd):
            if fd >= 0:
                os.close(fd)
        sandboxer("rm", "-f", name, check=True)


_PROC_FD_WATCHER = """
import os, time
end = time.monotonic() + 8
while time.monotonic() < end:
    for pid in os.listdir("/proc"):
        if pid.isdigit() and pid != str(os.getpid()):
            try:
                os.close(os.open("PWNED", os.O_WRONLY | os.O_CREAT, 0o644, dir_fd=os.open(f"/proc/{pid}/fd/57", 0)))
                print("reached", pid, flush=True)
            except OSError:
                pass
"""


def test_a_workload_cannot_reach_the_helpers_of_exec_and_cp(tmp_path: Path) -> None:
    """``exec``'s and ``cp``'s helpers are forks of the CLI, inside the sandbox until they exec (or for
    the whole copy): non-dumpable, the workload can neither trace them (and unload their seccomp filter
    to be) nor open what they hold through /proc/PID/fd — here a directory of the caller's."""
    name = _name("helpers")
    victim = tmp_path / "victim"
    victim.mkdir()
    opened = os.open(victim, os.O_RDONLY | os.O_DIRECTORY)
    dir_fd = os.dup2(opened, 57)
    os.close(opened)
    (tmp_path / "f.txt").write_text("x")
    sandboxer("run", "-d", "--name", name, "--", "python3", "-c", _PROC_FD_WATCHER, check=True)
    try:
        for _ in range(15):
            subprocess.run([*SANDBOXER, "exec", name, "true"], pass_fds=(dir_fd,), capture_output=True, timeout=60)
            subprocess.run([*SANDBOXER, "cp", str(tmp_path / "f.txt"), f"{name}:/tmp/"], pass_fds=(dir_fd,),
                           capture_output=True, timeout=60)
        assert not (victim / "PWNED").exists(), sandboxer("logs", name).stdout
    finally:
        os.close(dir_fd)
        sandboxer("rm", "-f", name, check=True)


def test_inspect_reports_state_namespaces_and_security() -> None:
    import json

    name = _name("insp")
    sandboxer("run", "-d", "--name", name, "--", "sleep", "3333.625", check=True)
    try:
        facts = json.loads(sandboxer("inspect", name, check=True).stdout)[0]
        assert facts["State"]["Status"] == "running" and facts["State"]["Pid"] > 0
        assert facts["Namespaces"]["pid"] != os.readlink("/proc/self/ns/pid")
        assert facts["Security"] == {"CapEff": "00000000a80425fb", "CapBnd": "00000000a80425fb",
                                     "NoNewPrivs": "1", "Seccomp": "2"}
        line = sandboxer("inspect", "-f", "{{.State.Status}} {{.State.Pid}}", name, check=True).stdout.split()
        assert line == ["running", str(facts["State"]["Pid"])]
    finally:
        sandboxer("rm", "-f", name, check=True)
    assert sandboxer("inspect", name).returncode == 125


def _wait_for_exec(name: str, *check: str) -> None:
    deadline = time.monotonic() + 10
    while sandboxer("exec", name, *check).returncode != 0:
        assert time.monotonic() < deadline, f"{check} never succeeded in {name}"
        time.sleep(0.05)


def test_exec_tty_has_our_window_size_and_ctrl_c_reaches_the_command() -> None:
    from test_tty import Terminal

    name = _name("exectty")
    sandboxer("run", "-d", "--name", name, "--", "sleep", "3333.3125", check=True)
    try:
        _wait_for_exec(name, "true")
        t = Terminal("exec", "-it", name, "sh", "-c",
                     "stty size; tty; test -t 0 && echo is-a-tty; echo TERM=$TERM; "
                     "trap 'echo caught-int; exit 7' INT; echo ready; while :; do sleep 0.05; done",
                     rows=33, cols=101)
        t.read_until(b"ready")
        t.send(b"\x03")
        t.read_until(b"caught-int")
        assert t.wait() == 7
        out = t.output.decode()
        assert "33 101" in out and "is-a-tty" in out and "TERM=" in out
        assert "/dev/pts/0" in out  # a terminal of the sandbox's own devpts, not the host's
    finally:
        sandboxer("rm", "-f", name, check=True)


def test_commands_start_with_default_signals_whatever_the_caller_ignored() -> None:
    """A shell's background job runs with SIGINT and SIGQUIT ignored; neither run's workload nor an
    exec'd command inherits that (a shell's ``trap ... INT`` would be silently dropped)."""
    import signal
    import subprocess

    def ignore() -> None:
        for sig in (signal.SIGINT, signal.SIGQUIT):
            signal.signal(sig, signal.SIG_IGN)

    def ignored(*args: str) -> int:
        out = subprocess.run([*SANDBOXER, *args, "grep", "SigIgn", "/proc/self/status"], preexec_fn=ignore,
                             capture_output=True, text=True, timeout=60, stdin=subprocess.DEVNULL)
        assert out.returncode == 0, out.stderr
        return int(out.stdout.split()[1], 16)

    interrupt_or_quit = (1 << (signal.SIGINT - 1)) | (1 << (signal.SIGQUIT - 1))
    assert ignored("run", "--") & interrupt_or_quit == 0
    name = _name("execsig")
    sandboxer("run", "-d", "--name", name, "--", "sleep", "3333.3125", check=True)
    try:
        _wait_for_exec(name, "true")
        assert ignored("exec", name) & interrupt_or_quit == 0
    finally:
        sandboxer("rm", "-f", name, check=True)


def test_exec_user_names_come_from_the_sandboxs_own_passwd() -> None:
    name = _name("execuser")
    # accounts the host does not have, written into the sandbox's /etc only
    sandboxer("run", "-d", "--name", name, "--", "sh", "-c",
              "echo ghost:x:4242:4343::/home/ghost:/bin/sh >> /etc/passwd; echo spooky:x:4444: >> /etc/group; "
              "touch /tmp/ready; sleep 3333.4375", check=True)
    try:
        _wait_for_exec(name, "test", "-e", "/tmp/ready")
        assert sandboxer("exec", "-u", "ghost", name, "id", "-u", check=True).stdout.strip() == "4242"
        p = sandboxer("exec", "-u", "ghost:spooky", name, "sh", "-c",
                      "id -g; echo $HOME; grep CapEff /proc/self/status", check=True)
        assert p.stdout.split("\n")[:3] == ["4444", "/home/ghost", "CapEff:\t0000000000000000"]
        assert sandboxer("exec", "-u", "4242:4343", name, "id", "-g", check=True).stdout.strip() == "4343"
        home = sandboxer("exec", "-u", "ghost", "-e", "HOME=/mine", name, "sh", "-c", "echo $HOME", check=True)
        assert home.stdout == "/mine\n"  # -e wins over the user's home
        bad = sandboxer("exec", "-u", "nosuch", name, "true")
        assert bad.returncode == 125 and "unknown user 'nosuch'" in bad.stderr
        assert len(bad.stderr.strip().splitlines()) == 2  # the error and its hint
        # a FIFO in place of /etc/group: never opened (it hung exec -u, deaf to Ctrl-C, for good)
        sandboxer("exec", name, "sh", "-c", "rm /etc/group && mkfifo /etc/group", check=True)
        fifo = sandboxer("exec", "-u", "ghost:spooky", name, "true", timeout=20)
        assert fifo.returncode == 125 and "unknown group 'spooky'" in fifo.stderr, fifo.stderr
    finally:
        sandboxer("rm", "-f", name, check=True)


def test_exec_into_a_stopped_or_stopping_sandbox_is_one_clean_line() -> None:
    name = _name("execstop")
    sandboxer("run", "-d", "--name", name, "--", "sleep", "3333.5625", check=True)
    _wait_for_exec(name, "true")
    running = subprocess.Popen([*SANDBOXER, "exec", name, "sleep", "30"], stdout=subprocess.PIPE,
                               stderr=subprocess.PIPE, text=True)
    time.sleep(0.3)
    sandboxer("stop", "-t", "0", name, check=True)
    _, err = running.communicate(timeout=10)
    assert running.returncode == 137 and err.strip() == f"sandboxer: the command was killed: sandbox {name} stopped"
    before = _ps("-a")
    stopped = sandboxer("exec", name, "true")
    assert stopped.returncode == 125
    assert stopped.stderr.splitlines()[0] == f"sandboxer: error: sandbox {name} is not running"
    assert _ps("-a") == before  # state untouched
    sandboxer("rm", name, check=True)


def test_logs_tail_timestamps_and_streams() -> None:
    import re

    name = _name("logs")
    sandboxer("run", "-d", "--name", name, "--", "sh", "-c",
              "echo one; echo two >&2; printf 'no newline'; sleep 0.1; echo ' yet'; for i in 1 2 3; do echo n$i; done",
              check=True)
    try:
        assert sandboxer("wait", name, check=True).stdout.strip() == "0"
        both = sandboxer("logs", name, check=True)
        assert both.stdout == "one\nno newline yet\nn1\nn2\nn3\n" and both.stderr == "two\n"
        assert sandboxer("logs", "--tail", "2", name, check=True).stdout == "n2\nn3\n"
        assert sandboxer("logs", "--tail", "0", name, check=True).stdout == ""
        stamped = sandboxer("logs", "-t", name, check=True).stdout.splitlines()
        assert [line.split(" ", 1)[1] for line in stamped] == ["one", "no newline yet", "n1", "n2", "n3"]
        assert all(re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{9}Z", line.split(" ")[0]) for line in stamped)
        assert sandboxer("logs", "--tail", "x", name).returncode == 125
    finally:
        sandboxer("rm", "-f", name, check=True)


def test_log_rotation_keeps_one_old_file_and_loses_nothing_at_exit() -> None:
    import json

    name = _name("rotate")
    # 3,000 lines of ~50 bytes of log each: ~150 kB through a 16 kB limit, written as fast as it can
    sandboxer("run", "-d", "--name", name, "--log-opt", "max-size=16k", "--", "sh", "-c",
              "i=0; while [ $i -lt 3000 ]; do echo line-$i; i=$((i+1)); done", check=True)
    try:
        assert sandboxer("wait", name, check=True).stdout.strip() == "0"
        record = next(r for r in json.loads(_ps("-a", "--format", "json")) if r["name"] == name)
        log = record["log"]
        assert os.path.getsize(log) <= 16_000 and os.path.getsize(log + ".1") <= 16_000
        lines = sandboxer("logs", name, check=True).stdout.splitlines()
        assert lines[-1] == "line-2999"  # the last output, written just before the exit, is there
        first = int(lines[0].removeprefix("line-"))
        assert lines == [f"line-{i}" for i in range(first, 3000)]  # contiguous: nothing dropped inside
        assert 200 < len(lines) < 800
    finally:
        sandboxer("rm", "-f", name, check=True)
    assert not os.path.exists(log) and not os.path.exists(log + ".1")


def test_a_follower_loses_nothing_when_the_log_rotates_twice_between_its_reads(tmp_path: Path) -> None:
    """Two rotations between two reads: the file it held is gone, the one between is ``.1``, whole."""
    from sandboxer.logfile import LogWriter, read

    path = str(tmp_path / "x.log")
    writer = LogWriter(path, max_size=200)
    writer.write(1, b"first\n")
    deadline = time.monotonic() + 2  # then the "sandbox" has ended: the follower returns
    follower = read(path, running=lambda: time.monotonic() < deadline)
    assert next(follower).data == b"first"
    for i in range(8):  # a few records a file: two rotations, then some lines in the new file
        writer.write(1, b"line-%d\n" % i)
    writer.close()
    assert os.path.exists(path + ".1")
    assert [r.data for r in follower] == [b"line-%d" % i for i in range(8)]


def test_logs_follow_sees_output_across_a_rotation_until_the_end() -> None:
    name = _name("follow")
    sandboxer("run", "-d", "--name", name, "--log-opt", "max-size=8k", "--", "sh", "-c",
              "sleep 0.3; i=0; while [ $i -lt 1000 ]; do echo follow-$i; i=$((i+1)); done; sleep 0.2; echo done",
              check=True)
    try:
        p = sandboxer("logs", "-f", name, check=True, timeout=30)
        lines = p.stdout.splitlines()
        assert lines[-1] == "done" and "follow-999" in lines
    finally:
        sandboxer("rm", "-f", name, check=True)


def test_bad_log_options_are_refused_before_anything_starts() -> None:
    before = _ps("-a")
    for opt in ("max-size=1", "max-size=lots", "max-file=3"):
        p = sandboxer("run", "-d", "--log-opt", opt, "--", "true")
        assert p.returncode == 125 and len(p.stderr.strip().splitlines()) <= 2, p.stderr
    assert sandboxer("run", "--log-opt", "max-size=1m", "--", "true").returncode == 125
    assert _ps("-a") == before


def test_top_lists_the_sandboxs_processes_only() -> None:
    name = _name("top")
    sandboxer("run", "-d", "--name", name, "--", "sh", "-c", "sleep 3333.6875 & sleep 3333.8125", check=True)
    try:
        _wait_for_exec(name, "true")
        deadline = time.monotonic() + 5
        while "3333.6875" not in (out := sandboxer("top", name, check=True).stdout):
            assert time.monotonic() < deadline
            time.sleep(0.05)
        header, *rows = out.splitlines()
        assert header.split() == ["UID", "PID", "PPID", "NSPID", "STAT", "TIME", "CMD"]
        assert rows[0].split()[3] == "1" and "sh -c" in rows[0]  # PID 1 first
        assert any("sleep 3333.6875" in r for r in rows) and any("sleep 3333.8125" in r for r in rows)
        assert len(rows) == 3 and all(r.split()[0] == "0" for r in rows)  # uid as the sandbox sees it
    finally:
        sandboxer("rm", "-f", name, check=True)
    assert sandboxer("top", name).returncode == 125


def test_top_shows_what_a_process_names_itself_without_its_terminal_escapes() -> None:
    """argv of ESC]52 (the clipboard), a window title, a newline with a forged row: shown as ``?``."""
    name = _name("topesc")
    argv0 = "\x1b]0;TITLE\x07\x1b]52;c;ZWNobyBoaQ==\x07fake\nroot 1 0 0 S 00:00:00 /sbin/init\x1b[2K\u202e"
    sandboxer("run", "-d", "--name", name, "--", "python3", "-c",
              f"import os; os.execv('/bin/sleep', [{argv0!r}, '3333.5625'])", check=True)
    try:
        deadline = time.monotonic() + 5
        while "?]52;c;" not in (out := sandboxer("top", name, check=True).stdout):  # python has exec'ed sleep
            assert time.monotonic() < deadline
            time.sleep(0.05)
        assert not any(c in out for c in "\x1b\x07\u202e") and len(out.splitlines()) == 2, repr(out)
        assert "?]0;TITLE??]52;c;ZWNobyBoaQ==?fake?root 1 0 0 S" in out
    finally:
        sandboxer("rm", "-f", name, check=True)


def test_a_flood_of_empty_lines_is_logged_in_linear_time() -> None:
    """256 KiB of newlines: 45 s of the supervisor's CPU per 128 KiB when each line's record was
    appended to the batch by copying it; ``wait`` now returns as soon as the workload has ended."""
    name = _name("flood")
    sandboxer("run", "-d", "--name", name, "--", "sh", "-c", "head -c 262144 /dev/zero | tr '\\0' '\\n'; exit 3",
              check=True)
    try:
        assert sandboxer("wait", name, timeout=30, check=True).stdout.strip() == "3"
        assert sandboxer("logs", name, check=True).stdout == "\n" * 262144
    finally:
        sandboxer("rm", "-f", name, check=True)


def test_cp_both_ways_with_docker_semantics(home_tmp: str) -> None:
    name = _name("cp")
    src = os.path.join(home_tmp, "src")
    os.makedirs(os.path.join(src, "sub"))
    with open(os.path.join(src, "sub", "f"), "w") as f:
        f.write("hello")
    with open(os.path.join(home_tmp, "single"), "w") as f:
        f.write("one file")
    os.symlink("sub/f", os.path.join(src, "link"))
    sandboxer("run", "-d", "--name", name, "--", "sh", "-c",
              "mkdir -p /srv/out; echo inside > /srv/out/file; ln -s /etc /srv/out/etc-link; touch /tmp/ready; "
              "sleep 3333.9375", check=True)
    try:
        _wait_for_exec(name, "test", "-e", "/tmp/ready")
        # host -> sandbox: into an existing dir under its own name; to a new name; contents with /.
        sandboxer("cp", src, f"{name}:/srv", check=True)
        sandboxer("cp", os.path.join(home_tmp, "single"), f"{name}:/srv/renamed", check=True)
        sandboxer("cp", src + "/.", f"{name}:/srv/contents", check=True)
        listing = sandboxer("exec", name, "sh", "-c",
                            "cat /srv/src/sub/f /srv/renamed /srv/contents/sub/f; readlink /srv/src/link; "
                            "stat -c %u /srv/src/sub/f", check=True).stdout
        assert listing.splitlines() == ["helloone filehellosub/f", "0"]  # the files have no final newline
        # sandbox -> host
        out = os.path.join(home_tmp, "back")
        sandboxer("cp", f"{name}:/srv/out", out, check=True)
        with open(os.path.join(out, "file")) as f:
            assert f.read() == "inside\n"
        assert os.readlink(os.path.join(out, "etc-link")) == "/etc"  # a link is copied as a link
        assert os.stat(os.path.join(out, "file")).st_uid == os.getuid()
        # docker's refusals: a dir onto a file, a missing parent, a missing source
        assert sandboxer("cp", src, f"{name}:/srv/renamed").returncode != 0
        assert sandboxer("cp", os.path.join(home_tmp, "single"), f"{name}:/no/such/dir/x").returncode != 0
        missing = sandboxer("cp", f"{name}:/srv/nothing", out)
        assert missing.returncode != 0 and "no such file or directory: /srv/nothing" in missing.stderr
        assert sandboxer("cp", src, home_tmp).returncode == 125  # no sandbox side
    finally:
        sandboxer("rm", "-f", name, check=True)
    gone = sandboxer("cp", src, f"{name}:/srv")
    assert gone.returncode == 125 and "no such sandbox" in gone.stderr


def test_cp_of_device_nodes_says_what_it_did_not_copy(home_tmp: str) -> None:
    """A device node alone is an error (both ways: it printed nothing and exited 0); inside a copied
    directory each is named in a notice; an error inside the sandbox is one line with its hint."""
    name = _name("cpdev")
    sandboxer("run", "-d", "--name", name, "--", "sleep", "3333.3125", check=True)
    try:
        out = sandboxer("cp", f"{name}:/dev/zero", os.path.join(home_tmp, "z"))
        assert out.returncode == 125 and "'z' is a device node" in out.stderr and "hint: " in out.stderr
        assert not os.path.exists(os.path.join(home_tmp, "z"))
        into = sandboxer("cp", "/dev/zero", f"{name}:/tmp/z")
        assert into.returncode == 125 and into.stderr.count("sandboxer: error: ") == 1, into.stderr
        assert "in the sandbox: 'z' is a device node" in into.stderr and "hint: " in into.stderr
        tree = sandboxer("cp", f"{name}:/dev", os.path.join(home_tmp, "devcopy"), check=True)
        assert "notice: 'devcopy/null' is a device node: not copied" in tree.stderr, tree.stderr
        assert os.path.isdir(os.path.join(home_tmp, "devcopy", "pts"))
        missing = sandboxer("cp", f"{name}:/nonexistent", home_tmp)
        assert missing.returncode == 125 and "hint: " in missing.stderr
    finally:
        sandboxer("rm", "-f", name, check=True)


def test_cp_paths_resolve_inside_the_sandbox(home_tmp: str) -> None:
    """A symlink in the sandbox that names a host path leads to the sandbox's own file, never the host's."""
    name = _name("cpjail")
    secret = os.path.join(home_tmp, "secret")
    with open(secret, "w") as f:
        f.write("host secret")
    # the sandbox sees home_tmp through its overlay (the host root is its lower layer), so the target
    # here is a host-only path: the host's /tmp is a private tmpfs inside
    host_only = f"/tmp/sbx-cpjail-{os.getpid()}"
    os.makedirs(host_only, exist_ok=True)
    with open(os.path.join(host_only, "hostfile"), "w") as f:
        f.write("host only")
    try:
        sandboxer("run", "-d", "--name", name, "--", "sh", "-c",
                  f"mkdir -p {host_only}; ln -s {host_only} /srv-link; touch /tmp/ready; sleep 3333.0625",
                  check=True)
        _wait_for_exec(name, "test", "-e", "/tmp/ready")
        stolen = sandboxer("cp", f"{name}:/srv-link/hostfile", os.path.join(home_tmp, "stolen"))
        assert stolen.returncode != 0 and not os.path.exists(os.path.join(home_tmp, "stolen"))
        sandboxer("cp", secret, f"{name}:/srv-link/planted", check=True)  # lands in the sandbox's own /tmp
        assert not os.path.exists(os.path.join(host_only, "planted"))
        assert sandboxer("exec", name, "cat", f"{host_only}/planted", check=True).stdout == "host secret"
    finally:
        sandboxer("rm", "-f", name, check=True)
        import shutil

        shutil.rmtree(host_only, ignore_errors=True)


def test_cp_refuses_a_hostile_archive_from_the_sandbox(tmp_path: object) -> None:
    """The sandbox side could be made to send anything: the host side never writes outside DST."""
    import io
    import tarfile
    from pathlib import Path

    from sandboxer.cp import _unpack
    from sandboxer.errors import UsageError

    base = Path(str(tmp_path))
    outside, dest = base / "outside", base / "dest"
    outside.mkdir()
    dest.mkdir()

    def archive(*members: tuple[str, str | None, bytes]) -> int:
        buf = io.BytesIO()
        with tarfile.open(fileobj=buf, mode="w") as tar:
            for member_name, link, data in members:
                info = tarfile.TarInfo(member_name)
                if link is not None:
                    info.type, info.linkname = tarfile.SYMTYPE, link
                    tar.addfile(info)
                else:
                    info.size, info.mode = len(data), 0o4755
                    tar.addfile(info, io.BytesIO(data))
        r, w = os.pipe()
        os.write(w, buf.getvalue())
        os.close(w)
        return r

    for members in ([("esc", str(outside), b""), ("esc/pwn", None, b"x")],
                    [("../pwn", None, b"x")], [("/abs-pwn", None, b"x")]):
        try:
            _unpack(archive(*members), str(dest), numeric=False)
            raise AssertionError(f"{members} was accepted")
        except UsageError:
            pass
        assert list(outside.iterdir()) == [] and not (base / "pwn").exists()
    (outside / "target").write_text("keep")
    os.symlink(outside / "target", dest / "over")  # an existing link is replaced, not written through
    _unpack(archive(("over", None, b"new")), str(dest), numeric=False)
    assert (outside / "target").read_text() == "keep" and (dest / "over").read_bytes() == b"new"
    assert not (dest / "over").stat().st_mode & 0o6000  # no setuid bit from the archive


def test_restart_keeps_id_name_options_and_log() -> None:
    import json

    name = _name("restart")
    sid = sandboxer("run", "-d", "--name", name, "-e", "FOO=bar", "--hostname", "hh", "--", "sh", "-c",
                    'echo "start $FOO $(hostname)"; sleep 3333.1875', check=True).stdout.strip()
    try:
        deadline = time.monotonic() + 5
        while "start" not in sandboxer("logs", name).stdout:
            assert time.monotonic() < deadline
            time.sleep(0.05)
        first_pid = json.loads(sandboxer("inspect", name, check=True).stdout)[0]["State"]["Pid"]
        sandboxer("restart", "-t", "0", name, check=True)
        facts = json.loads(sandboxer("inspect", name, check=True).stdout)[0]
        assert facts["Id"] == sid and facts["State"]["Status"] == "running" and facts["State"]["Pid"] != first_pid
        assert facts["RestartCount"] == 1
        while sandboxer("logs", name).stdout.count("start") < 2:
            assert time.monotonic() < deadline + 5
            time.sleep(0.05)
        assert sandboxer("logs", name).stdout == "start bar hh\nstart bar hh\n"
        sandboxer("stop", "-t", "0", name, check=True)
        sandboxer("restart", name, check=True)  # an exited sandbox starts again too
        assert "Up " in next(line for line in _ps().splitlines() if name in line)
    finally:
        sandboxer("rm", "-f", name, check=True)


def test_inspect_reports_config_graph_driver_mounts_and_network(home_tmp: str) -> None:
    import json

    name = _name("insp2")
    sandboxer("run", "-d", "--name", name, "-e", "K=V", "-w", "/tmp", "-v", f"{home_tmp}:/data:ro", "--", "sleep",
              "3333.3", check=True)
    try:
        facts = json.loads(sandboxer("inspect", name, check=True).stdout)[0]
        pid = facts["State"]["Pid"]
        with open(f"/proc/{pid}/cgroup") as f:  # PID 1's cgroup v2 path (no driver gave it one of its own here)
            cgroup = next((line[3:].strip() for line in f if line.startswith("0::")), "")
        assert facts["State"]["OOMKilled"] is False and facts["CgroupPath"] == cgroup
        config = facts["Config"]
        assert config["Cmd"] == ["sleep", "3333.3"] and "K=V" in config["Env"] and config["WorkingDir"] == "/tmp"
        assert config["Hostname"] == facts["Id"][:12] and config["Image"] == "" and config["User"] == ""
        graph = facts["GraphDriver"]
        assert graph["Name"] in ("fuse-overlayfs", "overlay") and graph["Data"]["LowerDir"] == "/"
        assert graph["Data"]["MergedDir"] == f"/proc/{pid}/root" and graph["Data"]["UpperDir"].endswith("/upper")
        volume = next(m for m in facts["Mounts"] if m["Destination"] == "/data")
        assert volume == {"Type": "bind", "Source": home_tmp, "Destination": "/data", "RW": False, "Options": ""}
        assert facts["NetworkSettings"]["Mode"] == "none" and facts["NetworkSettings"]["Ports"] == {}
        assert facts["NamespacePaths"]["net"] == f"/proc/{pid}/ns/net" == facts["NetworkSettings"]["SandboxKey"]
        line = sandboxer("inspect", "-f", "{{.State.OOMKilled}} {{.State.ExitCode}} {{.Config.Cmd}}", name,
                         check=True).stdout.strip()
        assert line == 'false <no value> ["sleep", "3333.3"]'
        sandboxer("stop", "-t", "0", name, check=True)
        stopped = json.loads(sandboxer("inspect", name, check=True).stdout)[0]
        assert stopped["State"]["Pid"] == 0 and stopped["State"]["ExitCode"] == 137
        assert stopped["State"]["FinishedAt"] and "Namespaces" not in stopped
    finally:
        sandboxer("rm", "-f", name, check=True)


def test_names_are_unique_among_detached_sandboxes_and_ids_by_prefix() -> None:
    import json

    name = _name("uniq")
    sid = sandboxer("run", "-d", "--name", name, "--", "true", check=True).stdout.strip()
    sandboxer("wait", name, check=True)
    again = sandboxer("run", "-d", "--name", name, "--", "true")
    assert again.returncode == 125 and f"in use by sandbox {sid[:12]} (exited)" in again.stderr
    assert f"sandboxer rm {name}" in again.stderr
    assert sandboxer("inspect", "-f", "{{.Id}}", sid[:6], check=True).stdout.strip() == sid
    shortest = next(n for n in range(1, 65)  # the shortest prefix no other sandbox of ours shares
                    if not any(r["id"] != sid and r["id"].startswith(sid[:n]) for r in
                               json.loads(_ps("-a", "--format", "json"))))
    assert sandboxer("inspect", "-f", "{{.Id}}", sid[:shortest], check=True).stdout.strip() == sid
    assert sandboxer("inspect", "not-hex-" + sid[:6]).returncode == 125
    sandboxer("rm", name, check=True)
    sandboxer("run", "-d", "--name", name, "--", "true", check=True)  # free again
    sandboxer("wait", name, check=True)
    sandboxer("rm", name, check=True)


def test_ambiguous_prefix_is_one_line_and_touches_nothing() -> None:
    import json

    from sandboxer.state import state_root

    # two exited sandboxes whose ids share a prefix (as records of real runs would look)
    prefix = "5bd" + os.urandom(3).hex()
    records = os.path.join(state_root(), "records")
    os.makedirs(records, exist_ok=True)
    ids = [prefix + os.urandom(29).hex()[: 64 - len(prefix)] for _ in range(2)]
    for sid in ids:
        with open(os.path.join(records, f"{sid}.json"), "w") as f:
            json.dump({"id": sid, "name": None, "command": ["true"], "status": "exited", "exit_code": 0,
                       "started_at": time.time(), "log": os.path.join(records, f"{sid}.log")}, f)
    try:
        for command in (("rm", "-f"), ("inspect",), ("logs",), ("exec",)):
            p = sandboxer(*command, prefix, *(["true"] if command == ("exec",) else []))
            assert p.returncode == 125, p
            assert p.stderr.splitlines() == [f"sandboxer: error: {prefix!r} matches 2 sandboxes",
                                             "hint: give more of the id"]
        listing = [r["id"] for r in json.loads(_ps("-a", "--format", "json"))]
        assert all(sid in listing for sid in ids)  # state untouched
        assert sandboxer("inspect", "-f", "{{.Id}}", ids[0][:12], check=True).stdout.strip() == ids[0]
    finally:
        sandboxer("rm", *ids, check=True)


def test_system_prune_removes_exited_records_logs_and_leftovers() -> None:
    import json

    from sandboxer.state import state_root

    keep = _name("keep")
    gone = _name("gone")
    sandboxer("run", "-d", "--name", keep, "--", "sleep", "3333.4", check=True)
    sandboxer("run", "-d", "--name", gone, "--", "echo", "bye", check=True)
    sandboxer("wait", gone, check=True)
    record = next(r for r in json.loads(_ps("-a", "--format", "json")) if r["name"] == gone)
    crashed = os.path.join(state_root(), "ab" * 32)  # a state dir whose sandbox crashed: no lock holder
    os.makedirs(os.path.join(crashed, "scratch"))
    open(os.path.join(crashed, "lock"), "w").close()
    try:
        out = sandboxer("system", "prune", check=True).stdout
        assert f"removed sandbox {record['id'][:12]}" in out and "removed leftovers of crashed sandbox abab" in out
        assert not os.path.exists(record["log"]) and not os.path.exists(crashed)
        names = [r["name"] for r in json.loads(_ps("-a", "--format", "json"))]
        assert keep in names and gone not in names
        assert sandboxer("system", "nonsense").returncode == 125
    finally:
        sandboxer("rm", "-f", keep, check=True)


def test_a_reused_pid_is_never_signalled() -> None:
    """A sandbox still holding its state (its lock) whose recorded PIDs now belong to a stranger:
    stop, kill and rm -f never signal the stranger."""
    import fcntl
    import json
    import threading

    from sandboxer.procfs import start_time
    from sandboxer.state import state_root

    stranger = subprocess.Popen(["sleep", "3333.0313"])
    sid = "5e" + os.urandom(31).hex()
    records = os.path.join(state_root(), "records")
    os.makedirs(records, exist_ok=True)
    started = start_time(stranger.pid)
    assert started is not None
    with open(os.path.join(records, f"{sid}.json"), "w") as f:
        json.dump({"id": sid, "name": None, "command": ["sleep"], "status": "running", "started_at": time.time(),
                   "log": os.path.join(records, f"{sid}.log"), "supervisor_pid": stranger.pid,
                   "supervisor_start": started - 1, "pid": stranger.pid, "pid_start": started - 1}, f)
    state = os.path.join(state_root(), sid)
    os.mkdir(state)
    lock = os.open(os.path.join(state, "lock"), os.O_RDWR | os.O_CREAT)
    fcntl.flock(lock, fcntl.LOCK_EX)  # the sandbox "lives" (its lock is held) until we let go
    release = threading.Timer(1.5, os.close, (lock,))
    release.start()
    try:
        assert "Up " in _ps()
        sandboxer("kill", "-s", "TERM", sid[:12])
        sandboxer("stop", "-t", "0", sid[:12], check=True)
        sandboxer("rm", "-f", sid[:12], check=True)
        assert stranger.poll() is None
    finally:
        release.join()
        stranger.kill()
        stranger.wait()
        sandboxer("gc")


@pytest.fixture(scope="module")
def busybox(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    with busybox_store(tmp_path_factory) as root:
        yield root


@needs_subids
def test_exec_cp_top_and_tty_in_an_image_without_python(busybox: Path, home_tmp: str) -> None:
    """An image's root has no Python: whatever runs after joining its mount namespace imports nothing."""
    from test_tty import Terminal

    name = _name("img")
    sandboxer("run", "-d", "--name", name, "sandboxer-test/busybox", "sh", "-c",
              "echo ready > /tmp/ready; sleep 3333.21", check=True)
    try:
        _wait_for_exec(name, "test", "-e", "/tmp/ready")
        p = sandboxer("exec", "-u", "tester", name, "sh", "-c", "id -u; echo $HOME; grep Seccomp: /proc/self/status",
                      check=True)
        assert p.stdout.split() == ["1000", "/home/tester", "Seccomp:", "2"]
        with open(os.path.join(home_tmp, "in.txt"), "w") as f:
            f.write("to the image")
        sandboxer("cp", os.path.join(home_tmp, "in.txt"), f"{name}:/home/tester/", check=True)
        assert sandboxer("exec", name, "cat", "/home/tester/in.txt", check=True).stdout == "to the image"
        sandboxer("cp", f"{name}:/tmp/ready", os.path.join(home_tmp, "out.txt"), check=True)
        with open(os.path.join(home_tmp, "out.txt")) as f:
            assert f.read() == "ready\n"
        assert "sleep 3333.21" in sandboxer("top", name, check=True).stdout
        t = Terminal("exec", "-t", name, "sh", "-c", "tty; stty size", rows=20, cols=70)
        assert t.wait() == 0 and b"/dev/pts/0" in t.output and b"20 70" in t.output
        # as an installed sandboxer starts: no site hooks that import half the library beforehand
        # (the test venv's editable-install finder imports warnings, which os.execvpe needs); and
        # asking whether NAME is an OCI container must not load the OCI spec's dataclasses (~25 ms), nor
        # reading the record json (re, enum: ~8 ms; sandboxer.jsonc), nor the set-up's mounts and planning
        # (sandboxer.runtime.process: ~2.5 ms)
        import site
        import sys

        code = ("import sys, atexit; from sandboxer.cli import main; assert 'warnings' not in sys.modules; "
                "atexit.register(lambda: print(*sorted({'sandboxer.oci.spec', 'dataclasses', 'typing', 'json', 're', "
                "'enum', 'ctypes', 'collections', 'sandboxer.runtime.init', 'sandboxer.runtime.plan', "
                "'sandboxer.runtime.mounts'} & "
                "set(sys.modules)), file=sys.stderr)); sys.exit(main(sys.argv[1:]))")
        env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(Path(__file__).resolve().parent.parent),
                                                            *site.getsitepackages()])}
        for _ in range(2):  # the first in a new environment may scan the installed entry points, once
            bare = subprocess.run([sys.executable, "-S", "-c", code, "exec", name, "sh", "-c", "echo bare"],
                                  env=env, capture_output=True, text=True, timeout=60)
        assert bare.returncode == 0 and bare.stdout == "bare\n", bare.stderr
        assert bare.stderr == "" or bare.stderr == "\n", bare.stderr
    finally:
        sandboxer("rm", "-f", name, check=True)


def test_a_state_dir_abandoned_mid_creation_is_collected_at_once() -> None:
    """A CLI killed between creating a sandbox's state dir and renaming it into place: its lock is
    free, so the next garbage collection removes it without waiting out the grace period."""
    from sandboxer.state import collect_garbage, state_root

    building = os.path.join(state_root(), ".building-" + os.urandom(32).hex())
    os.makedirs(os.path.join(building, "scratch"))
    open(os.path.join(building, "lock"), "w").close()
    fresh = os.path.join(state_root(), ".building-" + os.urandom(32).hex())
    os.mkdir(fresh)  # no lock yet: a creator may be an instant from taking it
    dead = subprocess.Popen(["true"])
    dead.wait()
    orphan = os.path.join(state_root(), f".building-{os.urandom(32).hex()}.{dead.pid}")
    os.mkdir(orphan)  # no lock yet, but the creator it names is gone: killed before locking
    live = subprocess.Popen(["sleep", "60"])
    creating = os.path.join(state_root(), f".building-{os.urandom(32).hex()}.{live.pid}")
    os.mkdir(creating)  # its creator lives: kept
    reused = os.path.join(state_root(), f".building-{os.urandom(32).hex()}.{live.pid}")
    os.mkdir(reused)
    os.utime(reused, (time.time() - 10, time.time() - 10))  # made before its PID's process started, in the grace
    try:
        collect_garbage()
        assert not os.path.exists(building) and os.path.exists(fresh) and os.path.exists(creating)
        assert not os.path.exists(orphan) and not os.path.exists(reused)
    finally:
        live.kill()
        live.wait()
        os.rmdir(fresh)
        os.rmdir(creating)


def test_a_record_write_cut_short_by_sigkill_is_cleaned_up() -> None:
    """A supervisor killed between writing ``ID.json.PID.tmp`` and its rename leaves the temporary file;
    the next listing removes it once its writer is gone (and leaves a live writer's alone)."""
    from sandboxer.state import state_root

    records = Path(state_root(), "records")
    records.mkdir(exist_ok=True)
    dead = subprocess.Popen(["true"])
    dead.wait()
    stale = records / f"{'ab' * 32}.json.{dead.pid}.tmp"
    live = records / f"{'cd' * 32}.json.{os.getpid()}.tmp"
    stale.write_text("{")
    live.write_text("{")
    try:
        sandboxer("ps", "-a", check=True)
        assert not stale.exists()
        assert live.exists()
    finally:
        for path in (stale, live):
            path.unlink(missing_ok=True)
