"""Detached sandboxes: a supervisor process per sandbox, and the records ``ps``/``logs``/``stop`` read.

``run -d`` forks twice: the supervisor (a new session, reparented to init,
so SIGKILLing the CLI does not touch it) runs the sandbox exactly as
``run`` does — the same launcher, so it forwards SIGTERM/SIGINT/SIGHUP to
PID 1 and takes the whole sandbox down with it if it dies — relaying its
stdout and stderr into a log (:mod:`.logfile`), and writes the outcome into
the sandbox's record.  Records live in ``<state root>/records/<id>.json``
and outlive the sandbox until ``rm``; they keep the run options, so that
``restart`` can plan the sandbox again under the same id.  A record that
says "running" while no process of the sandbox holds its state lock (and
its supervisor, known by PID and start time, is gone) is marked exited
("supervisor lost") and its leftovers are collected.
"""

from __future__ import annotations

import os
import time

from . import jsonc, signals
from .errors import SandboxerError, UsageError
from .logfile import DEFAULT_MAX_SIZE, LogWriter, pump
from .procfs import cgroup, same_process, start_time
from .procfs import status as procfs_status
from .state import stale_temporary, state_root, subdir, unlink_quiet, write_atomically

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Callable
    from typing import Any

    from .runtime.plan import Plan
    from .runtime.process import ExitStatus
    from .sandbox import SandboxOptions

__all__ = ["detach", "spawn", "Answer", "records", "find", "refresh", "stop", "restart", "remove", "wait",
           "inspect", "log_path", "claim_name_check", "prune", "signal_process", "status_text"]


def _records_dir() -> str:
    return subdir("records")


def log_path(sandbox_id: str) -> str:
    return os.path.join(_records_dir(), f"{sandbox_id}.log")


def _write(record: dict[str, Any]) -> None:
    path = os.path.join(_records_dir(), f"{record['id']}.json")
    write_atomically(path, jsonc.dumps(record))


def _read(sandbox_id: str) -> dict[str, Any] | None:
    try:
        with open(os.path.join(_records_dir(), f"{sandbox_id}.json")) as f:
            record: dict[str, Any] = jsonc.loads(f.read())
    except (OSError, ValueError):
        return None
    if record.get("status") == "running" and not _alive(record):
        _lost(record)
    return record


def _lost(record: dict[str, Any]) -> None:
    """A record says running but no process of its sandbox is left: say it exited, for good, and
    remove what the crash left behind (its state directory, and on a user-defined network its lease and
    published host ports; its processes died with the supervisor)."""
    from .network import USER_DEFINED, mode_of
    from .state import collect_garbage

    record.update(status="exited", reason="supervisor lost", error="the supervisor was killed before the sandbox ended",
                  finished_at=record.get("finished_at") or time.time())
    try:
        _write(record)
        collect_garbage()
        if mode_of(str((record.get("network") or {}).get("Mode", "none"))) is USER_DEFINED:
            from .network.networks import prune_leases

            prune_leases()
    except (OSError, SandboxerError):
        pass  # reported as exited all the same


def _alive(record: dict[str, Any]) -> bool:
    """Some process of the sandbox holds its state lock — or the supervisor is still writing the
    outcome, between releasing the sandbox's state and its last record."""
    from .state import is_alive

    if is_alive(os.path.join(state_root(), record["id"])):
        return True
    # a zombie has written nothing more (its parent may be slow to reap it)
    return same_process(int(record.get("supervisor_pid") or 0), record.get("supervisor_start"))


def records(all_: bool = False) -> list[dict[str, Any]]:
    """Records of this user's detached sandboxes, newest first (running ones only unless ``all_``)."""
    out = []
    for entry in os.listdir(_records_dir()):
        if entry.endswith(".tmp"):
            path = os.path.join(_records_dir(), entry)
            if stale_temporary(path):
                unlink_quiet(path)
        elif entry.endswith(".json"):
            record = _read(entry[:-5])
            if record is not None and (all_ or record["status"] == "running"):
                out.append(record)
    return sorted(out, key=lambda r: -float(r.get("started_at", 0)))


