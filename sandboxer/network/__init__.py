"""Sandbox networking, rootless: what ``--network`` and ``-p`` ask for, checked before anything starts.

Modes (:data:`MODES`): ``none`` (a fresh network namespace with only
``lo``: the default, because a sandbox for tests should reach nothing it
was not given), ``host`` (the caller's namespace, explicitly), and the
user-mode stacks ``slirp4netns[:OPT=V,…]`` and ``pasta[:OPT=V,…]``
(attached while the sandbox waits; see :mod:`sandboxer.network.slirp` and
:mod:`sandboxer.network.pasta`).  Both stacks give the sandbox the same
view: 10.0.2.100 on ``tap0``, the gateway 10.0.2.2, DNS at 10.0.2.3.  Any
other name is a user-defined network (:mod:`sandboxer.network.networks`):
``eth0`` on a bridge shared with the network's other sandboxes
(:mod:`sandboxer.network.bridge`).  The set-up order lives in the
``sandboxer_attach`` hook of :mod:`sandboxer.builtins`.
"""

from __future__ import annotations

import os

from ..errors import HostError, UsageError
from ..records import record
from ..state import validate_name

__all__ = ["NetworkSpec", "PortMapping", "Mode", "MODES", "USER_DEFINED", "mode_of", "parse_network",
           "parse_publish", "exposed_ports",
           "preferred_stack", "require_host", "GUEST_ADDRESS", "DNS_ADDRESS", "HOST_GATEWAY", "PORT_IN_USE",
           "etc_files", "host_lines"]

#: the sandbox's addresses under either stack (slirp4netns' fixed 10.0.2.0/24; pasta is told the same)
GUEST_ADDRESS = "10.0.2.100"
HOST_GATEWAY = "10.0.2.2"
DNS_ADDRESS = "10.0.2.3"
PORT_IN_USE = ("the host port is probably in use: choose another, or give only the container port (-p CPORT) "
               "for a free one")


class Mode(record("Mode", "stack program options udp_needs_loopback udp_same_port port_per_address",
                  defaults=(None, None, (), False, False, False))):
    """A ``--network`` mode.

    ``stack``: the module of this package whose ``start(pid, spec,
    state_dir)`` attaches it and publishes the ports (an object with
    ``ports`` and ``close()``); None for a mode with nothing to attach, which
    cannot publish ports.  ``program``: the host program it runs (checked
    with /dev/net/tun before anything is created).  ``options``: the
    ``OPT=true|false`` it takes.
    ``udp_needs_loopback``, ``udp_same_port``: how its UDP forwarding is
    broken otherwise — refused up front rather than silently.
    ``port_per_address``: a host port number may serve several mappings on
    different host addresses (else one per number and protocol).
    """

    stack: str | None
    program: str | None
    options: tuple[str, ...]
    udp_needs_loopback: bool
    udp_same_port: bool
    port_per_address: bool
    __slots__ = ()


MODES = {
    "none": Mode(),
    "host": Mode(),
    # slirp4netns sends a forwarded datagram's reply to 10.0.2.2, which --disable-host-loopback drops
    "slirp4netns": Mode("slirp", "slirp4netns", ("allow_host_loopback",), udp_needs_loopback=True,
                        port_per_address=True),
    # pasta 2023 (Debian 12) loses the replies of UDP forwarded to another port number
    "pasta": Mode("pasta", "pasta", ("allow_host_loopback",), udp_same_port=True),
}
#: the mode of every other name: a user-defined network (``sandboxer network create``)
USER_DEFINED = Mode("bridge")


def mode_of(name: str) -> Mode:
    """The :class:`Mode` of a ``--network`` name (a built-in mode, else a user-defined network)."""
    return MODES.get(name, USER_DEFINED)


class PortMapping(record("PortMapping", "host_ip host_port container_port proto")):
    """``-p [HOSTIP:][HOSTPORT:]CPORT[/tcp|udp]``; host_port 0 means "a free one"."""

    host_ip: str
    host_port: int
    container_port: int
    proto: str
    __slots__ = ()

    def __str__(self) -> str:
        return f"{self.host_ip}:{self.host_port}->{self.container_port}/{self.proto}"


class NetworkSpec(record("NetworkSpec", "mode allow_host_loopback ports dns add_hosts aliases",
                         defaults=(False, (), (), (), ()))):
    """``mode``: a :data:`MODES` name or a user-defined network's; ``aliases``: on a user-defined
    network, the names its peers resolve this sandbox by (its name, ``--network-alias``es, hostname)."""

    mode: str
    allow_host_loopback: bool
    ports: tuple[PortMapping, ...]
    dns: tuple[str, ...]
    add_hosts: tuple[tuple[str, str], ...]
    aliases: tuple[str, ...]
    __slots__ = ()

    @property
    def stack(self) -> str | None:
        """The module of this package that attaches the mode (see :class:`Mode`), or None."""
        return mode_of(self.mode).stack


