"""User-defined networks: their definitions, their address leases, and their members' ``/etc/hosts``.

A network is a definition — name, subnet, gateway, bridge name — kept in
``<data dir>/networks/NAME.json`` (it outlives reboots, as podman's do);
its bridge lives in the per-user namespace of
:mod:`sandboxer.network.rootlessns` and is made when a sandbox first needs
it.  That namespace is shared by the networks of every data dir, so each
network claims its bridge and subnet there (``<state root>/netns/networks/
BRIDGE.json``, see :func:`claim`): a new network avoids those of other data
dirs, and one that clashes is refused.  Each attached sandbox holds a lease
``<state root>/netns/leases/NETWORK-ID/IP`` naming it; a lease whose
sandbox no longer runs (its state directory's lock is free, see
:mod:`sandboxer.state`) is stale and is dropped by the next change, so a
SIGKILLed sandbox never keeps its address.  Every member's ``/etc/hosts``
(a file in its state directory, bound read-only) is rewritten in place
whenever a member comes or goes, so peers resolve each other by name,
aliases and hostname.
"""

from __future__ import annotations

import ipaddress
import json
import os
import time

from .. import records
from ..errors import HostError, UsageError
from ..state import Lock, state_root, subdir, unlink_quiet, validate_name, write_atomically

TYPE_CHECKING = False
if TYPE_CHECKING:
    from . import PortMapping

__all__ = ["Network", "Lease", "definitions_dir", "create", "load", "exists", "all_networks", "remove", "claim",
           "served", "allocate", "record", "release", "unpublish", "published_elsewhere", "any_live_lease", "leases",
           "sync_hosts", "describe", "prune_leases", "RESERVED"]

#: the user-mode stacks' own network (slirp4netns, pasta): never a bridge's
RESERVED = ipaddress.ip_network("10.0.2.0/24")
#: ranges whose addresses cannot be a bridge's or a sandbox's: the kernel treats them specially
_UNUSABLE = {"0.0.0.0/8": "'this network' (unspecified)", "127.0.0.0/8": "loopback", "169.254.0.0/16": "link-local",
             "224.0.0.0/4": "multicast", "240.0.0.0/4": "reserved (and broadcast)"}
#: where automatic subnets are taken from, as podman's 10.89.N.0/24
_AUTO = "10.89.{}.0/24"


class Network(records.record("Network", "name id subnet gateway bridge created")):
    """A network's definition (its JSON file)."""

    name: str
    id: str
    subnet: str
    gateway: str
    bridge: str
    created: float
    __slots__ = ()

    @property
    def prefixlen(self) -> int:
        return int(self.subnet.rpartition("/")[2])


class Lease(records.record("Lease", "address sandbox names hosts extra holder ports", defaults=((), (0, 0), ()))):
    """An address of a network held by a sandbox."""

    address: str
    sandbox: str                           #: its id
    names: tuple[str, ...]                 #: what peers call it: its --name, its aliases, its hostname
    hosts: str                             #: its /etc/hosts file on the host
    extra: tuple[tuple[str, str], ...]     #: its --add-host entries (name, address)
    holder: tuple[int, int]                #: the holder that plugged it (pid, start time)
    #: its published ports, each recorded before it is published (so a crash mid-way is undone too)
    ports: tuple[PortMapping, ...]
    __slots__ = ()

    def to_json(self) -> str:
        return json.dumps({**self._asdict(), "ports": [m._asdict() for m in self.ports]})

    @classmethod
    def from_json(cls, text: str) -> Lease:
        from . import PortMapping

        data = json.loads(text)
        lease = cls(**{**data, "names": tuple(data["names"]), "extra": tuple(tuple(e) for e in data["extra"]),
                       "holder": tuple(data["holder"]), "ports": tuple(PortMapping(**m) for m in data["ports"])})
        if not isinstance(lease.address, str) or not isinstance(lease.sandbox, str):
            raise TypeError("not a lease")
        return lease


def definitions_dir() -> str:
    from ..images.store import store_root

    path = os.path.join(store_root(), "networks")
    os.makedirs(path, mode=0o700, exist_ok=True)
    return path


def _path(name: str) -> str:
    return os.path.join(definitions_dir(), f"{name}.json")


def exists(name: str) -> bool:
    return _valid(name) and os.path.exists(_path(name))


def _valid(name: str) -> bool:
    try:
        validate_name(name)
    except UsageError:
        return False
    return True