def find(name_or_id: str) -> dict[str, Any]:
    """A record by name (a running one first) or by an id prefix, as short as is unambiguous."""
    candidates = records(all_=True)
    named = [r for r in candidates if r.get("name") == name_or_id]
    if named:
        return next((r for r in named if r["status"] == "running"), named[0])
    hex_digits = bool(name_or_id) and all(c in "0123456789abcdef" for c in name_or_id)
    matches = [r for r in candidates if r["id"].startswith(name_or_id)] if hex_digits else []
    if len(matches) == 1:
        return matches[0]
    if matches:
        raise UsageError(f"{name_or_id!r} matches {len(matches)} sandboxes", hint="give more of the id")
    raise UsageError(f"no such sandbox: {name_or_id}", hint="see 'sandboxer ps -a'")


def claim_name_check(name: str) -> None:
    """Names are unique per user among detached sandboxes, exited ones included (``logs NAME`` must
    mean one sandbox); a running one is refused again, atomically, when its state claims the name."""
    for record in records(all_=True):
        if record.get("name") == name:
            raise UsageError(f"the name {name!r} is in use by sandbox {record['id'][:12]} ({record['status']})",
                             hint=f"remove it first: sandboxer rm {'-f ' if record['status'] == 'running' else ''}"
                                  f"{name}")


def detach(plan: Plan, opts: SandboxOptions, log_max_size: int = DEFAULT_MAX_SIZE, restarts: int = 0,
           timeout: float | None = None) -> str:
    """Start the sandbox of ``plan`` (made from ``opts``) under a supervisor of its own; returns once
    PID 1 runs (or failed).  The record keeps ``opts``, so that ``restart`` can plan it again.
    ``timeout``: seconds after which the supervisor kills the sandbox (recorded as reason "timeout")."""
    image = opts.image if isinstance(opts.image, str) else None
    argv = plan.args
    record = {"id": plan.id, "name": plan.name, "command": argv, "image": image, "status": "running",
              "started_at": time.time(), "exit_code": None, "signal": None, "reason": None, "error": "",
              "oom_killed": False, "timeout": timeout, "log": log_path(plan.id),
              "log_max_size": log_max_size, "restarts": restarts,
              "options": {**opts._asdict(), "volumes": [list(v) for v in opts.volumes], "image": image},
              "config": {"Cmd": argv, "Env": list(plan.env), "WorkingDir": plan.cwd, "User": opts.user or "",
                         "Hostname": plan.hostname, "Image": image or "", "Timeout": timeout or 0},
              "graph": _graph_driver(plan), "mounts": _mounts(plan), "network": _network(plan)}

    def body(ready_w: int) -> int:
        null = os.open("/dev/null", os.O_RDWR)
        for fd in (0, 1, 2):  # the CLI's stdio may be a pipe someone waits on to close
            os.dup2(null, fd)
        return _supervise(plan, argv, record, ready_w)

    spawn(body, "start the detached sandbox")
    return plan.id


def spawn(body: Callable[[int], int], step: str, close: tuple[int, ...] = ()) -> str:
    """Run ``body(ready_w)`` in a supervisor: a new session, reparented to init, so that killing
    the caller does not touch it.  Returns the supervisor's one answer on ``ready_w`` ("ok…"),
    or raises its ``error\tMESSAGE\tHINT`` as a :class:`SetupError` naming ``step``.
    ``close``: the caller's descriptors the supervisor must not keep (locks of the caller's own).
    """
    ready_r, ready_w = os.pipe()
    pid = os.fork()
    if pid == 0:  # pragma: no cover - the intermediate child and the supervisor
        code = 1
        try:
            os.close(ready_r)
            for fd in close:
                os.close(fd)
            os.setsid()
            if os.fork() != 0:
                os._exit(0)
            from .syscalls import close_inherited

            close_inherited()  # a caller's pipe held open by a long-lived supervisor would never see EOF
            code = body(ready_w)
        finally:
            os._exit(code)
    os.close(ready_w)
    os.waitpid(pid, 0)
    # one answer, not end of file: the sandbox's own processes inherit the pipe
    answer = os.read(ready_r, 4096).decode(errors="replace")
    os.close(ready_r)
    if not answer:
        answer = "error\tthe supervisor died before the sandbox started\t"
    if answer.startswith("error\t"):
        _, message, hint = [*answer.split("\t"), "", ""][:3]
        from .errors import SetupError

        raise SetupError(step, message, hint or None)
    return answer


