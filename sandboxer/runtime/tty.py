"""``-t``: give the workload a pseudo-terminal and relay it to ours.

Our terminal goes into raw mode so that Ctrl-C, Ctrl-Z and friends reach
the sandbox's line discipline as bytes and become signals *there*, for the
sandbox's foreground job — exactly as in a local terminal.  Window size
follows ours on every SIGWINCH.
"""

from __future__ import annotations

import errno
import fcntl
import os
import select
import struct
import sys
import termios
import tty as _tty

from .. import signals
from .sync import write_all

__all__ = ["open_pty", "relay", "send_console", "size_like_ours"]


def _copy_winsize(src: int, dst: int) -> None:
    try:
        size = fcntl.ioctl(src, termios.TIOCGWINSZ, b"\0" * 8)
        fcntl.ioctl(dst, termios.TIOCSWINSZ, size)
    except OSError:
        pass


def open_pty() -> tuple[int, int]:
    """A (master, slave) pair sized like our terminal (80x24 without one)."""
    master, slave = os.openpty()
    size_like_ours(master)
    return master, slave


def size_like_ours(master: int) -> None:
    """Give a pty our terminal's window size (80x24 without one)."""
    if os.isatty(sys.stdout.fileno()):
        _copy_winsize(sys.stdout.fileno(), master)
    else:
        fcntl.ioctl(master, termios.TIOCSWINSZ, struct.pack("HHHH", 24, 80, 0, 0))


def send_console(path: str, master: int) -> None:
    """Hand the pty master to whoever listens on the unix socket ``path`` (OCI ``--console-socket``).

    As runc does: one message whose data is the terminal's name and whose SCM_RIGHTS carry the fd.
    """
    import socket

    from ..errors import SetupError

    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
            sock.connect(path)
            socket.send_fds(sock, [b"/dev/ptmx"], [master])
    except OSError as e:
        raise SetupError(f"send the terminal to {path}", e.strerror or str(e),
                         hint="--console-socket must name a listening unix socket") from e


def relay(master: int, forward_input: bool = True) -> None:
    """Copy stdin → master and master → stdout until the workload closes the pty.

    Without ``forward_input`` (``exec -t`` without ``-i``) our stdin is left alone.
    """
    stdin, stdout = sys.stdin.fileno(), sys.stdout.fileno()
    saved = None
    if forward_input and os.isatty(stdin):
        saved = termios.tcgetattr(stdin)
        _tty.setraw(stdin)
    old_winch = signals.signal(signals.SIGWINCH, lambda *_: _copy_winsize(stdout, master))
    inputs = [master, stdin] if forward_input else [master]
    try:
        while True:
            try:
                ready, _, _ = select.select(inputs, [], [])
            except InterruptedError:
                continue
            if master in ready:
                try:
                    data = os.read(master, 65536)
                except OSError as e:
                    if e.errno != errno.EIO:
                        raise
                    data = b""
                if not data:
                    return  # every copy of the slave is closed: the sandbox ended
                write_all(stdout, data)
            if stdin in ready:
                try:
                    data = os.read(stdin, 65536)
                except OSError:  # our terminal hung up
                    data = b""
                if data:
                    write_all(master, data)
                else:
                    inputs.remove(stdin)
                    write_all(master, b"\x04")  # end of input, as a terminal's ^D
    finally:
        signals.signal(signals.SIGWINCH, old_winch)
        if saved is not None:
            termios.tcsetattr(stdin, termios.TCSADRAIN, saved)