def load(name: str) -> Network:
    if not _valid(name):
        raise UsageError(f"no network {name!r}", hint="see 'sandboxer network ls'")
    try:
        with open(_path(name)) as f:
            return Network(**json.load(f))
    except FileNotFoundError:
        raise UsageError(f"no network {name!r}", hint=f"create it: sandboxer network create {name}") from None
    except (ValueError, TypeError) as e:
        raise HostError(f"the definition of network {name!r} is unreadable ({e})",
                        hint=f"remove {_path(name)} and create the network again") from None


def all_networks() -> list[Network]:
    names = sorted(e[:-5] for e in os.listdir(definitions_dir()) if e.endswith(".json"))
    return [load(n) for n in names]


def create(name: str, subnet: str | None = None) -> Network:
    """Define a network; its subnet must not overlap another's (nor 10.0.2.0/24)."""
    from . import MODES

    validate_name(name, "network name")
    if name in MODES:
        raise UsageError(f"{name!r} is a network mode, not a name a network can have", hint="choose another name")
    from . import rootlessns

    with Lock(os.path.join(definitions_dir(), ".lock")), rootlessns.lock():
        if exists(name):
            raise UsageError(f"network {name!r} already exists", hint="choose another name, or remove it first")
        others = _taken()
        net = _subnet(subnet, others) if subnet else _free_subnet(others)
        used = {n.bridge for n, _ in others}
        bridge = next(f"sbx{i}" for i in range(len(others) + 1) if f"sbx{i}" not in used)
        network = Network(name, os.urandom(32).hex(), str(net), str(next(net.hosts())), bridge, time.time())
        write_atomically(_path(name), json.dumps(network._asdict(), indent=2) + "\n")
        claim(network)
    return network


def _taken() -> list[tuple[Network, str]]:
    """The networks a new one must keep clear of, each with its data dir ("" for this one's): this data
    dir's, and those of others that the user's holder serves."""
    own = all_networks()
    ids = {n.id for n in own}
    return [(n, "") for n in own] + [(n, where) for n, where in _claims() if n.id not in ids]


def _subnet(text: str, others: list[tuple[Network, str]]) -> ipaddress.IPv4Network:
    hint = "give an IPv4 network in CIDR form with at least 4 addresses, e.g. --subnet 10.90.0.0/24"
    try:
        net = ipaddress.ip_network(text)
    except ValueError as e:
        raise UsageError(f"invalid subnet {text!r}: {e}", hint=hint) from None
    if not isinstance(net, ipaddress.IPv4Network) or net.prefixlen > 30:
        raise UsageError(f"invalid subnet {text!r}", hint=hint)
    if net.overlaps(RESERVED):
        raise UsageError(f"subnet {net} overlaps {RESERVED}, the network of pasta and slirp4netns",
                         hint="choose another subnet")
    for unusable, what in _UNUSABLE.items():
        if net.overlaps(ipaddress.ip_network(unusable)):
            raise UsageError(f"subnet {net} overlaps {unusable}, the {what} range: sandboxes cannot use it",
                             hint="choose a private range, e.g. --subnet 10.90.0.0/24 (or in 172.16.0.0/12, "
                                  "192.168.0.0/16)")
    for other, where in others:
        if net.overlaps(ipaddress.ip_network(other.subnet)):
            raise UsageError(f"subnet {net} overlaps {other.subnet} of network {other.name!r}"
                             + (f" of data dir {where}" if where else ""),
                             hint="choose another subnet (sandboxer network ls shows those in use)")
    return net


def _free_subnet(others: list[tuple[Network, str]]) -> ipaddress.IPv4Network:
    taken = [ipaddress.ip_network(o.subnet) for o, _ in others]
    for i in range(256):
        net = ipaddress.IPv4Network(_AUTO.format(i))
        if not any(net.overlaps(t) for t in taken):
            return net
    raise UsageError("no free subnet left in 10.89.0.0/16", hint="give one with --subnet")


def remove(name: str) -> Network:
    """Forget a network no sandbox uses — running, or exited but not removed (its ``restart`` needs it) —
    and its bridge; the holder goes with the last network of any data dir."""
    from . import rootlessns

    exited = _exited_members(name)  # read before the lock: a lost supervisor found there frees its lease under it
    with rootlessns.lock():  # an attach loads the definition under it too: never onto a network going away
        network = load(name)
        users = [lease.names[0] if lease.names else lease.sandbox[:12] for lease in leases(network)]
        users += [f"{who} (exited)" for who in exited]
        if users:
            raise UsageError(f"network {name!r} is in use by {', '.join(users)}",
                             hint="stop and remove those sandboxes first (sandboxer rm -f NAME)" if exited
                             else "stop those sandboxes first")
        bridge_was_ours = _unclaim(network)
        unlink_quiet(_path(name))
        _remove_lease_dir(network)
        if not _claims():
            rootlessns.stop()
        elif bridge_was_ours and rootlessns.current() is not None:
            rootlessns.request("unplug_bridge", network.bridge)
    return network


