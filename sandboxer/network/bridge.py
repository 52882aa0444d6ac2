"""Attaching a sandbox to a user-defined network: a lease, a veth pair into its bridge, peers' /etc/hosts.

The sandbox has joined the holder's user namespace (see
:mod:`sandboxer.network.rootlessns`) and made its own network namespace,
and waits.  Under the holder's lock we lease an address and have the
holder, which lives in the namespaces of the bridges, make sure the
network's bridge exists and create the pair: one end enslaved to the
bridge, the other moved into the sandbox as ``eth0``, addressed, up,
routed through the gateway.  The veth pair vanishes with the sandbox's network namespace;
:meth:`Attachment.close` returns the lease and rewrites the peers' hosts.
"""

from __future__ import annotations

import os

from ..errors import SetupError
from . import NetworkSpec, PortMapping, networks, rootlessns

__all__ = ["Attachment", "start", "GUEST_INTERFACE"]

GUEST_INTERFACE = "eth0"


class Attachment:
    """One sandbox's place on a user-defined network."""

    def __init__(self, network: networks.Network, lease: networks.Lease) -> None:
        self.network = network
        self.lease = lease
        self.ports: list[PortMapping] = []

    @property
    def address(self) -> str:
        return self.lease.address

    def describe(self) -> dict[str, object]:
        """For ``inspect`` and the pytest handle's ``ip``."""
        return {"network": self.network.name, "address": self.lease.address,
                "prefixlen": self.network.prefixlen, "gateway": self.network.gateway,
                "aliases": list(self.lease.names)}

    def publish(self, mapping: PortMapping) -> None:
        """Publish a port (see :func:`rootlessns.publish`), noting the forward in the lease first."""
        if mapping.host_port == 0:
            from .helper import free_port

            mapping = mapping._replace(host_port=free_port(mapping.host_ip, mapping.proto))
        forward = rootlessns.publish(mapping, self.lease.address, self.lease.sandbox)
        self.lease = self.lease._replace(forwards=(*self.lease.forwards, forward))
        networks.record(self.network, self.lease)
        self.ports.append(mapping)

    def close(self) -> None:
        if self.lease is None:
            return
        with rootlessns.lock():
            if self.lease.forwards and rootlessns.current() is not None:
                rootlessns.unpublish(self.lease.sandbox, self.lease.forwards)
            networks.release(self.network, self.lease)
            networks.sync_hosts(self.network)
        self.lease = None  # type: ignore[assignment]


def start(pid: int, spec: NetworkSpec, state_dir: str) -> Attachment:
    """Attach the waiting sandbox whose set-up process is ``pid`` to the network ``spec.mode``."""
    network = networks.load(spec.mode)
    sandbox_id = os.path.basename(state_dir)
    guest = os.open(f"/proc/{pid}/ns/net", os.O_RDONLY | os.O_CLOEXEC)
    try:
        with rootlessns.lock():
            holder = rootlessns.current()
            if holder is None or os.stat(holder.user_ns).st_ino != os.stat(f"/proc/{pid}/ns/user").st_ino:
                raise SetupError(f"attach to network {network.name}",
                                 "the network namespace holder was restarted while the sandbox started",
                                 hint="run the command again")
            lease = networks.allocate(network, sandbox_id, spec.aliases, os.path.join(state_dir, "hosts"),
                                      spec.add_hosts)
            attachment = Attachment(network, lease)
            try:
                rootlessns.request("plug", network.bridge, network.gateway, network.prefixlen, networks.MTU,
                                   rootlessns.nft_if_outbound(), f"sbxv{sandbox_id[:8]}", GUEST_INTERFACE,
                                   lease.address, fd=guest)
                for mapping in spec.ports:
                    attachment.publish(mapping)
            except BaseException:
                if attachment.lease.forwards:
                    rootlessns.unpublish(sandbox_id, attachment.lease.forwards)
                networks.release(network, attachment.lease)
                raise
            networks.sync_hosts(network)
    finally:
        os.close(guest)
    return attachment
