"""The per-user network namespace that carries the bridges of user-defined networks.

Rootless podman keeps one such namespace per user; so do we.  A *holder*
process — ``sleep infinity`` in a user namespace mapped like a sandbox's
(newuidmap/newgidmap) and a network namespace of its own — keeps both
alive; it is recorded in ``<state root>/netns/holder`` as ``PID START``
(start time in clock ticks, so a recycled pid is never mistaken for it).

Sandboxes on a user-defined network join the holder's user namespace
before making their own network namespace, so that namespace is owned by
it, and a helper that joins the holder's user and network namespaces
(:func:`run_inside`) has the rights to plug a veth pair between a bridge
and the sandbox.  Everything that changes the holder, the bridges or the
leases runs under :func:`lock`.  A holder that died (a reboot, a kill) is
replaced on the next use; the bridges are remade from the definitions as
sandboxes attach.  It is stopped when the last network is removed.

Outbound traffic: one slirp4netns on the holder (``tap0``, 10.0.2.100, as
a sandbox's own would be), IPv4 forwarding in the holder's namespace, and
an nftables table that masquerades the bridges' traffic out of ``tap0``
and drops traffic routed from one bridge to another (networks stay apart;
see :func:`isolate_bridge`).
slirp4netns ends when the holder does: the holder keeps its exit fd.
Without slirp4netns or nft the networks work without outbound access, and
each run says so (:func:`outbound_missing`).
"""

from __future__ import annotations

import os
import select
import signal
from collections import namedtuple
from collections.abc import Callable, Sequence

from .. import syscalls as sc
from ..errors import SetupError
from ..state import Lock, state_root, unlink_quiet, write_atomically

TYPE_CHECKING = False
if TYPE_CHECKING:
    from . import PortMapping

__all__ = ["Holder", "directory", "lock", "current", "ensure", "stop", "run_inside", "outbound_missing",
           "publish", "unpublish", "isolate_bridge"]

_START_TIMEOUT_S = 10.0
#: the holder's nftables table: NAT out of tap0; each bridge adds a rule to ``forward`` that keeps it apart from
#: the others (``oifname != ITSELF``: with br_netfilter, traffic within a bridge passes that hook too)
_RULESET = """table ip sandboxer {
    chain postrouting { type nat hook postrouting priority srcnat; oifname "tap0" masquerade; }
    chain prerouting { type nat hook prerouting priority dstnat; }
    chain forward { type filter hook forward priority filter; }
}
"""


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
    and wait until it has exec'ed ``sleep``."""
    from ..procfs import start_time
    from ..programs import require
    from ..runtime.userns import default_idmap, write_idmap

    sleep = require("sleep")
    idmap = default_idmap()
    msg_r, msg_w = os.pipe2(os.O_CLOEXEC)
    go_r, go_w = os.pipe2(os.O_CLOEXEC)
    exit_r, exit_w = os.pipe2(os.O_CLOEXEC)  # slirp4netns's exit fd: the holder keeps the write end
    middle = os.fork()
    if middle == 0:  # pragma: no cover - runs in the child
        try:
            os.close(msg_r)
            os.close(go_w)
            os.close(exit_r)
            os.setsid()
            if os.fork() == 0:
                _holder_main(sleep, msg_w, go_r, exit_w)
        finally:
            os._exit(0)
    os.close(msg_w)
    os.close(go_r)
    os.close(exit_w)
    try:
        os.waitpid(middle, 0)
        pid = _read_pid(msg_r)
        write_idmap(pid, idmap)
        os.write(go_w, b"g")
        os.close(go_w)
        go_w = -1
        # end of file: the holder exec'ed (its end is close-on-exec) or died; an error text otherwise
        error = _read_all(msg_r)
        started = start_time(pid)
        if error or started is None:
            raise SetupError("start the network namespace holder", error or "it exited at once")
        holder = Holder(pid, started)
        try:
            missing = _connect_outbound(holder, exit_r)
        except BaseException:
            os.kill(pid, signal.SIGKILL)
            raise
    finally:
        for fd in (msg_r, go_w, exit_r):
            if fd >= 0:
                os.close(fd)
    write_atomically(os.path.join(directory(), "outbound-missing"), missing)
    write_atomically(os.path.join(directory(), "holder"), f"{pid} {started}\n")
    return holder


def outbound_missing() -> str:
    """Why the running holder's networks have no outbound access ("" when they have it)."""
    try:
        with open(os.path.join(directory(), "outbound-missing")) as f:
            return f.read()
    except FileNotFoundError:
        return ""


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
    run_inside(holder, _forward_and_masquerade, nft)
    return ""


def publish(holder: Holder, mapping: PortMapping, address: str, sandbox: str) -> int:
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
    run_inside(holder, _nft, require("nft"), f"add rule ip sandboxer prerouting {rule}\n")
    try:
        return slirp.add_hostfwd(os.path.join(directory(), "slirp.sock"), mapping, mapping.host_port)
    except BaseException:
        unpublish(holder, sandbox, ())
        raise