def _exited_members(name: str) -> list[str]:
    """The detached sandboxes on network ``name`` that have exited but are kept (docker refuses to remove
    a network any container is connected to, running or not)."""
    from .. import supervisor

    return [r.get("name") or r["id"][:12] for r in supervisor.records(all_=True)
            if r["status"] != "running" and (r.get("options") or {}).get("network") == name]


def describe(network: Network) -> dict[str, object]:
    """``network inspect``: the definition, as docker shows one, with the sandboxes on it now."""
    from . import rootlessns

    with rootlessns.lock():
        members = leases(network)
    return {"Name": network.name, "Id": network.id,
            "Created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(network.created)),
            "Driver": "bridge", "NetworkInterface": network.bridge,
            "Subnets": [{"Subnet": network.subnet, "Gateway": network.gateway}],
            "Containers": {m.sandbox: {"Names": list(m.names), "IPv4Address": f"{m.address}/{network.prefixlen}"}
                           for m in members}}


def prune_leases() -> list[tuple[str, str]]:
    """``system prune``: drop the leases of sandboxes that are gone (their ports too), and rewrite the
    peers' hosts; returns (network, address) of each one freed."""
    from . import rootlessns

    freed = []
    with rootlessns.lock():
        for network in served():
            held = {e for e in os.listdir(_lease_dir(network)) if not e.endswith(".tmp")}
            gone = sorted(held - {lease.address for lease in leases(network)})
            if gone:
                sync_hosts(network)
                freed += [(network.name, address) for address in gone]
    return freed


# -- claims and leases (call these under rootlessns.lock()) ---------------------------------------

def _claims_dir() -> str:
    from .rootlessns import DIRECTORY

    return subdir(DIRECTORY, "networks")


def _claims() -> list[tuple[Network, str]]:
    """The networks that hold a claim on the holder's bridges and subnets, each with its data dir; a claim
    whose definition is gone (or is another network's now) is dropped."""
    out = []
    for entry in sorted(e for e in os.listdir(_claims_dir()) if e.endswith(".json")):
        file = os.path.join(_claims_dir(), entry)
        try:
            with open(file) as f:
                data = json.load(f)
            where = data.pop("data_dir")
            network = Network(**data)
            with open(os.path.join(where, "networks", f"{network.name}.json")) as f:
                current = json.load(f)["id"] == network.id
        except (OSError, ValueError, TypeError, KeyError):
            current = False
        if current:
            out.append((network, where))
        else:
            unlink_quiet(file)
    return out


def served() -> list[Network]:
    """The networks of every data dir that the user's holder serves (that have claimed a bridge)."""
    return [network for network, _ in _claims()]


def claim(network: Network) -> None:
    """Reserve ``network``'s bridge and subnet in the holder's namespace.  Definitions are per data dir, but
    the holder, its bridges and the leases are per user (per state root): a network whose bridge or subnet
    one of another data dir has claimed — defined under another state root, or before a reboot emptied the
    claims — is refused rather than shared."""
    claims = _claims()
    if _holds_claim(network, claims):
        return
    for other, where in claims:
        if other.bridge == network.bridge or ipaddress.ip_network(other.subnet).overlaps(
                ipaddress.ip_network(network.subnet)):
            raise UsageError(f"network {network.name!r} ({network.subnet}, {network.bridge}) clashes with network "
                             f"{other.name!r} of data dir {where} ({other.subnet}, {other.bridge})",
                             hint="networks of all data dirs share one namespace per user: remove one of them "
                                  "and create it again (it gets a free subnet and bridge)")
    write_atomically(os.path.join(_claims_dir(), f"{network.bridge}.json"),
                     json.dumps({**network._asdict(), "data_dir": _data_dir()}))


def _unclaim(network: Network) -> bool:
    """Drop ``network``'s claim; whether it had one (so the holder's bridge is its)."""
    if not _holds_claim(network, _claims()):
        return False
    unlink_quiet(os.path.join(_claims_dir(), f"{network.bridge}.json"))
    return True


