"""sandboxer.runtime.process: the user's signals while a sandbox is set up."""

from __future__ import annotations

import os
import signal

import pytest

from sandboxer.runtime.process import SignalProxy


def test_a_signal_during_set_up_is_held_for_pid_1_and_the_same_again_gives_up() -> None:
    """Once: kept for PID 1 (a set-up of milliseconds must not be cut by a stray Ctrl-C).  Ctrl-C twice
    before PID 1 exists (a set-up stuck on something): KeyboardInterrupt, so the caller kills what it
    started — before, every Ctrl-C was queued, and only SIGKILL ended a stuck exec.  Other signals are
    only ever held: a detached sandbox's supervisor must survive two stops during its set-up."""
    proxy = SignalProxy()
    try:
        os.kill(os.getpid(), signal.SIGTERM)
        os.kill(os.getpid(), signal.SIGTERM)  # a supervisor's stop, twice: both are PID 1's
        assert proxy.pending == [signal.SIGTERM, signal.SIGTERM]
        os.kill(os.getpid(), signal.SIGINT)  # Ctrl-C once is held too
        assert proxy.pending == [signal.SIGTERM, signal.SIGTERM, signal.SIGINT]
        with pytest.raises(KeyboardInterrupt, match="SIGINT"):
            os.kill(os.getpid(), signal.SIGINT)
    finally:
        proxy.restore()
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler
