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
import signal
import sys
from collections import namedtuple
from collections.abc import Sequence

from .. import syscalls as sc
from ..errors import SetupError
from ..state import Lock, state_root, unlink_quiet, write_atomically

TYPE_CHECKING = False
if TYPE_CHECKING:
    from . import PortMapping

__all__ = ["Holder", "directory", "lock", "current", "ensure", "stop", "request", "outbound_missing",
           "nft_if_outbound", "publish", "unpublish"]

_START_TIMEOUT_S = 10.0


class Holder(namedtuple("Holder", "pid started")):
    """The holder process: its pid and its start time (see :mod:`sandboxer.procfs`)."""

    pid: int
    started: int
    __slots__ = ()

    @property
    def user_ns(self) -> str:
        return f"/proc/{self.pid}/ns/user"

    @property
    def net_ns(self) -> str:
        return f"/proc/{self.pid}/ns/net"


def directory() -> str:
    """``<state root>/netns``: the holder record, the lock, the address leases."""
    path = os.path.join(state_root(), "netns")
    os.makedirs(path, mode=0o700, exist_ok=True)
    return path


def lock() -> Lock:
    return Lock(os.path.join(directory(), "lock"))


def current() -> Holder | None:
    """The running holder, or None."""
    from ..procfs import same_process

    try:
        with open(os.path.join(directory(), "holder")) as f:
            pid, started = map(int, f.read().split())
    except (OSError, ValueError):
        return None
    return Holder(pid, started) if same_process(pid, started) else None


def ensure() -> Holder:
    """The running holder, started if there is none.  Call it under :func:`lock`."""
    return current() or _start()


