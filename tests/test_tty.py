"""``sandboxer run -t``: a terminal inside that behaves like the one outside."""

from __future__ import annotations

import fcntl
import os
import pty
import select
import struct
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


def test_window_size_follows_ours() -> None:
    t = Terminal("run", "-it", "--", "sh", "-c", "echo ready; read x; stty size", rows=30, cols=100)
    t.read_until(b"ready")
    fcntl.ioctl(t.fd, termios.TIOCSWINSZ, struct.pack("HHHH", 40, 120, 0, 0))
    # the kernel signals the sandboxer process group; our relay copies the size
    time.sleep(0.2)
    t.send(b"go\n")
    assert t.wait() == 0
    assert b"40 120" in t.output
