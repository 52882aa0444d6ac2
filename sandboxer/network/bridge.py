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
import sys

from ..errors import SandboxerError, SetupError, UsageError
from . import NetworkSpec, PortMapping, networks, rootlessns

__all__ = ["Attachment", "start"]


class Attachment:
    """One sandbox's place on a user-defined network."""

    def __init__(self, network: networks.Network, lease: networks.Lease) -> None:
        self.network = network
        self.lease: networks.Lease | None = lease
        self.ports: list[PortMapping] = []

    def describe(self) -> dict[str, object]:
        """For ``inspect`` and the pytest handle's ``ip``."""
        assert self.lease is not None
        return {"network": self.network.name, "address": self.lease.address,
                "prefixlen": self.network.prefixlen, "gateway": self.network.gateway,
                "aliases": list(self.lease.names)}

    def publish(self, mapping: PortMapping) -> None:
        """Publish a port (see :func:`rootlessns.publish`), noted in the lease before anything is done."""
        assert self.lease is not None
        from .helper import with_host_port

        mapping = with_host_port(mapping)
        other = networks.published_elsewhere(mapping)
        if other is not None:
            raise UsageError(f"host port {mapping.host_port}/{mapping.proto} is published already, by sandbox "
                             f"{other.names[0] if other.names else other.sandbox[:12]} on a user-defined network",
                             hint="choose another host port (each serves one sandbox, whatever the address)")
        self.lease = self.lease._replace(ports=(*self.lease.ports, mapping))
        networks.record(self.network, self.lease)
        rootlessns.publish(mapping, self.lease.address, self.lease.sandbox)
        self.ports.append(mapping)

    def close(self) -> None:
        """Give the address (and the ports) back and tell the peers.  Never raises: what it could not undo
        (the holder died meanwhile) goes with that holder, or with the next lease scan."""
        if self.lease is None:
            return
        lease, self.lease = self.lease, None
        try:
            with rootlessns.lock():
                networks.unpublish(lease)
                networks.release(self.network, lease)
                networks.sync_hosts(self.network)
        except SandboxerError as e:
            print(f"sandboxer: warning: leaving network {self.network.name}: {e}", file=sys.stderr)


def start(pid: int, spec: NetworkSpec, state_dir: str) -> Attachment:
    """Attach the waiting sandbox whose set-up process is ``pid`` to the network ``spec.mode``."""
    sandbox_id = os.path.basename(state_dir)
    guest = os.open(f"/proc/{pid}/ns/net", os.O_RDONLY | os.O_CLOEXEC)
    try:
        with rootlessns.lock():
            network = networks.load(spec.mode)  # under the lock: not a network being removed
            networks.claim(network)  # its bridge and subnet, against other data dirs' networks
            holder = rootlessns.current()
            if holder is None or os.stat(holder.user_ns).st_ino != os.stat(f"/proc/{pid}/ns/user").st_ino:
                raise SetupError(f"attach to network {network.name}",
                                 "the network namespace holder was restarted while the sandbox started",
                                 hint="run the command again")
            lease = networks.allocate(network, sandbox_id, spec.aliases, os.path.join(state_dir, "hosts"),
                                      spec.add_hosts, holder.identity)
            attachment = Attachment(network, lease)
            try:
                rootlessns.request("plug", network.bridge, network.gateway, network.prefixlen,
                                   f"sbxv{sandbox_id[:8]}", lease.address, fd=guest)
                for mapping in spec.ports:
                    attachment.publish(mapping)
            except BaseException:
                assert attachment.lease is not None
                networks.unpublish(attachment.lease)
                networks.release(network, attachment.lease)
                raise
            networks.sync_hosts(network)
    finally:
        os.close(guest)
    return attachment
