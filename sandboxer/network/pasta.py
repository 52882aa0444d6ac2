"""pasta (the passt package): a user-mode network stack that splices sockets instead of emulating TCP.

Started while the sandbox waits (``sandboxer_attach``) on the set-up
process's PID, with the same surface as slirp4netns: ``tap0`` with
10.0.2.100/24, gateway 10.0.2.2 (the host's loopback only when
``allow_host_loopback=true``: otherwise ``--no-map-gw`` and an unreachable
route to it, see :func:`_close_gateway`), DNS queries to
10.0.2.3 forwarded to the host's resolver, IPv4 only.  Every automatic
forwarding is off (``-T none -U none``: the sandbox's own loopback ports
would reach the host's; ``-t``/``-u`` default to binding host ports for
whatever listens inside): published ports are the ``-t``/``-u`` given, so
they are known at start and a taken host port fails the start.

The Debian 12 build (2023) has no ready fd and no exit fd.  Ready: it
runs in the foreground and writes its PID file once the namespace is
configured and the ports are bound; the "file" is ``/dev/fd/N``, a pipe
we wait on.  Ending: we kill it when the sandbox ends; it holds the
namespace itself so it would never notice, and a killed caller is covered
by its parent-death signal.
"""

from __future__ import annotations

import _socket  # the C module: socket would load enum (see the README's "Speed")
import os
import struct

from .. import syscalls as sc
from ..errors import SetupError
from ..programs import require
from . import DNS_ADDRESS, GUEST_ADDRESS, HOST_GATEWAY, PORT_IN_USE, NetworkSpec, PortMapping, helper

__all__ = ["Pasta", "start", "argv"]


class Pasta:
    """A running pasta serving one sandbox."""

    def __init__(self, pid: int, ports: list[PortMapping]) -> None:
        self.pid = pid
        self.ports = ports
        self._running = True

    def close(self) -> None:
        """Kill it; with published ports, wait for its death so that they are free again when we return."""
        if self._running:
            self._running = False
            helper.kill(self.pid, wait=bool(self.ports))


def argv(binary: str, pid: int, spec: NetworkSpec, ports: list[PortMapping], ready_fd: int,
         log: str) -> list[str]:
    """``log``: pasta's own log (its errors also go to stderr; without a log file, to syslog too)."""
    args = [binary, "--foreground", "--quiet", "--log-file", log, "--pid", f"/dev/fd/{ready_fd}",
            "--config-net", "--ipv4-only", "--ns-ifname", "tap0", "--address", GUEST_ADDRESS, "--netmask", "24",
            "--gateway", HOST_GATEWAY, "--dns-forward", DNS_ADDRESS, "--tcp-ns", "none", "--udp-ns", "none"]
    if not spec.allow_host_loopback:
        args.append("--no-map-gw")
    if os.getuid() == 0:  # it would drop to nobody, which may not enter the sandbox's namespaces
        args += ["--runas", "0:0"]
    for proto, flag in (("tcp", "--tcp-ports"), ("udp", "--udp-ports")):
        specs = [_port_spec(m) for m in ports if m.proto == proto]
        for one in specs or ["none"]:
            args += [flag, one]
    return [*args, str(pid)]


def _port_spec(m: PortMapping) -> str:
    """pasta's ``[ADDR/]HOSTPORT:CPORT`` (no address: every host address)."""
    where = "" if m.host_ip == "0.0.0.0" else f"{m.host_ip}/"
    return f"{where}{m.host_port}:{m.container_port}"


def start(pid: int, spec: NetworkSpec, state_dir: str) -> Pasta:
    """Attach pasta to the namespaces of ``pid`` with the ports of ``spec``; return once it serves them."""
    binary = require("pasta")
    ports = [helper.with_host_port(m) for m in spec.ports]
    stderr = os.path.join(state_dir, "pasta.err")
    ready_r, ready_w = os.pipe2(os.O_CLOEXEC)
    try:
        child = helper.spawn(argv(binary, pid, spec, ports, ready_w, os.path.join(state_dir, "pasta.log")),
                             (ready_w,), stderr, die_with_parent=True)
    finally:
        os.close(ready_w)
    try:
        helper.wait_ready(ready_r, child, "pasta", stderr)
    except SetupError as e:
        raise _explained(e, ports) from None
    finally:
        os.close(ready_r)
    if not spec.allow_host_loopback:
        try:
            _close_gateway(pid)
        except BaseException:
            helper.kill(child, wait=True)
            raise
    return Pasta(child, ports)