def _graph_driver(plan: Plan) -> dict[str, Any]:
    """The snapshotter's directories, docker's GraphDriver: the writable ones live in the sandbox's
    private scratch tmpfs (its mount namespace), so only LowerDir is a host path; MergedDir is the
    sandbox's root as the host reaches it while it runs (``/proc/PID/root``), filled in by inspect."""
    lowers = list(plan.rootfs.lowers) or ([plan.rootfs.path] if plan.rootfs.path else [])
    if plan.snapshotter is None:
        return {"Name": "none", "Data": {"LowerDir": ":".join(lowers)}}
    layers = plan.upper_dir or os.path.join(plan.state.path, "scratch", "layers")
    return {"Name": plan.snapshotter.name,
            "Data": {"LowerDir": ":".join(lowers), "UpperDir": os.path.join(layers, "upper"),
                     "WorkDir": os.path.join(layers, "work")}}


def _mounts(plan: Plan) -> list[dict[str, Any]]:
    from .syscalls import MS_BIND, MS_RDONLY

    return [{"Type": "bind" if m.flags & MS_BIND else m.fstype, "Source": m.source, "Destination": m.destination,
             "RW": not (m.flags & MS_RDONLY or m.recursive_ro), "Options": m.data}
            for m in plan.mounts]


def _network(plan: Plan) -> dict[str, Any]:
    spec = plan.network
    if spec is None or spec.stack is None:
        return {"Mode": spec.mode if spec is not None else "none", "IPAddress": "", "Gateway": "", "Dns": [],
                "ExtraHosts": []}
    extra_hosts = [f"{n}:{ip}" for n, ip in spec.add_hosts]
    if spec.stack == "bridge":  # the address and gateway are its lease's: inspect fills them in while it runs
        return {"Mode": spec.mode, "IPAddress": "", "Gateway": "", "Dns": list(spec.dns), "ExtraHosts": extra_hosts}
    from .network import DNS_ADDRESS, GUEST_ADDRESS, HOST_GATEWAY

    return {"Mode": spec.mode, "IPAddress": GUEST_ADDRESS, "Gateway": HOST_GATEWAY,  # pasta's and slirp4netns's
            "Dns": list(spec.dns) or [DNS_ADDRESS], "ExtraHosts": extra_hosts,
            "AllowHostLoopback": spec.allow_host_loopback}


class _Output:
    """The workload's stdout and stderr: pipes the supervisor relays into the log (see :mod:`.logfile`)."""

    def __init__(self, path: str, max_size: int) -> None:
        out_r, out_w = os.pipe2(os.O_CLOEXEC)
        err_r, err_w = os.pipe2(os.O_CLOEXEC)
        self.sources = {out_r: 1, err_r: 2}
        self.ends = [os.open("/dev/null", os.O_RDONLY | os.O_CLOEXEC), out_w, err_w]
        self.writer = LogWriter(path, max_size)

    @property
    def stdio(self) -> tuple[int, int, int]:
        null, out_w, err_w = self.ends
        return null, out_w, err_w

    def pump(self, status_fd: int, deadline: float | None) -> None:
        pump(self.writer, self.sources, until=status_fd, deadline=deadline)

    def close_ends(self) -> None:
        """Our copies of the workload's ends: once closed, end of file means every writer is gone."""
        for fd in self.ends:
            os.close(fd)
        self.ends = []

    def drain(self) -> None:
        """Everything still in the pipes, up to end of file (or a generous deadline), then close."""
        if self.ends:
            self.close_ends()
        pump(self.writer, self.sources, deadline=time.monotonic() + _DRAIN_S)
        for fd in self.sources:
            os.close(fd)
        self.writer.close()


#: how long the supervisor waits for the last output after PID 1 ended (its namespace is dead by then)
_DRAIN_S = 10.0