def unpublish(holder: Holder, sandbox: str, forwards: Sequence[int]) -> None:
    """Undo :func:`publish` for every port of ``sandbox``.  Call it under :func:`lock`."""
    from ..programs import require
    from . import slirp

    for forward in forwards:
        slirp.remove_hostfwd(os.path.join(directory(), "slirp.sock"), forward)
    run_inside(holder, _nft_delete_commented, require("nft"), sandbox)


def isolate_bridge(bridge: str) -> None:  # pragma: no cover - runs in the holder's namespaces
    """A new bridge's traffic may leave through ``tap0`` but not reach another bridge.  Without nft,
    there is no forwarding at all (see :func:`_connect_outbound`): nothing to add."""
    from ..programs import find

    nft = find("nft")
    if nft is not None and not outbound_missing():
        _nft(nft, f'add rule ip sandboxer forward iifname "{bridge}" oifname != "{bridge}" oifname "sbx*" drop\n')


def _nft(nft: str, commands: str) -> None:  # pragma: no cover - runs in the holder's namespaces
    import subprocess

    done = subprocess.run([nft, "-f", "-"], input=commands, capture_output=True, text=True)
    if done.returncode != 0:
        why = done.stderr.strip().splitlines()[-1] if done.stderr.strip() else f"nft exited {done.returncode}"
        raise SetupError(f"configure the user-defined networks' netfilter ({commands.split(' ip ')[0]})", why)


def _nft_delete_commented(nft: str, comment: str) -> None:  # pragma: no cover - in the holder's namespaces
    import subprocess

    listing = subprocess.run([nft, "-a", "list", "chain", "ip", "sandboxer", "prerouting"], capture_output=True,
                             text=True).stdout
    handles = [line.rsplit("# handle ", 1)[1].strip() for line in listing.splitlines()
               if f'comment "{comment}"' in line and "# handle " in line]
    if handles:
        _nft(nft, "".join(f"delete rule ip sandboxer prerouting handle {h}\n" for h in handles))


def _forward_and_masquerade(nft: str) -> None:  # pragma: no cover - runs in the holder's namespaces
    with open("/proc/sys/net/ipv4/ip_forward", "w") as f:  # this network namespace's
        f.write("1")
    _nft(nft, _RULESET)


def _holder_main(sleep: str, msg_w: int, go_r: int, exit_w: int) -> None:  # pragma: no cover - in the child
    """The holder's side: new user and network namespaces, wait for the maps, ``lo`` up, exec sleep
    (holding ``exit_w`` open for as long as it lives)."""
    try:
        sc.unshare(sc.CLONE_NEWUSER | sc.CLONE_NEWNET)
        os.write(msg_w, f"{os.getpid()}\n".encode())
        if os.read(go_r, 1) != b"g":
            os._exit(1)
        sc.interface_up("lo")
        null = os.open("/dev/null", os.O_RDWR)
        for fd in (0, 1, 2):  # never hold the caller's output open (a $(...) would wait for us)
            os.dup2(null, fd)
        keep = {0, 1, 2, msg_w, exit_w}
        os.set_inheritable(exit_w, True)
        for entry in os.listdir("/proc/self/fd"):
            if int(entry) not in keep:
                try:
                    os.close(int(entry))
                except OSError:
                    pass
        for sig in (signal.SIGPIPE, signal.SIGXFSZ, signal.SIGINT):
            signal.signal(sig, signal.SIG_DFL)
        os.execv(sleep, [sleep, "infinity"])
    except BaseException as e:
        try:
            os.write(msg_w, f"\n{e}".encode())
        finally:
            os._exit(1)


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


def run_inside(holder: Holder, fn: Callable[..., object], *args: object) -> None:
    """Run ``fn(*args)`` in a forked helper that has joined the holder's user and network namespaces
    (root there: the rights over the bridges and over the namespaces of sandboxes on them).

    A :class:`SetupError` (or any error) in the helper is raised here with its message.
    """
    from ..runtime import sync

    msg_r, msg_w = os.pipe2(os.O_CLOEXEC)
    user = net = -1
    try:
        user = os.open(holder.user_ns, os.O_RDONLY | os.O_CLOEXEC)
        net = os.open(holder.net_ns, os.O_RDONLY | os.O_CLOEXEC)
    except OSError as e:
        for fd in (msg_r, msg_w, user, net):
            if fd >= 0:
                os.close(fd)
        raise SetupError("join the network namespace holder", e.strerror or str(e),
                         hint="it exited meanwhile: run the command again") from None
    pid = os.fork()
    if pid == 0:  # pragma: no cover - runs in the child
        code = 1
        try:
            os.close(msg_r)
            sc.setns(user, sc.CLONE_NEWUSER)
            sc.setns(net, sc.CLONE_NEWNET)
            fn(*args)
            code = 0
        except BaseException as e:
            sync.send_error(msg_w, e, "configure the network")
        finally:
            os._exit(code)
    for fd in (msg_w, user, net):
        os.close(fd)
    reader = sync.Reader(msg_r)
    try:
        message = reader.recv()
    finally:
        reader.close()
        _, status = os.waitpid(pid, 0)
    if message is not None and message[0] == "error":
        raise sync.error_from_fields(message)
    if os.waitstatus_to_exitcode(status) != 0:
        raise SetupError("configure the network", f"the helper ended with status {os.waitstatus_to_exitcode(status)}")
