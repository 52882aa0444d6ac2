"""Sandbox networking, rootless: what ``--network`` and ``-p`` ask for, checked before anything starts.

Modes: ``none`` (a fresh network namespace with only ``lo``: the default,
because a sandbox for tests should reach nothing it was not given),
``host`` (the caller's namespace, explicitly), and ``slirp4netns[:OPT=V,…]``
(a user-mode TCP/IP stack attached while the sandbox waits; see
:mod:`sandboxer.network.slirp`).  The set-up order lives in the
``sandboxer_attach`` hook of :mod:`sandboxer.builtins`.
"""

from __future__ import annotations

import os
from collections import namedtuple

from ..errors import UsageError

__all__ = ["NetworkSpec", "PortMapping", "parse_network", "parse_publish", "GUEST_ADDRESS", "DNS_ADDRESS",
           "HOST_GATEWAY", "etc_files"]

#: slirp4netns' fixed addresses in its default 10.0.2.0/24
GUEST_ADDRESS = "10.0.2.100"
HOST_GATEWAY = "10.0.2.2"
DNS_ADDRESS = "10.0.2.3"
_MODES = ("none", "host", "slirp4netns")


class PortMapping(namedtuple("PortMapping", "host_ip host_port container_port proto")):
    """``-p [HOSTIP:][HOSTPORT:]CPORT[/tcp|udp]``; host_port 0 means "a free one"."""

    host_ip: str
    host_port: int
    container_port: int
    proto: str
    __slots__ = ()

    def __str__(self) -> str:
        return f"{self.host_ip}:{self.host_port}->{self.container_port}/{self.proto}"


class NetworkSpec(namedtuple("NetworkSpec", "mode allow_host_loopback ports dns add_hosts",
                             defaults=(False, (), (), ()))):
    mode: str
    allow_host_loopback: bool
    ports: tuple[PortMapping, ...]
    dns: tuple[str, ...]
    add_hosts: tuple[tuple[str, str], ...]
    __slots__ = ()


def parse_network(text: str, ports: tuple[PortMapping, ...] = (), dns: tuple[str, ...] = (),
                  add_hosts: tuple[str, ...] = ()) -> NetworkSpec:
    mode, _, options = text.partition(":")
    if mode not in _MODES:
        raise UsageError(f"unknown network mode {text!r}",
                         hint="use none (the default), host, or slirp4netns[:allow_host_loopback=true]")
    allow = False
    for option in filter(None, options.split(",")):
        key, _, value = option.partition("=")
        if mode != "slirp4netns" or key != "allow_host_loopback" or value not in ("true", "false"):
            raise UsageError(f"unsupported network option {option!r} for {mode}",
                             hint="slirp4netns takes allow_host_loopback=true|false")
        allow = value == "true"
    if ports and mode != "slirp4netns":
        raise UsageError(f"publishing ports needs a network that can carry them, not {mode!r}",
                         hint="add --network slirp4netns")
    if any(p.proto == "udp" for p in ports) and not allow:
        # slirp4netns sends a forwarded datagram's reply to 10.0.2.2, which --disable-host-loopback drops
        raise UsageError("publishing UDP ports needs host loopback: slirp4netns drops the replies otherwise",
                         hint="use --network slirp4netns:allow_host_loopback=true (the sandbox can then reach "
                              "the host's 127.0.0.1 through 10.0.2.2)")
    hosts = []
    for entry in add_hosts:
        name, sep, address = entry.partition(":")
        if not sep or not name or not address:
            raise UsageError(f"invalid --add-host {entry!r}", hint="use --add-host NAME:IP")
        hosts.append((name, address))
    return NetworkSpec(mode, allow, ports, dns, tuple(hosts))


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


def _is_ipv4(text: str) -> bool:
    parts = text.split(".")
    return len(parts) == 4 and all(p.isdigit() and int(p) < 256 for p in parts)


def etc_files(state_dir: str, hostname: str, spec: NetworkSpec) -> list[tuple[str, str]]:
    """(host file, path inside) pairs for /etc/resolv.conf and /etc/hosts of a slirp4netns sandbox."""
    resolv = os.path.join(state_dir, "resolv.conf")
    with open(resolv, "w") as f:
        f.writelines(f"nameserver {server}\n" for server in (spec.dns or (DNS_ADDRESS,)))
    hosts = os.path.join(state_dir, "hosts")
    with open(hosts, "w") as f:
        f.write(f"127.0.0.1\tlocalhost\n::1\tlocalhost ip6-localhost ip6-loopback\n{GUEST_ADDRESS}\t{hostname}\n")
        if spec.allow_host_loopback:
            f.write(f"{HOST_GATEWAY}\thost.containers.internal\n")
        f.writelines(f"{address}\t{name}\n" for name, address in spec.add_hosts)
    os.chmod(resolv, 0o644)
    os.chmod(hosts, 0o644)
    return [(resolv, "/etc/resolv.conf"), (hosts, "/etc/hosts")]
