"""The network namespace holder's program: it keeps the namespaces alive and does the work inside them.

Started by :mod:`sandboxer.network.rootlessns` as ``python -m
sandboxer.network.holder SOCKET READY_FD`` once it is in its own user and
network namespaces.  It imports pyroute2 once (~170 ms, ~19 MB: paid here
rather than by every ``run``), binds ``SOCKET`` (a SOCK_SEQPACKET socket in
the user's private state directory), says ``ready`` on READY_FD and serves
one request per connection: ``{"op": NAME, "args": [...]}``, with the
sandbox's network namespace as an SCM_RIGHTS fd where one is needed.  Each
request runs in a forked child — a failure can't take the namespaces down —
that answers ``{"ok": true}`` or ``{"error": [step, message, hint]}``.
Callers serialize their requests under the holder's lock.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import sys
from collections.abc import Callable

from .. import syscalls as sc
from ..errors import SetupError
from . import netlink

__all__ = ["main", "OPS"]

_NFT_TABLE = "ip sandboxer"
#: NAT out of tap0; each bridge adds a rule to ``forward`` keeping it apart from the others (``oifname !=
#: ITSELF``: with br_netfilter, traffic within a bridge passes that hook too)
RULESET = """table ip sandboxer {
    chain postrouting { type nat hook postrouting priority srcnat; oifname "tap0" masquerade; }
    chain prerouting { type nat hook prerouting priority dstnat; }
    chain forward { type filter hook forward priority filter; }
}
"""


def _outbound(nft: str) -> None:
    """IPv4 forwarding and the NAT table, once slirp4netns has made ``tap0``."""
    with open("/proc/sys/net/ipv4/ip_forward", "w") as f:  # this network namespace's
        f.write("1")
    _nft(nft, RULESET)


def _plug(guest: int, bridge: str, gateway: str, prefixlen: int, mtu: int, nft: str | None, host_side: str,
          guest_side: str, address: str) -> None:
    """The bridge (made if missing, then kept apart from the others), a veth pair from it into the
    sandbox's namespace at ``guest``, and there the address and the default route."""
    if netlink.ensure_bridge(bridge, gateway, prefixlen, mtu) and nft is not None:
        _nft(nft, f'add rule {_NFT_TABLE} forward iifname "{bridge}" oifname != "{bridge}" oifname "sbx*" drop\n')
    netlink.add_veth(bridge, host_side, guest, guest_side, mtu)
    sc.setns(guest, sc.CLONE_NEWNET)
    netlink.configure_guest(guest_side, address, prefixlen, gateway)


def _nft(nft: str, commands: str) -> None:
    import subprocess

    done = subprocess.run([nft, "-f", "-"], input=commands, capture_output=True, text=True)
    if done.returncode != 0:
        why = done.stderr.strip().splitlines()[-1] if done.stderr.strip() else f"nft exited {done.returncode}"
        raise SetupError(f"configure the user-defined networks' netfilter ({commands.split(' ip ')[0]})", why)


def _nft_delete_commented(nft: str, comment: str) -> None:
    """Remove the DNAT rules of one sandbox (commented with its id)."""
    import subprocess

    listing = subprocess.run([nft, "-a", "list", "chain", "ip", "sandboxer", "prerouting"], capture_output=True,
                             text=True).stdout
    handles = [line.rsplit("# handle ", 1)[1].strip() for line in listing.splitlines()
               if f'comment "{comment}"' in line and "# handle " in line]
    if handles:
        _nft(nft, "".join(f"delete rule {_NFT_TABLE} prerouting handle {h}\n" for h in handles))


def _links() -> list[str]:
    return netlink.link_names()


#: what a request may ask for; ``plug`` takes the sandbox's network namespace as its fd
OPS: dict[str, Callable[..., object]] = {
    "outbound": _outbound, "plug": _plug, "delete_link": netlink.delete_link, "nft": _nft,
    "nft_delete_commented": _nft_delete_commented, "links": _links,
}


def _handle(conn: socket.socket) -> None:  # pragma: no cover - runs in a forked child of the holder
    """One request, in a child: run it and answer."""
    reply: dict[str, object]
    try:
        data, fds, _, _ = socket.recv_fds(conn, 65536, 1)
        request = json.loads(data)
        args = [*fds, *request.get("args", ())]
        result = OPS[request["op"]](*args)
        reply = {"ok": True, "result": result}
    except SetupError as e:
        reply = {"error": [e.step, e.message.removeprefix(f"{e.step}: "), e.hint or ""]}
    except Exception as e:  # every failure goes back to the caller
        reply = {"error": ["configure the network", str(e) or type(e).__name__, ""]}
    conn.send(json.dumps(reply).encode())


def serve(listener: socket.socket) -> None:  # pragma: no cover - the holder's loop
    signal.signal(signal.SIGCHLD, signal.SIG_IGN)  # children reap themselves
    while True:
        conn, _ = listener.accept()
        if os.fork() == 0:
            code = 1
            try:
                signal.signal(signal.SIGCHLD, signal.SIG_DFL)  # nft is waited for with subprocess
                listener.close()
                _handle(conn)
                code = 0
            finally:
                os._exit(code)
        conn.close()


def main(argv: list[str]) -> int:  # pragma: no cover - the holder's entry point
    path, ready = argv[0], int(argv[1])
    netlink.load()
    try:
        os.unlink(path)
    except FileNotFoundError:
        pass
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_SEQPACKET)
    listener.bind(path)
    listener.listen(16)
    os.write(ready, b"ready\n")
    os.close(ready)
    serve(listener)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
