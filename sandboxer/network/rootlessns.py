"""The per-user network namespace that carries the bridges of user-defined networks.

Rootless podman keeps one such namespace per user; so do we.  A *holder*
process — :mod:`sandboxer.network.holder`, in a user namespace mapped like
a sandbox's (newuidmap/newgidmap) and a network namespace of its own —
keeps both alive and does the netlink and nftables work inside them on
request (:func:`request`, over a socket in the user's state directory), so
pyroute2 is imported once per user rather than once per ``run``.  It is
recorded in ``<state root>/netns/holder`` as ``PID START`` (start time in
clock ticks, so a recycled pid is never mistaken for it).

Sandboxes on a user-defined network join the holder's user namespace
before making their own network namespace, so the holder has the rights to
plug a veth pair between a bridge and the sandbox.  Everything that changes
the holder, the bridges or the leases runs under :func:`lock`.  A holder
that died (a reboot, a kill) is replaced on the next use; the bridges are
remade from the definitions as sandboxes attach.  It is stopped when the
last network is removed.

Outbound traffic: one slirp4netns on the holder (``tap0``, 10.0.2.100, as
a sandbox's own would be), IPv4 forwarding in the holder's namespace, and
an nftables table that masquerades the bridges' traffic out of ``tap0``;
each bridge gets a rule that drops traffic routed to another bridge
(networks stay apart).  slirp4netns ends when the holder does: the holder
keeps its exit fd.  Without slirp4netns or nft the networks work without
outbound access (and without forwarding), and each run says so
(:func:`outbound_missing`).
"""

from __future__ import annotations

import os
import select
import sys
from collections.abc import Callable, Sequence

from .. import signals
from .. import syscalls as sc
from ..errors import HostError, SetupError, UsageError
from ..records import record
from ..state import Lock, subdir, unlink_quiet, write_atomically
from . import helper

TYPE_CHECKING = False
if TYPE_CHECKING:
    from . import PortMapping

__all__ = ["Holder", "directory", "lock", "current", "ensure", "stop", "request", "outbound_missing",
           "publish", "unpublish"]

_START_TIMEOUT_S = 10.0
#: the holder's directory under the state root (see :func:`directory`)
DIRECTORY = "netns"


class Holder(record("Holder", "pid started protocol", defaults=(0,))):
    """The holder process: its pid, its start time (see :mod:`sandboxer.procfs`) and the request protocol
    of the sandboxer it runs (:data:`sandboxer.network.holder.PROTOCOL`)."""

    pid: int
    started: int
    protocol: int
    __slots__ = ()

    @property
    def user_ns(self) -> str:
        return f"/proc/{self.pid}/ns/user"

    @property
    def identity(self) -> tuple[int, int]:
        """What a lease records of the holder that plugged it."""
        return (self.pid, self.started)


def directory() -> str:
    """``<state root>/netns``: the holder record, the lock, the address leases."""
    return subdir(DIRECTORY)


def lock() -> Lock:
    return Lock(os.path.join(directory(), "lock"))


def current() -> Holder | None:
    """The running holder, or None."""
    from ..procfs import same_process

    try:
        with open(os.path.join(directory(), "holder")) as f:
            fields = [int(x) for x in f.read().split()]
        holder = Holder(*fields[:3])
    except (OSError, ValueError, TypeError):
        return None
    return holder if same_process(holder.pid, holder.started) else None


def ensure(live_leases: Callable[[], bool]) -> Holder:
    """The running holder, started if there is none.  Call it under :func:`lock`.

    A holder of another sandboxer (an upgrade while it ran) is replaced if no sandbox uses it
    (``live_leases()`` is false), and refused otherwise: its requests may not mean ours."""
    from .holder import PROTOCOL

    holder = current()
    if holder is not None and holder.protocol != PROTOCOL:
        if live_leases():
            raise HostError("the user-defined networks' holder runs another version of sandboxer",
                            hint="stop the sandboxes on user-defined networks, then run this again "
                                 "(the holder is replaced)")
        stop()
        holder = None
    return holder or _start()


def stop() -> None:
    """Kill the holder (its namespaces, bridges and slirp4netns go with it) and remove what it left.
    Call it under :func:`lock`."""
    holder = current()
    if holder is not None:
        try:
            os.kill(holder.pid, signals.SIGKILL)
        except ProcessLookupError:
            pass
    for name in ("holder", "holder.sock", "slirp.sock", "outbound-missing"):
        unlink_quiet(os.path.join(directory(), name))


#: longest path an AF_UNIX socket can bind (sun_path, with its NUL)
_SUN_PATH_MAX = 107