def preferred_stack() -> str:
    """The user-mode stack to use when the caller names none: pasta where installed (see the README's numbers)."""
    from ..programs import find

    return "pasta" if find("pasta") else "slirp4netns"


def parse_network(text: str, ports: tuple[PortMapping, ...] = (), dns: tuple[str, ...] = (),
                  add_hosts: tuple[str, ...] = ()) -> NetworkSpec:
    name, _, options = text.partition(":")
    if not name:
        raise UsageError(f"--network {text!r} names no network mode",
                         hint="use none (the default), host, pasta, slirp4netns, or a network 'sandboxer network "
                              "ls' lists")
    mode = MODES.get(name)
    if mode is None:
        from .networks import exists

        if not exists(name):
            raise UsageError(f"unknown network mode or network {text!r}",
                             hint="use none (the default), host, pasta, slirp4netns[:allow_host_loopback=true], "
                                  f"or a network made with 'sandboxer network create {name}'")
        mode = USER_DEFINED
        if any(p.proto == "udp" for p in ports):  # the holder's slirp4netns drops replies (as with slirp4netns)
            raise UsageError(f"publishing UDP ports from the user-defined network {name!r} is not supported",
                             hint="publish TCP ports, or run the UDP server with --network pasta")
    allow = False
    for option in filter(None, options.split(",")):
        key, _, value = option.partition("=")
        if key not in mode.options or value not in ("true", "false"):
            takes = f"{name} takes " + ", ".join(f"{o}=true|false" for o in mode.options) if mode.options \
                else f"{name} takes no options"
            raise UsageError(f"unsupported network option {option!r} for {name}", hint=takes)
        allow = value == "true"
    if ports and mode.stack is None:  # (before any user-defined network check: none and host)
        raise UsageError(f"publishing ports needs a network that can carry them, not {name!r}",
                         hint=f"add --network {preferred_stack()}")
    if mode.udp_needs_loopback and any(p.proto == "udp" for p in ports) and not allow:
        raise UsageError(f"publishing UDP ports needs host loopback: {name} drops the replies otherwise",
                         hint=f"use --network {name}:allow_host_loopback=true (the sandbox can then reach "
                              "the host's 127.0.0.1 through 10.0.2.2), or --network pasta")
    if mode.udp_same_port:
        ports = tuple(_same_port_udp(p, name) for p in ports)
    _refuse_shared_host_ports(ports, name, mode)
    if (dns or add_hosts) and mode.stack is None:
        option = "--dns" if dns else "--add-host"
        raise UsageError(f"{option} needs a network mode whose /etc/resolv.conf and /etc/hosts sandboxer writes, "
                         f"not {name}", hint=f"use --network {preferred_stack()} (or a user-defined network), "
                                             f"or leave out {option}")
    hosts = []
    for entry in add_hosts:
        host, sep, address = entry.partition(":")
        if not sep or not host or not address:
            raise UsageError(f"invalid --add-host {entry!r}", hint="use --add-host NAME:IP")
        validate_name(host, "--add-host name", 253)
        hosts.append((host, _address(address, f"--add-host {entry!r}", "use --add-host NAME:IP, e.g. db:10.89.0.5")))
    dns = tuple(_address(server, "--dns", "use --dns IP, e.g. --dns 10.0.2.3") for server in dns)
    return NetworkSpec(name, allow, ports, dns, tuple(hosts))


def _address(text: str, what: str, hint: str) -> str:
    """``text`` if it is an IPv4 or IPv6 address (without an IPv6 scope, which is free text): it goes into
    resolv.conf or hosts as it is."""
    import ipaddress  # only with --dns or --add-host: it imports re (see the README's "Speed")

    try:
        ipaddress.ip_address("" if "%" in text else text)
    except ValueError:
        raise UsageError(f"invalid {what}: {text!r} is not an IP address", hint=hint) from None
    return text


def _refuse_shared_host_ports(ports: tuple[PortMapping, ...], name: str, mode: Mode) -> None:
    """Two mappings of one host port (and protocol) would fail the start in the stack's own words
    (pasta: "Overlapping port specifier"); ``-p CPORT`` mappings get distinct free ports later."""
    given = [m for m in ports if m.host_port]
    for i, m in enumerate(given):
        for other in given[:i]:
            if (other.host_port, other.proto) != (m.host_port, m.proto):
                continue
            if not mode.port_per_address:
                hint = f"with --network {name}, a host port number serves one mapping, whatever the address"
            elif "0.0.0.0" in (m.host_ip, other.host_ip) or m.host_ip == other.host_ip:
                hint = "give each mapping a host port (or a host address) of its own"
            else:
                continue
            raise UsageError(f"host port {m.host_port}/{m.proto} is published twice ({other} and {m})", hint=hint)


