"""What ``/proc`` says about a process: its state, start time and status fields.

A PID alone names a process only while it lives; with its start time it
names it for good, so records keep both and never signal, join or report
a stranger that reused the number.
"""

from __future__ import annotations

__all__ = ["start_time", "state", "status", "same_process"]


def _stat_fields(pid: int) -> list[str]:
    """``/proc/PID/stat`` after the command name: the state is [0], the start time [19]; [] if gone."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rpartition(")")[2].split()
    except OSError:
        return []


def start_time(pid: int) -> int | None:
    """When ``pid`` started, in clock ticks since boot (None: no such process)."""
    fields = _stat_fields(pid)
    return int(fields[19]) if len(fields) > 19 else None


def state(pid: int) -> str | None:
    """``R``, ``S``, ``Z`` (a zombie)…, or None if there is no such process."""
    fields = _stat_fields(pid)
    return fields[0] if fields else None


def same_process(pid: int, started: int | None) -> bool:
    """``pid`` is still the process that started at ``started`` and has not exited (a zombie has)."""
    fields = _stat_fields(pid)
    return len(fields) > 19 and fields[0] not in ("Z", "X") and (started is None or int(fields[19]) == started)


def status(pid: int) -> dict[str, str]:
    """``/proc/PID/status`` as a dict ({} if gone)."""
    out = {}
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                key, _, value = line.partition(":")
                out[key] = value.strip()
    except OSError:
        return {}
    return out