def _supervise(plan: Plan, argv: list[str], record: dict[str, Any], ready_w: int) -> int:
    """The supervisor: run the sandbox, relay its output, tell the CLI it started, record how it ended."""
    from . import plugins
    from .errors import SandboxerError
    from .runtime.init import Workload
    from .sandbox import execute

    _shed_memory()
    record["supervisor_pid"] = os.getpid()
    record["supervisor_start"] = start_time(os.getpid())
    _write(record)
    ready = Answer(ready_w)
    output = _Output(record["log"], int(record["log_max_size"]))

    oom = _OomWatch()

    class _Watch:
        """Tells the waiting CLI as soon as the workload has started; reads the OOM count before a
        cgroup driver removes the sandbox's cgroup."""

        @plugins.hookimpl
        def sandboxer_started(self, plan: Plan, pid: int) -> None:
            from .runtime.enter import identity_of

            output.close_ends()
            record["pid"] = pid
            record["pid_start"] = start_time(pid)
            record["exec"] = identity_of(plan)  # what 'sandboxer exec' needs to run a command as the workload
            record["cgroup"] = oom.watch(pid)
            _write(record)
            ready.send("ok")

        @plugins.hookimpl(tryfirst=True)
        def sandboxer_stopped(self, plan: Plan, status: ExitStatus) -> None:
            record["oom_killed"] = oom.killed()

    plugins.register(_Watch(), name="supervisor")
    try:
        status = execute(plan, Workload(argv=argv, stdio=output.stdio, pump=output.pump), record.get("timeout"))
        record.update(status="exited", exit_code=status.code, signal=status.signal,
                      reason=_reason(status, bool(record["oom_killed"])))
    except SandboxerError as e:
        record.update(status="exited", exit_code=e.exit_code, reason="error", error=str(e))
        ready.send(f"error\t{e}\t{e.hint or ''}")
    output.drain()  # before the record says "exited": 'wait' then 'logs' shows all of it
    record["finished_at"] = time.time()
    _write(record)
    ready.send("ok")
    return 0


def _reason(status: ExitStatus, oom_killed: bool) -> str:
    """How PID 1 ended, in one word: "exit", "signal", "timeout" (killed by ``run --timeout``) or
    "oom" (SIGKILLed while its cgroup counted an OOM kill)."""
    if status.timed_out:
        return "timeout"
    if oom_killed and status.signal == signals.SIGKILL:
        return "oom"
    return "exit" if status.signal is None else "signal"


class _OomWatch:
    """OOM kills in the sandbox's own cgroup: ``oom_kill`` of its cgroup v2 ``memory.events``.

    Only when PID 1 runs in a cgroup that is not the supervisor's (a cgroup driver placed it there):
    in a shared cgroup the count is anyone's, so nothing is claimed and OOMKilled stays false.
    """

    def __init__(self) -> None:
        self.events: str | None = None
        self.before = 0

    def watch(self, pid: int) -> str:
        """Note PID 1's cgroup and its current OOM count; returns the cgroup path ("" if unknown)."""
        path = cgroup(pid)
        if path is None or path == cgroup("self"):
            return path or ""
        from .doctor import cgroup_mounts

        try:
            with open("/proc/self/mountinfo") as f:
                mount = cgroup_mounts(f.read())[0]
        except OSError:
            mount = None
        events = os.path.join(mount, path.lstrip("/"), "memory.events") if mount else None
        count = oom_kills(events) if events else None
        if count is not None:
            self.events, self.before = events, count
        return path

    def killed(self) -> bool:
        if self.events is None:
            return False
        count = oom_kills(self.events)
        return count is not None and count > self.before


def oom_kills(events: str) -> int | None:
    """The ``oom_kill`` count of a cgroup v2 ``memory.events`` file (None: no such file or field)."""
    try:
        with open(events) as f:
            return next((int(line.split()[1]) for line in f if line.startswith("oom_kill ")), None)
    except (OSError, ValueError, IndexError):
        return None


def _shed_memory() -> None:
    """The supervisor lives as long as its sandbox: keep the objects inherited from the CLI out of
    every later collection and return the C heap's free memory to the kernel.

    ``gc.freeze`` rather than ``gc.collect``: a collection walks (and so writes to) every object,
    10 ms on the way to the sandbox's start that freed a few dozen objects and left the supervisor
    and its set-up process with ~1 MB more private pages each; frozen objects are never touched
    again, so their pages stay shared."""
    import gc

    from .syscalls import malloc_trim

    gc.freeze()
    malloc_trim()


class Answer:
    """The supervisor's one message to the CLI that started it."""

    def __init__(self, fd: int) -> None:
        self.fd = fd

    def send(self, text: str) -> None:
        if self.fd < 0:
            return
        try:
            os.write(self.fd, text.encode())
        except OSError:
            pass  # the CLI is gone: nobody to tell
        os.close(self.fd)
        self.fd = -1