def _same_port_udp(mapping: PortMapping, mode: str) -> PortMapping:
    if mapping.proto != "udp" or mapping.host_port == mapping.container_port:
        return mapping
    if mapping.host_port == 0:
        return mapping._replace(host_port=mapping.container_port)
    raise UsageError(f"{mode} cannot publish UDP port {mapping.container_port} on another host port "
                     f"({mapping.host_port}): the replies would be lost",
                     hint=f"use -p {mapping.container_port}:{mapping.container_port}/udp, or --network "
                          "slirp4netns:allow_host_loopback=true")


def parse_publish(text: str) -> PortMapping:
    """Docker's ``-p`` syntax (an IPv4 host address only)."""
    hint = "use -p [HOSTIP:][HOSTPORT:]CONTAINERPORT[/tcp|udp], e.g. -p 8080:80 or -p 127.0.0.1::80/udp"
    spec, _, proto = text.partition("/")
    proto = proto or "tcp"
    parts = spec.split(":")
    if proto not in ("tcp", "udp") or not 1 <= len(parts) <= 3:
        raise UsageError(f"invalid port mapping {text!r}", hint=hint)
    host_ip = parts[0] if len(parts) == 3 else "0.0.0.0"
    host_port = parts[-2] if len(parts) >= 2 else ""
    try:
        container = int(parts[-1])
        host = int(host_port) if host_port else 0
    except ValueError:
        raise UsageError(f"invalid port mapping {text!r}", hint=hint) from None
    if not 0 < container < 65536 or not 0 <= host < 65536 or not _is_ipv4(host_ip):
        raise UsageError(f"invalid port mapping {text!r}", hint=hint)
    return PortMapping(host_ip, host, container, proto)


def exposed_ports(exposed: object) -> tuple[PortMapping, ...]:
    """``-P``: each of an image's ``ExposedPorts`` (``{"80/tcp": {}}``) on a free port of every host address."""
    mappings = []
    for key in exposed if isinstance(exposed, dict) else ():
        port, _, proto = str(key).partition("/")
        proto = proto or "tcp"
        if not port.isdecimal() or not 0 < int(port) < 65536 or proto not in ("tcp", "udp"):
            raise UsageError(f"the image exposes {key!r}, which -P cannot publish",
                             hint="publish its ports one by one with -p (sctp and port ranges are not supported)")
        mappings.append(PortMapping("0.0.0.0", 0, int(port), proto))
    return tuple(sorted(mappings, key=lambda m: (m.container_port, m.proto)))


def require_host(spec: NetworkSpec) -> None:
    """The mode's program and /dev/net/tun (where each stack creates tap0), before anything is created."""
    program = mode_of(spec.mode).program
    if program is None:
        return
    from ..programs import require

    require(program)
    if not os.access("/dev/net/tun", os.R_OK | os.W_OK):
        raise HostError(f"/dev/net/tun is not accessible: {program} cannot create the sandbox's interface",
                        hint="sudo chmod 0666 /dev/net/tun (or load the tun module)")


def _is_ipv4(text: str) -> bool:
    parts = text.split(".")
    return len(parts) == 4 and all(p.isdecimal() and int(p) < 256 for p in parts)


def etc_files(state_dir: str, hostname: str, spec: NetworkSpec) -> list[tuple[str, str]]:
    """(host file, path inside) pairs for /etc/resolv.conf and /etc/hosts of a sandbox with a user-mode
    stack or on a user-defined network (whose hosts file is filled as it attaches, and kept up to date
    as peers come and go: see :func:`sandboxer.network.networks.sync_hosts`)."""
    user_defined = mode_of(spec.mode) is USER_DEFINED
    out = []
    if spec.dns or not user_defined:  # on a user-defined network, the root's own resolv.conf unless told
        resolv = os.path.join(state_dir, "resolv.conf")
        with open(resolv, "w") as f:
            f.writelines(f"nameserver {server}\n" for server in (spec.dns or (DNS_ADDRESS,)))
        os.chmod(resolv, 0o644)
        out.append((resolv, "/etc/resolv.conf"))
    hosts = os.path.join(state_dir, "hosts")
    with open(hosts, "w") as f:
        if not user_defined:
            f.write(host_lines(GUEST_ADDRESS, (hostname,), spec.add_hosts))
            if spec.allow_host_loopback:
                f.write(f"{HOST_GATEWAY}\thost.containers.internal\n")
    os.chmod(hosts, 0o644)
    out.append((hosts, "/etc/hosts"))
    return out


def host_lines(address: str, names: tuple[str, ...], extra: tuple[tuple[str, str], ...] = (),
               peers: tuple[tuple[str, tuple[str, ...]], ...] = ()) -> str:
    """An /etc/hosts: localhost, this sandbox, its peers, then ``--add-host`` entries."""
    lines = ["127.0.0.1\tlocalhost", "::1\tlocalhost ip6-localhost ip6-loopback", f"{address}\t{' '.join(names)}"]
    lines += [f"{peer}\t{' '.join(peer_names)}" for peer, peer_names in peers]
    lines += [f"{ip}\t{name}" for name, ip in extra]
    return "\n".join(lines) + "\n"
