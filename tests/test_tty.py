"""``sandboxer run -t``: a terminal inside that behaves like the one outside."""

from __future__ import annotations

import fcntl
import os
import pty
import select
import struct
import subprocess
import termios
import time

from conftest import SANDBOXER


class Terminal:
    """Run ``sandboxer ARGS`` on a fresh pseudo-terminal of a given size."""

    def __init__(self, *args: str, rows: int = 30, cols: int = 100) -> None:
        self.pid, self.fd = pty.fork()
        if self.pid == 0:  # pragma: no cover - child
            os.execv(SANDBOXER[0], [*SANDBOXER, *args])
        fcntl.ioctl(self.fd, termios.TIOCSWINSZ, struct.pack("HHHH", rows, cols, 0, 0))
        self.output = b""

    def read_until(self, needle: bytes, timeout: float = 10) -> bytes:
        deadline = time.monotonic() + timeout
        while needle not in self.output:
            left = deadline - time.monotonic()
            if left <= 0:
                raise AssertionError(f"{needle!r} not seen; output so far: {self.output!r}")
            ready, _, _ = select.select([self.fd], [], [], left)
            if ready:
                try:
                    chunk = os.read(self.fd, 4096)
                except OSError:
                    chunk = b""
                if not chunk:
                    raise AssertionError(f"terminal closed before {needle!r}: {self.output!r}")
                self.output += chunk
        return self.output

    def send(self, data: bytes) -> None:
        os.write(self.fd, data)

    def wait(self, timeout: float = 10) -> int:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            ready, _, _ = select.select([self.fd], [], [], 0.05)
            if ready:
                try:
                    self.output += os.read(self.fd, 4096)
                except OSError:
                    pass
            pid, status = os.waitpid(self.pid, os.WNOHANG)
            if pid:
                os.close(self.fd)
                return os.waitstatus_to_exitcode(status)
        os.kill(self.pid, 9)
        os.waitpid(self.pid, 0)
        raise AssertionError(f"sandboxer did not exit; output: {self.output!r}")


def test_tty_has_our_window_size_and_is_a_terminal() -> None:
    t = Terminal("run", "-t", "--", "sh", "-c", "stty size; test -t 0 && echo is-a-tty; tty")
    assert t.wait() == 0
    out = t.output.decode()
    assert "30 100" in out
    assert "is-a-tty" in out
    assert "/dev/" in out


def test_ctrl_c_reaches_the_foreground_job_inside() -> None:
    t = Terminal("run", "-it", "--", "sh", "-c",
                 "trap 'echo caught-int; exit 7' INT; echo ready; while :; do sleep 0.05; done")
    t.read_until(b"ready")
    t.send(b"\x03")
    t.read_until(b"caught-int")
    assert t.wait() == 7


def test_ctrl_z_stops_a_job_of_the_shell_inside() -> None:
    t = Terminal("run", "-it", "--", "bash", "--norc", "--noprofile", "-i")
    t.read_until(b"# ")  # root's prompt
    t.send(b"sleep 30\n")
    time.sleep(0.3)
    t.send(b"\x1a")
    t.read_until(b"Stopped")
    t.send(b"kill -9 %1\n")
    t.send(b"sleep 0.3; jobs; exit 3\n")  # jobs collects the killed job, so exit is allowed
    t.read_until(b"Killed")
    assert t.wait() == 3


def test_ctrl_z_on_an_init_s_workload_does_not_wedge_the_run() -> None:
    """No shell inside resumes a stopped foreground job: under --init, Ctrl-Z is ignored (as by a PID 1
    without --init), and the Ctrl-C that follows still ends the command."""
    t = Terminal("run", "-it", "--init", "--", "sh", "-c", "trap 'echo caught-int; exit 7' INT; echo ready; sleep 30")
    t.read_until(b"ready")
    time.sleep(0.3)  # the shell waits on sleep: Ctrl-Z stops both, the job to resume is the group
    t.send(b"\x1a")
    time.sleep(0.3)
    t.send(b"\x03")
    t.read_until(b"caught-int")
    assert t.wait() == 7


def test_window_size_follows_ours() -> None:
    t = Terminal("run", "-it", "--", "sh", "-c", "echo ready; read x; stty size", rows=30, cols=100)
    t.read_until(b"ready")
    fcntl.ioctl(t.fd, termios.TIOCSWINSZ, struct.pack("HHHH", 40, 120, 0, 0))
    # the kernel signals the sandboxer process group; our relay copies the size
    time.sleep(0.2)
    t.send(b"go\n")
    assert t.wait() == 0
    assert b"40 120" in t.output


# --- without -t: the caller's terminal is out of the sandbox's reach ---------------------------------

_TIOCSTI = ("import fcntl, termios\n"
            "for what, open_ in (('tty', lambda: open('/dev/tty', 'wb', 0)),\n"
            "                    ('stdout', lambda: open(1, 'wb', 0, closefd=False))):\n"
            "    try:\n"
            "        fcntl.ioctl(open_(), termios.TIOCSTI, b'#')\n"
            "        print(what, 'INJECTED', flush=True)\n"
            "    except OSError as e:\n"
            "        print(what, 'refused', e.errno, flush=True)\n")


def test_without_a_tty_of_its_own_the_sandbox_cannot_type_into_ours() -> None:
    """Our terminal is the sandbox's stdout here, but not its controlling terminal (a session of its own,
    as runc's init makes): /dev/tty opens nothing and TIOCSTI, which would type into the shell that
    started us, is refused.  Ctrl-C still reaches the command, through sandboxer."""
    for how in (["run", "--", "python3", "-c", _TIOCSTI], ["run", "--init", "--", "python3", "-c", _TIOCSTI]):
        t = Terminal(*how)
        assert t.wait() == 0, t.output
        out = t.output.decode()
        assert "INJECTED" not in out and out.count("refused") == 2, out
    name = f"tiocsti-{os.getpid()}"
    subprocess.run([*SANDBOXER, "run", "-d", "--name", name, "--", "sleep", "3333.4375"], check=True,
                   capture_output=True, timeout=60)
    try:  # exec without -t: the same
        t = Terminal("exec", name, "python3", "-c", _TIOCSTI)
        assert t.wait() == 0, t.output
        assert "INJECTED" not in t.output.decode() and t.output.decode().count("refused") == 2, t.output
    finally:
        subprocess.run([*SANDBOXER, "rm", "-f", name], capture_output=True, timeout=60)
    t = Terminal("run", "--", "sh", "-c",
                 "trap 'echo caught-int; exit 7' INT; echo ready; while :; do sleep 0.05; done")
    t.read_until(b"ready")
    t.send(b"\x03")  # the terminal signals sandboxer's group; sandboxer forwards it to PID 1
    t.read_until(b"caught-int")
    assert t.wait() == 7


def test_tty_without_i_does_not_forward_our_input() -> None:
    """``-t`` alone gives a terminal but not our keystrokes (docker's meaning); ``-it`` gives both."""
    probe = "import select; print('got-input' if select.select([0], [], [], 1.5)[0] else 'no-input')"
    for flags, expected in (("-t", b"no-input"), ("-it", b"got-input")):
        t = Terminal("run", flags, "--", "python3", "-c", probe)
        time.sleep(0.5)
        t.send(b"typed\r")
        t.read_until(expected)
        assert t.wait() == 0