def stop(record: dict[str, Any], timeout: float = 10.0) -> None:
    """SIGTERM (the supervisor forwards it to PID 1), then SIGKILL to PID 1 after ``timeout`` (the
    sandbox's PID namespace dies with it; the supervisor records 137); the supervisor itself only
    if that did not end it."""
    record = refresh(record)  # PID 1 may have started since it was read
    if record["status"] != "running":
        return
    if timeout > 0:
        signal_process(record, "supervisor", signals.SIGTERM)
        if _ended(record, timeout):
            return
    if signal_process(record, "pid", signals.SIGKILL) and _ended(record, 5.0):
        return
    signal_process(refresh(record), "supervisor", signals.SIGKILL)  # it takes the sandbox along (PDEATHSIG)
    _ended(record, 30.0)


def _ended(record: dict[str, Any], seconds: float) -> bool:
    deadline = time.monotonic() + seconds
    while True:
        current = _read(record["id"])
        if current is None or current["status"] != "running":
            return True
        if time.monotonic() > deadline:
            return False
        time.sleep(0.01)


def signal_process(record: dict[str, Any], which: str, sig: int) -> bool:
    """Send ``sig`` to the sandbox's ``"supervisor"`` or PID 1 (``"pid"``) — only if that PID is still
    the process the record knows (its start time), never to one that reused the number."""
    pid = int(record.get(f"{which}_pid" if which == "supervisor" else which) or 0)
    started = record.get("supervisor_start" if which == "supervisor" else "pid_start")
    if not pid or not same_process(pid, started):
        return False
    return signals.send(pid, sig)


def inspect(record: dict[str, Any]) -> dict[str, Any]:
    """Docker-style facts about a detached sandbox, read from its record and, while it runs, from /proc."""
    running = record["status"] == "running"
    pid = int(record.get("pid") or 0) if running else 0
    if pid and not same_process(pid, record.get("pid_start")):
        pid = 0  # it is ending: what /proc would say belongs to no one, or to a stranger
    state = {"Status": record["status"], "Running": running, "Pid": pid, "ExitCode": record.get("exit_code"),
             "Signal": record.get("signal"), "OOMKilled": bool(record.get("oom_killed", False)),
             "Reason": record.get("reason") or "", "Error": record.get("error", ""),
             "StartedAt": _iso(record.get("started_at")), "FinishedAt": _iso(record.get("finished_at")),
             "SupervisorPid": record.get("supervisor_pid") if running else 0}
    graph = dict(record.get("graph") or {})
    if pid and graph:
        graph["Data"] = {**graph["Data"], "MergedDir": f"/proc/{pid}/root"}
    network = dict(record.get("network") or {})
    out: dict[str, Any] = {"Id": record["id"], "Name": record.get("name"), "Image": record.get("image"),
                           "Args": record.get("command"), "State": state, "LogPath": record.get("log"),
                           "RestartCount": record.get("restarts", 0), "Config": record.get("config", {}),
                           "GraphDriver": graph, "Mounts": record.get("mounts", []),
                           "CgroupPath": record.get("cgroup", ""), "NetworkSettings": network}
    if pid:
        from .runtime.enter import NAMESPACES

        try:
            out["Namespaces"] = {ns: os.readlink(f"/proc/{pid}/ns/{ns}") for ns in NAMESPACES}
        except OSError:
            out["Namespaces"] = {}
        out["NamespacePaths"] = {ns: f"/proc/{pid}/ns/{ns}" for ns in out["Namespaces"]}
        status = procfs_status(pid)
        out["Security"] = {k: status.get(k) for k in ("CapEff", "CapBnd", "NoNewPrivs", "Seccomp")}
        from .state import running_record

        try:
            ports = running_record(record["id"], "ports")
            attached = running_record(record["id"], "network")  # a user-defined network's address
        except UsageError:  # it ended meanwhile
            ports = attached = None
        out["Ports"] = jsonc.loads(ports) if ports else []
        network["SandboxKey"] = f"/proc/{pid}/ns/net"
        network["Ports"] = {f"{p['container_port']}/{p['proto']}": [{"HostIp": p["host_ip"],
                                                                      "HostPort": str(p["host_port"])}]
                            for p in out["Ports"]}
        if attached:
            place = jsonc.loads(attached)
            network["IPAddress"], network["Gateway"] = place["address"], place["gateway"]
            network["Networks"] = {place["network"]: {
                "IPAddress": place["address"], "IPPrefixLen": place["prefixlen"], "Gateway": place["gateway"],
                "Aliases": place["aliases"]}}
    return out