def stop() -> None:
    """Kill the holder (its namespaces, bridges and all, go with it).  Call it under :func:`lock`."""
    holder = current()
    if holder is not None:
        try:
            os.kill(holder.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
    unlink_quiet(os.path.join(directory(), "holder"))


def _start() -> Holder:
    """Fork the holder (detached: a new session, re-parented away from us), map its user namespace,
    let it exec its program (:mod:`sandboxer.network.holder`) and wait until it serves."""
    from ..procfs import start_time
    from ..runtime.userns import default_idmap, write_idmap

    idmap = default_idmap()
    log, sock = os.path.join(directory(), "holder.log"), _socket()  # here: in its namespace, our uid is 0
    msg_r, msg_w = os.pipe2(os.O_CLOEXEC)
    go_r, go_w = os.pipe2(os.O_CLOEXEC)
    ready_r, ready_w = os.pipe2(os.O_CLOEXEC)
    exit_r, exit_w = os.pipe2(os.O_CLOEXEC)  # slirp4netns's exit fd: the holder keeps the write end
    middle = os.fork()
    if middle == 0:  # pragma: no cover - runs in the child
        try:
            for fd in (msg_r, go_w, ready_r, exit_r):
                os.close(fd)
            os.setsid()
            if os.fork() == 0:
                _holder_main(msg_w, go_r, ready_w, exit_w, log, sock)
        finally:
            os._exit(0)
    for fd in (msg_w, go_r, ready_w, exit_w):
        os.close(fd)
    try:
        os.waitpid(middle, 0)
        pid = _read_pid(msg_r)
        write_idmap(pid, idmap)
        os.write(go_w, b"g")
        error = _read_all(msg_r)  # end of file at its exec; an error text if it failed before
        if not error and not (select.select([ready_r], [], [], _START_TIMEOUT_S)[0] and os.read(ready_r, 16)):
            error = _last_line(log) or "it did not get ready in time"  # its program's traceback ends there
        started = start_time(pid)
        if error or started is None:
            raise SetupError("start the network namespace holder", error or "it exited at once",
                             hint=f"see {log}")
        holder = Holder(pid, started)
        try:
            missing = _connect_outbound(holder, exit_r)
        except BaseException:
            os.kill(pid, signal.SIGKILL)
            raise
    finally:
        for fd in (msg_r, go_w, ready_r, exit_r):
            os.close(fd)
    write_atomically(os.path.join(directory(), "outbound-missing"), missing)
    write_atomically(os.path.join(directory(), "holder"), f"{pid} {started}\n")
    return holder


def _holder_main(msg_w: int, go_r: int, ready_w: int, exit_w: int, log: str, sock: str) -> None:  # pragma: no cover
    """The holder's side: new user and network namespaces, wait for the maps, ``lo`` up, exec its program
    (holding ``exit_w`` open for as long as it lives)."""
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
        keep = {0, 1, 2, msg_w, ready_w, exit_w}
        for entry in os.listdir("/proc/self/fd"):
            if int(entry) not in keep:
                try:
                    os.close(int(entry))
                except OSError:
                    pass
        os.set_inheritable(ready_w, True)
        os.set_inheritable(exit_w, True)
        for sig in (signal.SIGPIPE, signal.SIGXFSZ, signal.SIGINT):
            signal.signal(sig, signal.SIG_DFL)
        os.execv(sys.executable, [sys.executable, "-m", "sandboxer.network.holder", sock, str(ready_w)])
    except BaseException as e:
        try:
            os.write(msg_w, f"\n{e}".encode())
        finally:
            os._exit(1)


def _socket() -> str:
    return os.path.join(directory(), "holder.sock")


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


def _last_line(path: str) -> str:
    try:
        with open(path, errors="replace") as f:
            lines = [line.strip() for line in f if line.strip()]
    except OSError:
        return ""
    return lines[-1] if lines else ""


def request(op: str, *args: object, fd: int | None = None) -> object:
    """Have the holder run ``op`` (see :data:`sandboxer.network.holder.OPS`) in its namespaces, passing
    ``fd`` (a sandbox's network namespace) along; its error is raised here.  Call it under :func:`lock`."""
    import json
    import socket

    with socket.socket(socket.AF_UNIX, socket.SOCK_SEQPACKET) as s:
        s.settimeout(30.0)
        try:
            s.connect(_socket())
            socket.send_fds(s, [json.dumps({"op": op, "args": args}).encode()], [] if fd is None else [fd])
            data = s.recv(65536)
        except OSError as e:
            raise SetupError(f"ask the network namespace holder to {op.replace('_', ' ')}", e.strerror or str(e),
                             hint="it may have died: run the command again (it is restarted)") from None
    try:
        reply = json.loads(data)
    except ValueError:
        raise SetupError(f"ask the network namespace holder to {op.replace('_', ' ')}",
                         "it died while working" if not data else f"unreadable reply {data[:80]!r}",
                         hint=f"see {os.path.join(directory(), 'holder.log')}") from None
    if "error" in reply:
        step, message, hint = reply["error"]
        raise SetupError(step, message, hint or None)
    return reply.get("result")


def outbound_missing() -> str:
    """Why the running holder's networks have no outbound access ("" when they have it)."""
    try:
        with open(os.path.join(directory(), "outbound-missing")) as f:
            return f.read()
    except FileNotFoundError:
        return ""


def nft_if_outbound() -> str | None:
    """nft's path where the networks have a way out (and so a NAT table to keep them apart), else None."""
    from ..programs import find

    return None if outbound_missing() else find("nft")


def _connect_outbound(holder: Holder, exit_r: int) -> str:
    """slirp4netns on the holder, forwarding and NAT in its namespace; returns what is missing for it."""
    from ..programs import find
    from . import helper
    from .slirp import MTU

    slirp, nft = find("slirp4netns"), find("nft")
    if slirp is None or nft is None:
        package = "slirp4netns" if slirp is None else "nftables"
        return (f"user-defined networks have no outbound access here: {package} is not installed "
                f"(sudo apt-get install {package})")
    ready_r, ready_w = os.pipe2(os.O_CLOEXEC)
    log = os.path.join(directory(), "slirp.log")
    argv = [slirp, "--configure", f"--mtu={MTU}", f"--ready-fd={ready_w}", f"--exit-fd={exit_r}",
            f"--api-socket={os.path.join(directory(), 'slirp.sock')}", "--enable-sandbox", "--enable-seccomp",
            "--disable-host-loopback", str(holder.pid), "tap0"]
    try:
        child = helper.spawn(argv, (ready_w, exit_r), log, new_session=True)
    finally:
        os.close(ready_w)
    try:
        helper.wait_ready(ready_r, child, "slirp4netns", log)
    finally:
        os.close(ready_r)
    request("outbound", nft)
    return ""


def publish(mapping: PortMapping, address: str, sandbox: str) -> int:
    """Publish ``mapping`` (its host port chosen already) for the sandbox at ``address`` on a bridge: the
    holder's slirp4netns forwards the host port to the same port of its ``tap0``, where a DNAT rule
    (commented with the sandbox's id) sends it on to the sandbox.  Returns the slirp4netns forward's id.
    Call it under :func:`lock`."""
    from ..errors import UsageError
    from ..programs import require
    from . import slirp

    missing = outbound_missing()
    if missing:
        raise UsageError(f"cannot publish ports from a user-defined network: {missing.partition(': ')[2]}",
                         hint="install it, then remove and recreate the networks (the holder restarts)")
    rule = (f'iifname "tap0" {mapping.proto} dport {mapping.host_port} dnat to {address}:{mapping.container_port} '
            f'comment "{sandbox}"')
    request("nft", require("nft"), f"add rule ip sandboxer prerouting {rule}\n")
    try:
        return slirp.add_hostfwd(os.path.join(directory(), "slirp.sock"), mapping, mapping.host_port)
    except BaseException:
        unpublish(sandbox, ())
        raise


def unpublish(sandbox: str, forwards: Sequence[int]) -> None:
    """Undo :func:`publish` for every port of ``sandbox``.  Call it under :func:`lock`."""
    from ..programs import require
    from . import slirp

    for forward in forwards:
        slirp.remove_hostfwd(os.path.join(directory(), "slirp.sock"), forward)
    request("nft_delete_commented", require("nft"), sandbox)