def _close_gateway(pid: int) -> None:
    """Refuse the sandbox's traffic to 10.0.2.2, as slirp4netns's ``--disable-host-loopback`` does: with
    ``--no-map-gw`` pasta sends it on like any other, out through the host's default route (off the machine).
    An unreachable route for that address alone, in the namespaces of ``pid``, leaves the default route
    through it working (a gateway is reached by its link-layer address) — the same request as ``ip route add
    unreachable 10.0.2.2``, from a child that joins them."""
    fds = []
    for kind, flag in (("user", sc.CLONE_NEWUSER), ("net", sc.CLONE_NEWNET)):
        path = f"/proc/{pid}/ns/{kind}"
        if os.stat(path).st_ino != os.stat(f"/proc/self/ns/{kind}").st_ino:  # as root: perhaps our user namespace
            fds.append((os.open(path, os.O_RDONLY | os.O_CLOEXEC), flag))
    error_r, error_w = os.pipe2(os.O_CLOEXEC)
    child = os.fork()
    if child == 0:  # pragma: no cover - runs in the child
        try:
            for fd, flag in fds:
                sc.setns(fd, flag)
            _add_unreachable_route(HOST_GATEWAY)
        except BaseException as e:
            os.write(error_w, str(e).encode())
        finally:
            os._exit(0)
    os.close(error_w)
    for fd, _ in fds:
        os.close(fd)
    try:
        error = os.read(error_r, 512).decode(errors="replace")
    finally:
        os.close(error_r)
        os.waitpid(child, 0)
    if error:
        raise SetupError("close the host's loopback to the sandbox (a route to 10.0.2.2)", error,
                         hint="or allow it: --network pasta:allow_host_loopback=true")


def _add_unreachable_route(address: str) -> None:
    """RTM_NEWROUTE over rtnetlink (imports done before the fork); raises OSError with the kernel's error."""
    rtmsg = struct.pack("=BBBBBBBBI", _socket.AF_INET, 32, 0, 0, 254, 4, 0, 7, 0)  # main table, static, unreachable
    dst = struct.pack("=HH4B", 8, 1, *(int(part) for part in address.split(".")))  # RTA_DST
    flags = 0x1 | 0x4 | 0x200 | 0x400  # NLM_F_REQUEST, NLM_F_ACK, NLM_F_EXCL, NLM_F_CREATE
    message = struct.pack("=IHHII", 16 + len(rtmsg) + len(dst), 24, flags, 1, 0) + rtmsg + dst  # RTM_NEWROUTE
    s = _socket.socket(_socket.AF_NETLINK, _socket.SOCK_RAW, 0)  # NETLINK_ROUTE
    try:
        s.send(message)
        reply = s.recv(4096)
    finally:
        s.close()
    error = -struct.unpack_from("=i", reply, 16)[0]  # the NLMSG_ERROR acknowledging it: 0, or -errno
    if error:
        raise OSError(error, os.strerror(error))


def _explained(error: SetupError, ports: list[PortMapping]) -> SetupError:
    """pasta's last log line (``0.2357: ERROR:   Failed to bind any port for '-t 8080:80', exiting``), said plainly."""
    import re

    reason = re.sub(r"^[0-9.]+:\s*(?:[A-Z]+:\s*)?", "", error.message.partition(": ")[2])
    failed = re.match(r"Failed to bind any port for '-([tu]) ([^']*)'", reason)
    if failed:
        proto = "tcp" if failed[1] == "t" else "udp"
        for m in ports:
            if m.proto == proto and _port_spec(m) == failed[2]:
                return SetupError(f"publish port {m}", "pasta could not bind the host port", hint=PORT_IN_USE)
    return SetupError("start pasta", reason, hint=error.hint)
