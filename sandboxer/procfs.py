"""What ``/proc`` says about a process: its state, start time and status fields.

A PID alone names a process only while it lives; with its start time it
names it for good, so records keep both and never signal, join or report
a stranger that reused the number.
"""

from __future__ import annotations

__all__ = ["start_time", "state", "status", "same_process", "writer_gone", "pid_namespace_members", "describe",
           "printable", "cgroup"]


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


def writer_gone(pid: int, age: float) -> bool:
    """The process ``pid`` named in a file it was writing, last written ``age`` seconds ago, is gone:
    no process has that PID, or the one that has it started after that write (the PID was reused),
    so it cannot be the writer."""
    import os
    import time

    started = start_time(pid)
    if started is None:
        return True
    running_for = time.clock_gettime(time.CLOCK_BOOTTIME) - started / os.sysconf("SC_CLK_TCK")
    return running_for < age - 1.0  # a second's slack for the clock-tick rounding of the start time


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


def cgroup(pid: int | str) -> str | None:
    """The cgroup v2 path of ``pid`` (``self`` works too), as its ``0::`` line names it; None if gone
    or the host has no unified hierarchy."""
    try:
        with open(f"/proc/{pid}/cgroup") as f:
            return next((line[3:].rstrip("\n") for line in f if line.startswith("0::")), None)
    except OSError:
        return None


def pid_namespace_members(pid: int) -> list[int]:
    """Every process in the PID namespace of ``pid`` (as host PIDs, ascending)."""
    import os

    try:
        want = os.stat(f"/proc/{pid}/ns/pid").st_ino
    except OSError:
        return []
    out = []
    for entry in os.listdir("/proc"):
        if entry.isdecimal():
            try:
                if os.stat(f"/proc/{entry}/ns/pid").st_ino == want:
                    out.append(int(entry))
            except OSError:
                continue  # gone, or not ours to look at
    return sorted(out)


def describe(pid: int) -> dict[str, str] | None:
    """``ps``-like facts of one process: Uid (host), PPid, NSpid (innermost), State, Time, Cmd."""
    import os

    facts = status(pid)
    fields = _stat_fields(pid)
    if not facts or len(fields) < 13:
        return None
    ticks = (int(fields[11]) + int(fields[12])) // os.sysconf("SC_CLK_TCK")
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            cmd = f.read().rstrip(b"\0").replace(b"\0", b" ").decode(errors="replace")
    except OSError:
        cmd = ""
    return {"Uid": facts.get("Uid", "").split("\t")[0], "PPid": facts.get("PPid", ""),
            "NSpid": facts.get("NSpid", "").split()[-1] if facts.get("NSpid") else "",
            "State": fields[0], "Time": f"{ticks // 3600:02d}:{ticks // 60 % 60:02d}:{ticks % 60:02d}",
            "Cmd": printable(cmd or f"[{facts.get('Name', '')}]")}


def printable(text: str) -> str:
    """``text`` with what a terminal would act on (escapes, newlines, bidi overrides) shown as ``?``, as
    ``ps`` does: a sandbox's processes name themselves, and ``top`` prints the names to the user."""
    return text if text.isprintable() else "".join(c if c.isprintable() else "?" for c in text)
