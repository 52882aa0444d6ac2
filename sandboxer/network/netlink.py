"""The netlink work of user-defined networks, through pyroute2: bridges, veth pairs, addresses, routes.

Each function acts through a :func:`route` socket, on the network namespace
that socket was opened in; they run in the network namespace holder (:mod:`sandboxer.network.holder`),
which imports pyroute2 once (~170 ms, ~19 MB) for all the user's
sandboxes.  Failures raise :class:`SetupError` naming what was being done.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from typing import Any

from ..errors import SetupError

__all__ = ["load", "route", "ensure_bridge", "delete_link", "add_veth", "configure_guest"]


def load() -> None:
    """Import pyroute2 now, so the children the holder forks for its requests inherit it."""
    import pyroute2  # noqa: F401


def route() -> Any:
    """A netlink (rtnetlink) socket of the current network namespace, for a ``with`` block: the
    functions below take one, so a request opens one per namespace (each costs a forked child ~5 ms)."""
    from pyroute2 import IPRoute

    return IPRoute()


def _step(what: str, fn: Callable[..., object], *args: object, **kwargs: object) -> Any:
    try:
        return fn(*args, **kwargs)
    except Exception as e:  # pyroute2's NetlinkError carries an errno as its first argument
        code = e.args[0] if e.args and isinstance(e.args[0], int) else None
        raise SetupError(what, os.strerror(code) if code else str(e)) from None


def ensure_bridge(ip: Any, name: str, gateway: str, prefixlen: int, mtu: int,
                  isolate: Callable[[str], None]) -> None:
    """The bridge ``name``, made or repaired: ``isolate(name)`` (its firewall rule) before it is up, then
    exactly ``gateway/prefixlen`` as its address, then up — so a bridge left half-made (a helper killed
    mid-way) or reused under a new subnet is right again.  A bridge that is up with that one address was
    finished (the rule comes before up): it is left as it is, at the cost of two lookups."""
    import socket

    IFF_UP = 0x1
    links = ip.get_links(ifname=name) if ip.link_lookup(ifname=name) else []
    if not links:
        _step(f"create bridge {name}", ip.link, "add", ifname=name, kind="bridge", mtu=mtu)
        links = ip.get_links(ifname=name)
    index = links[0]["index"]
    present = {(a.get("address"), a["prefixlen"]) for a in ip.get_addr(index=index, family=socket.AF_INET)}
    if links[0]["flags"] & IFF_UP and present == {(gateway, prefixlen)}:
        return
    _step(f"bring down bridge {name}", ip.link, "set", index=index, state="down")
    isolate(name)
    for address, length in present - {(gateway, prefixlen)}:
        _step(f"remove {address}/{length} from bridge {name}", ip.addr, "del", index=index, address=address,
              prefixlen=length)
    if (gateway, prefixlen) not in present:
        _step(f"address bridge {name}", ip.addr, "add", index=index, address=gateway, prefixlen=prefixlen)
    _step(f"bring up bridge {name}", ip.link, "set", index=index, state="up")


def delete_link(ip: Any, name: str) -> None:
    """Remove the interface ``name`` if it exists."""
    found = ip.link_lookup(ifname=name)
    if found:
        _step(f"delete interface {name}", ip.link, "del", index=found[0])


def add_veth(ip: Any, bridge: str, host_side: str, guest_netns_fd: int, guest_side: str, mtu: int) -> None:
    """A veth pair: ``host_side`` enslaved to ``bridge`` and up here, ``guest_side`` moved into the
    network namespace open at ``guest_netns_fd``."""
    found = ip.link_lookup(ifname=bridge)
    if not found:
        raise SetupError(f"attach to bridge {bridge}", "the bridge does not exist")
    _step(f"create veth pair {host_side}", ip.link, "add", ifname=host_side, kind="veth", mtu=mtu,
          peer={"ifname": guest_side, "net_ns_fd": guest_netns_fd, "mtu": mtu})
    index = ip.link_lookup(ifname=host_side)[0]
    _step(f"enslave {host_side} to {bridge}", ip.link, "set", index=index, master=found[0], state="up")


def configure_guest(ip: Any, ifname: str, address: str, prefixlen: int, gateway: str) -> None:
    """Address ``ifname``, bring it up and route everything through ``gateway``."""
    index = ip.link_lookup(ifname=ifname)[0]
    _step(f"address {ifname}", ip.addr, "add", index=index, address=address, prefixlen=prefixlen)
    _step(f"bring up {ifname}", ip.link, "set", index=index, state="up")
    _step("add the default route", ip.route, "add", dst="0.0.0.0/0", gateway=gateway)