def _holds_claim(network: Network, claims: list[tuple[Network, str]]) -> bool:
    """Whether ``network`` of this data dir is among ``claims`` (a copied data dir's, same id, is not)."""
    return (network.id, _data_dir()) in {(n.id, where) for n, where in claims}


def _data_dir() -> str:
    """This data dir, as claims name it (a relative or linked $SANDBOXER_DATA_DIR names one place)."""
    return os.path.dirname(os.path.realpath(definitions_dir()))


def _lease_dir(network: Network) -> str:
    """By id: two data dirs' networks may have one name."""
    from .rootlessns import DIRECTORY

    return subdir(DIRECTORY, "leases", network.id)


def _remove_lease_dir(network: Network) -> None:
    path = _lease_dir(network)
    for entry in os.listdir(path):
        unlink_quiet(os.path.join(path, entry))
    os.rmdir(path)


def leases(network: Network) -> list[Lease]:
    """The live leases of ``network``, in address order; stale ones are removed."""
    from ..state import is_alive

    path = _lease_dir(network)
    out = []
    for entry in os.listdir(path):
        file = os.path.join(path, entry)
        try:
            with open(file) as f:
                lease = Lease.from_json(f.read())
        except (OSError, ValueError, TypeError, KeyError):
            unlink_quiet(file)  # a write cut short: its writer held the lock and is gone
            continue
        if is_alive(os.path.join(state_root(), lease.sandbox)):
            out.append(lease)
            continue
        unpublish(lease)  # a sandbox killed before it could
        unlink_quiet(file)
    return sorted(out, key=lambda lease: ipaddress.ip_address(lease.address))


def allocate(network: Network, sandbox: str, names: tuple[str, ...], hosts: str,
             extra: tuple[tuple[str, str], ...], holder: tuple[int, int]) -> Lease:
    """The lowest free address of ``network`` (the gateway excepted), leased to ``sandbox``."""
    used = {lease.address for lease in leases(network)} | {network.gateway}
    for address in ipaddress.ip_network(network.subnet).hosts():
        if str(address) not in used:
            lease = Lease(str(address), sandbox, names, hosts, extra, holder)
            record(network, lease)
            return lease
    raise HostError(f"network {network.name!r} has no free address ({network.subnet})",
                    hint="remove some of its sandboxes, or use a network with a larger --subnet")


def record(network: Network, lease: Lease) -> None:
    """Write (or update) a lease."""
    write_atomically(os.path.join(_lease_dir(network), lease.address), lease.to_json())


def unpublish(lease: Lease) -> None:
    """Undo the ports a lease published — if the holder that published them still runs (with another,
    they went with the old one, and the host ports may be a new sandbox's now)."""
    from . import rootlessns

    holder = rootlessns.current()
    if lease.ports and holder is not None and holder.identity == lease.holder:
        rootlessns.unpublish(holder, lease.sandbox, lease.ports)


def published_elsewhere(mapping: PortMapping) -> Lease | None:
    """The live lease, on any network, that publishes ``mapping``'s host port (and protocol) already:
    the holder's tap0 side of a forward uses the host port's number, so it can serve one sandbox only."""
    for network in served():
        for lease in leases(network):
            if any(m.host_port == mapping.host_port and m.proto == mapping.proto for m in lease.ports):
                return lease
    return None


def any_live_lease() -> bool:
    return any(leases(network) for network in served())


def release(network: Network, lease: Lease) -> None:
    unlink_quiet(os.path.join(_lease_dir(network), lease.address))


def sync_hosts(network: Network) -> None:
    """Rewrite each member's /etc/hosts: itself first, then every peer, by name, aliases and hostname."""
    from . import host_lines

    members = leases(network)
    for member in members:
        peers = tuple((peer.address, peer.names) for peer in members if peer is not member)
        _rewrite_in_place(member.hosts, host_lines(member.address, member.names, member.extra, peers))


def _rewrite_in_place(path: str, text: str) -> None:
    """Same inode (the sandbox has it bound), new contents: written over the old in one write, padded
    with blank lines to the old length, then cut to length — a reader sees the old lines, or the new
    ones (perhaps followed by blank lines), never an empty file nor a torn tail."""
    try:
        fd = os.open(path, os.O_RDWR | os.O_CLOEXEC)
    except FileNotFoundError:
        return  # its sandbox is being removed
    try:
        data = text.encode()
        old = os.fstat(fd).st_size
        os.pwrite(fd, data + b"\n" * max(0, old - len(data)), 0)
        os.ftruncate(fd, len(data))
    finally:
        os.close(fd)
