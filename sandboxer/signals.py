"""The ``signal`` module's functions and constants, without its enums.

``import signal`` builds three ``IntEnum`` classes (``Signals``, ``Handlers``,
``Sigmasks``), which loads ``enum``, ``functools`` and ``collections``: ~6 ms
here, a tenth of ``sandboxer run -- true`` and more of ``exec``.  The C
module underneath it, ``_signal``, has the same functions and constants as
plain ints, which is all the runtime needs; only naming a signal for a
message wants the enum, and :func:`name` loads it then.
"""

from __future__ import annotations

TYPE_CHECKING = False
if TYPE_CHECKING:  # typeshed describes the public module; the names and signatures are the same
    from signal import *  # noqa: F403
else:
    try:
        from _signal import *  # noqa: F403
    except ImportError:  # an interpreter without CPython's C module
        from signal import *  # noqa: F403


def send(pid: int, signum: int) -> bool:
    """``os.kill`` that takes a process already gone for an answer (False), not an error."""
    import os

    try:
        os.kill(pid, signum)
    except ProcessLookupError:
        return False
    return True


def name(signum: int) -> str:
    """``SIGKILL`` for 9; ``signal 77`` for a number no signal has."""
    import signal

    try:
        return signal.Signals(signum).name
    except ValueError:
        return f"signal {signum}"