def _start() -> Holder:
    """Fork the holder (detached: a new session, re-parented away from us), map its user namespace,
    let it exec its program (:mod:`sandboxer.network.holder`), attach slirp4netns, record it, and
    confirm it — a holder whose starter dies before that exits by itself."""
    from ..procfs import start_time
    from ..runtime.userns import default_idmap, write_idmap
    from .holder import PROTOCOL

    idmap = default_idmap()
    log, sock = os.path.join(directory(), "holder.log"), _socket()  # worked out once, for both sides
    if len(os.fsencode(sock)) > _SUN_PATH_MAX or len(os.fsencode(_slirp_socket())) > _SUN_PATH_MAX:
        raise HostError(f"the state directory's path is too long for a socket ({sock})",
                        hint="use a shorter SANDBOXER_STATE_DIR")
    msg_r, msg_w = os.pipe2(os.O_CLOEXEC)
    go_r, go_w = os.pipe2(os.O_CLOEXEC)
    ready_r, ready_w = os.pipe2(os.O_CLOEXEC)
    commit_r, commit_w = os.pipe2(os.O_CLOEXEC)
    exit_r, exit_w = os.pipe2(os.O_CLOEXEC)  # slirp4netns's exit fd: the holder keeps the write end
    middle = os.fork()
    if middle == 0:  # pragma: no cover - runs in the child
        try:
            for fd in (msg_r, go_w, ready_r, commit_w, exit_r):
                os.close(fd)
            os.setsid()
            if os.fork() == 0:
                _holder_main(msg_w, go_r, (ready_w, commit_r, exit_w), log,
                             [sock, str(ready_w), str(commit_r)])
        finally:
            os._exit(0)
    for fd in (msg_w, go_r, ready_w, commit_r, exit_w):
        os.close(fd)
    pid = 0
    try:
        os.waitpid(middle, 0)
        pid = _read_pid(msg_r)
        write_idmap(pid, idmap)
        os.write(go_w, b"g")
        error = _read_all(msg_r)  # end of file at its exec; an error text if it failed before
        if not error and not (select.select([ready_r], [], [], _START_TIMEOUT_S)[0] and os.read(ready_r, 16)):
            error = helper.last_line(log) or "it did not get ready in time"  # its program's traceback ends there
        started = start_time(pid)
        if error or started is None:
            raise SetupError("start the network namespace holder", error or "it exited at once",
                             hint=f"see {log}")
        holder = Holder(pid, started, PROTOCOL)
        missing = _connect_outbound(holder, exit_r)
        write_atomically(os.path.join(directory(), "outbound-missing"), missing)
        write_atomically(os.path.join(directory(), "holder"), f"{pid} {started} {PROTOCOL}\n")
        os.write(commit_w, b"c")
    except BaseException:
        if pid:
            try:
                os.kill(pid, signals.SIGKILL)
            except ProcessLookupError:
                pass
        raise
    finally:
        for fd in (msg_r, go_w, ready_r, commit_w, exit_r):
            os.close(fd)
    return holder