def status_text(record: dict[str, Any], now: float | None = None) -> str:
    """``ps``'s STATUS, docker's words: "Up 5 seconds", "Exited (137) 2 minutes ago" — plus how it
    ended when the code alone does not say ("timed out", "OOM killed", "SIGTERM", …)."""
    now = time.time() if now is None else now
    if record["status"] == "running":
        return f"Up {_duration(now - float(record.get('started_at') or now))}"
    code = record.get("exit_code")
    text = f"Exited ({'?' if code is None else code}) {_duration(now - float(record.get('finished_at') or now))} ago"
    reason = record.get("reason")
    if reason == "signal" and record.get("signal"):
        try:
            return f"{text}, {signals.name(int(record['signal']))}"
        except ValueError:
            return f"{text}, signal {record['signal']}"
    extra = {"timeout": "timed out", "oom": "OOM killed", "error": "failed to start",
             "supervisor lost": "supervisor lost"}.get(str(reason))
    return f"{text}, {extra}" if extra else text


def _duration(seconds: float) -> str:
    """Docker's human duration (go-units HumanDuration)."""
    s = int(seconds)
    if s < 1:
        return "Less than a second"
    if s < 60:
        return "1 second" if s == 1 else f"{s} seconds"
    minutes, hours, days = s // 60, s // 3600, s // 86400
    if minutes < 60:
        return "About a minute" if minutes == 1 else f"{minutes} minutes"
    if hours < 48:
        return "About an hour" if hours == 1 else f"{hours} hours"
    if days < 14:
        return f"{days} days"
    if days < 90:
        return f"{days // 7} weeks"
    if days < 730:
        return f"{days // 30} months"
    return f"{days // 365} years"


def _iso(stamp: object) -> str:
    if not isinstance(stamp, (int, float)):
        return ""
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(stamp))


def refresh(record: dict[str, Any]) -> dict[str, Any]:
    """The record as it is now (a removed one reads as exited)."""
    return _read(record["id"]) or {**record, "status": "exited"}


def wait(record: dict[str, Any]) -> dict[str, Any]:
    while record["status"] == "running":
        time.sleep(0.05)
        record = refresh(record)
    return record


def restart(record: dict[str, Any], timeout: float = 10.0) -> str:
    """Stop the sandbox (if it runs) and start it again from the options it was started with: the same
    id, name and log."""
    from .sandbox import SandboxOptions, Volume, prepare

    if "options" not in record:
        raise UsageError(f"sandbox {record.get('name') or record['id'][:12]} cannot be restarted",
                         hint="it was started by an older sandboxer; run it again")
    saved = dict(record["options"])
    saved["volumes"] = [Volume(*v) for v in saved["volumes"]]
    opts = SandboxOptions(**{k: v for k, v in saved.items() if k in SandboxOptions._fields})
    stop(record, timeout)
    plan = prepare(opts, sandbox_id=record["id"])
    return detach(plan, opts, int(record.get("log_max_size") or DEFAULT_MAX_SIZE), int(record.get("restarts", 0)) + 1,
                  record.get("timeout"))


def prune() -> tuple[list[str], list[str]]:
    """``system prune``'s part: remove exited sandboxes' records and logs (and files no record owns),
    and the state crashed sandboxes left; returns (record ids, leftover state dirs)."""
    from .state import collect_garbage

    removed = []
    for record in records(all_=True):
        if record["status"] != "running":
            remove(record)
            removed.append(record["id"])
    directory = _records_dir()
    known = {e[:-5] for e in os.listdir(directory) if e.endswith(".json")}
    for entry in os.listdir(directory):
        path = os.path.join(directory, entry)
        if entry.split(".", 1)[0] in known:
            continue
        try:  # a record being written for the first time is a fresh .tmp: only stale ones are debris
            if entry.endswith((".log", ".log.1")) or (entry.endswith(".tmp") and stale_temporary(path)):
                os.unlink(path)
        except FileNotFoundError:
            pass
    return removed, collect_garbage()


def remove(record: dict[str, Any], force: bool = False) -> None:
    if record["status"] == "running":
        if not force:
            raise UsageError(f"sandbox {record.get('name') or record['id'][:12]} is running",
                             hint="stop it first, or use rm -f")
        stop(record, timeout=0)
    for suffix in (".log", ".log.1", ".json"):  # the record last: an rm killed midway leaves it, to be rm'd again
        try:
            os.unlink(os.path.join(_records_dir(), record["id"] + suffix))
        except FileNotFoundError:
            pass