def _holder_main(msg_w: int, go_r: int, keep: tuple[int, ...], log: str,
                 args: list[str]) -> None:  # pragma: no cover - runs in the child
    """The holder's side: new user and network namespaces, wait for the maps, ``lo`` up, exec its program
    with ``args`` and the fds ``keep`` (ready, commit, slirp4netns's exit fd: held as long as it lives)."""
    try:
        sc.unshare(sc.CLONE_NEWUSER | sc.CLONE_NEWNET)
        os.write(msg_w, f"{os.getpid()}\n".encode())
        if os.read(go_r, 1) != b"g":
            os._exit(1)
        sc.interface_up("lo")
        os.chdir("/")  # never keep a caller's directory busy
        null = os.open("/dev/null", os.O_RDONLY)
        out = os.open(log, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        os.dup2(null, 0)
        for fd in (1, 2):  # never the caller's output (a $(...) would wait for us); its errors to the log
            os.dup2(out, fd)
        for entry in os.listdir("/proc/self/fd"):
            if int(entry) not in (0, 1, 2, msg_w, *keep):
                try:
                    os.close(int(entry))
                except OSError:
                    pass
        for fd in keep:
            os.set_inheritable(fd, True)
        for sig in (signals.SIGPIPE, signals.SIGXFSZ, signals.SIGINT):
            signals.signal(sig, signals.SIG_DFL)
        # the caller's sandboxer, not whichever one a bare python would import from "/"
        package_root = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
        path = os.environ.get("PYTHONPATH")
        os.environ["PYTHONPATH"] = package_root + (os.pathsep + path if path else "")
        os.execv(sys.executable, [sys.executable, "-m", "sandboxer.network.holder", *args])
    except BaseException as e:
        try:
            os.write(msg_w, f"\n{e}".encode())
        finally:
            os._exit(1)


def _socket() -> str:
    return os.path.join(directory(), "holder.sock")


def _slirp_socket() -> str:
    return os.path.join(directory(), "slirp.sock")


def _read_pid(fd: int) -> int:
    if not select.select([fd], [], [], _START_TIMEOUT_S)[0]:
        raise SetupError("start the network namespace holder", "it did not answer")
    line = b""
    while not line.endswith(b"\n"):
        chunk = os.read(fd, 1)
        if not chunk:
            raise SetupError("start the network namespace holder", "it exited at once")
        line += chunk
    return int(line)


def _read_all(fd: int) -> str:
    data = b""
    while select.select([fd], [], [], _START_TIMEOUT_S)[0] and (chunk := os.read(fd, 512)):
        data += chunk
    return data.decode(errors="replace").strip()


def request(op: str, *args: object, fd: int | None = None) -> None:
    """Have the holder run ``op`` (see :data:`sandboxer.network.holder.OPS`) in its namespaces, passing
    ``fd`` (a sandbox's network namespace) along; its error is raised here.  Call it under :func:`lock`."""
    import json
    import socket

    what = f"ask the network namespace holder to {op.replace('_', ' ')}"
    with socket.socket(socket.AF_UNIX, socket.SOCK_SEQPACKET) as s:
        s.settimeout(30.0)
        try:
            s.connect(_socket())
            socket.send_fds(s, [json.dumps({"op": op, "args": args}).encode()], [] if fd is None else [fd])
            data = s.recv(65536)
        except OSError as e:
            raise SetupError(what, e.strerror or str(e),
                             hint="it may have died: run the command again (it is restarted)") from None
    try:
        reply = json.loads(data)
    except ValueError:
        raise SetupError(what, "it died while working" if not data else f"unreadable reply {data[:80]!r}",
                         hint=f"see {os.path.join(directory(), 'holder.log')}") from None
    if "error" in reply:
        step, message, hint = reply["error"]
        raise SetupError(step, message, hint or None)


def outbound_missing() -> str:
    """Why the running holder's networks have no outbound access ("" when they have it)."""
    try:
        with open(os.path.join(directory(), "outbound-missing")) as f:
            return f.read()
    except FileNotFoundError:
        return ""


def _connect_outbound(holder: Holder, exit_r: int) -> str:
    """slirp4netns on the holder (the holder has set up forwarding and NAT); returns what is missing."""
    from ..programs import find
    from .slirp import MTU

    slirp, nft = find("slirp4netns"), find("nft")
    if slirp is None or nft is None:
        package = "slirp4netns" if slirp is None else "nftables"
        return (f"user-defined networks have no outbound access here: {package} is not installed "
                f"(sudo apt-get install {package})")
    ready_r, ready_w = os.pipe2(os.O_CLOEXEC)
    log = os.path.join(directory(), "slirp.log")
    argv = [slirp, "--configure", f"--mtu={MTU}", f"--ready-fd={ready_w}", f"--exit-fd={exit_r}",
            f"--api-socket={_slirp_socket()}", "--enable-sandbox", "--enable-seccomp",
            "--disable-host-loopback", str(holder.pid), "tap0"]
    try:
        child = helper.spawn(argv, (ready_w, exit_r), log, detach=True)
    except BaseException:
        os.close(ready_r)
        raise
    finally:
        os.close(ready_w)
    try:
        helper.wait_ready(ready_r, child, "slirp4netns", log)
    finally:
        os.close(ready_r)
    return ""


def publish(mapping: PortMapping, address: str, sandbox: str) -> None:
    """Publish ``mapping`` (its host port chosen already) for the sandbox at ``address`` on a bridge: the
    holder's slirp4netns forwards the host port to the same port of its ``tap0``, where a DNAT rule
    (commented with the sandbox's id) sends it on.  Record the mapping in the sandbox's lease first:
    :func:`unpublish` undoes whatever part was done.  Call it under :func:`lock`."""
    from . import slirp

    missing = outbound_missing()
    if missing:
        raise UsageError(f"cannot publish ports from a user-defined network: {missing.partition(': ')[2]}",
                         hint="install it, then remove and recreate the networks (the holder restarts)")
    request("publish", mapping.proto, mapping.host_port, address, mapping.container_port, sandbox)
    slirp.add_hostfwd(_slirp_socket(), mapping, mapping.host_port)


def unpublish(holder: Holder, sandbox: str, ports: Sequence[PortMapping]) -> None:
    """Undo :func:`publish` for every port of ``sandbox``: its DNAT rules, and the slirp4netns forwards of
    its host ports (found by address, port and protocol: their ids are not recorded).  Call it under
    :func:`lock`, with the holder that published them (another one never had them)."""
    from . import slirp

    wanted = {(m.host_ip, m.host_port, m.proto) for m in ports}
    for entry in slirp.list_hostfwd(_slirp_socket()):
        if (entry.get("host_addr"), entry.get("host_port"), entry.get("proto")) in wanted:
            slirp.remove_hostfwd(_slirp_socket(), int(str(entry["id"])))
    request("unpublish", sandbox)
