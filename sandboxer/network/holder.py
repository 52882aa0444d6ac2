"""The network namespace holder's program: it keeps the namespaces alive and does the work inside them.

Started by :mod:`sandboxer.network.rootlessns` as ``python -m
sandboxer.network.holder SOCKET READY_FD COMMIT_FD`` once it is in
its own user and network namespaces.  It imports pyroute2 once (~170 ms,
~19 MB: paid here rather than by every ``run``), turns on forwarding and
its nftables table (where nft is installed), binds ``SOCKET`` (a
SOCK_SEQPACKET socket in the user's private state directory), says
``ready`` on READY_FD and serves one request per connection: ``{"op":
NAME, "args": [...]}``, with the sandbox's network namespace as an
SCM_RIGHTS fd for ``plug``.  It exits if its starter dies before
confirming it on COMMIT_FD (so a killed ``run`` leaves no unrecorded
holder).

Requests are trusted from nobody but the user outside any sandbox: the
peer (SO_PEERCRED) must be in the holder's PID namespace, which no sandbox
is (a sandbox that can reach the socket — a ``--read-only`` host root
shows ``$XDG_RUNTIME_DIR`` — is refused), and every argument is checked
and typed before it reaches a netlink message or an nftables rule.  Each request runs in a forked child
(a failure can't take the namespaces down) that answers ``{"ok": true}``
or ``{"error": [step, message, hint]}``.  Callers serialize their
requests under the holder's lock.
"""

from __future__ import annotations

import ipaddress
import json
import os
import re
import select
import socket
import struct
import sys
from collections.abc import Callable

from .. import signals
from .. import syscalls as sc
from ..errors import SetupError
from . import netlink

__all__ = ["main", "OPS", "PROTOCOL", "GUEST_INTERFACE", "MTU"]

#: bumped when a request changes meaning: a caller refuses (or replaces) a holder of another protocol
PROTOCOL = 2
#: the sandbox's end of its veth pair
GUEST_INTERFACE = "eth0"
#: bridges and veth pairs: large frames keep sandbox-to-sandbox traffic cheap
MTU = 65520
_TABLE = "ip sandboxer"
#: NAT out of tap0 (slirp4netns's); each bridge adds a rule to ``forward`` keeping it apart from the others
#: (``oifname != ITSELF``: with br_netfilter, traffic within a bridge passes that hook too)
RULESET = """table ip sandboxer {
    chain postrouting { type nat hook postrouting priority srcnat; oifname "tap0" masquerade; }
    chain prerouting { type nat hook prerouting priority dstnat; }
    chain forward { type filter hook forward priority filter; }
}
"""
_BRIDGE = re.compile(r"sbx[0-9]{1,4}")
_VETH = re.compile(r"sbxv[0-9a-f]{8}")
_SANDBOX = re.compile(r"[0-9a-f]{64}")

#: nft's path, found at start (None: not installed, so no forwarding at all)
_NFT: str | None = None


def _checked(pattern: re.Pattern[str], value: object, what: str) -> str:
    if not isinstance(value, str) or not pattern.fullmatch(value):
        raise SetupError("check a request", f"invalid {what} {value!r}")
    return value


def _address(value: object) -> str:
    try:
        return str(ipaddress.IPv4Address(str(value)))
    except ValueError:
        raise SetupError("check a request", f"invalid address {value!r}") from None


def _number(value: object, low: int, high: int, what: str) -> int:
    if not isinstance(value, int) or isinstance(value, bool) or not low <= value <= high:
        raise SetupError("check a request", f"invalid {what} {value!r}")
    return value


def _plug(guest: int, bridge: object, gateway: object, prefixlen: object, host_side: object,
          address: object) -> None:
    """The bridge (made or repaired), a veth pair from it into the sandbox's namespace at ``guest``,
    and there the address and the default route."""
    name, veth = _checked(_BRIDGE, bridge, "bridge"), _checked(_VETH, host_side, "interface")
    gw, prefix, own = _address(gateway), _number(prefixlen, 1, 30, "prefix length"), _address(address)
    with netlink.route() as ip:
        netlink.ensure_bridge(ip, name, gw, prefix, MTU, _isolate)
        netlink.add_veth(ip, name, veth, guest, GUEST_INTERFACE, MTU)
    sc.setns(guest, sc.CLONE_NEWNET)
    with netlink.route() as ip:  # a socket of the sandbox's namespace
        netlink.configure_guest(ip, GUEST_INTERFACE, own, prefix, gw)


def _isolate(bridge: str) -> None:
    """The forward rule that keeps ``bridge`` from the other bridges (added once; none without nft)."""
    if _NFT is not None and f'iifname "{bridge}" ' not in _nft_list("forward"):
        _nft(f'add rule {_TABLE} forward iifname "{bridge}" oifname != "{bridge}" oifname "sbx*" drop\n')


def _unplug_bridge(bridge: object) -> None:
    """Remove a network's bridge and its forward rule."""
    name = _checked(_BRIDGE, bridge, "bridge")
    with netlink.route() as ip:
        netlink.delete_link(ip, name)
    if _NFT is not None:
        _delete_rules("forward", f'iifname "{name}" ')


def _publish(proto: object, port: object, address: object, container_port: object, sandbox: object) -> None:
    """A DNAT rule, commented with the sandbox's id: ``port`` of tap0 (slirp4netns forwards the host port
    there) on to ``address:container_port``."""
    if _NFT is None:
        raise SetupError("publish a port", "nft is not installed", hint="sudo apt-get install nftables")
    if proto not in ("tcp", "udp"):
        raise SetupError("check a request", f"invalid protocol {proto!r}")
    rule = (f'iifname "tap0" {proto} dport {_number(port, 1, 65535, "port")} dnat to {_address(address)}:'
            f'{_number(container_port, 1, 65535, "port")} comment "{_checked(_SANDBOX, sandbox, "sandbox id")}"')
    _nft(f"add rule {_TABLE} prerouting {rule}\n")


def _unpublish(sandbox: object) -> None:
    """Remove the DNAT rules of one sandbox."""
    if _NFT is not None:
        _delete_rules("prerouting", f'comment "{_checked(_SANDBOX, sandbox, "sandbox id")}"')


def _nft(commands: str) -> None:
    import subprocess

    assert _NFT is not None
    done = subprocess.run([_NFT, "-f", "-"], input=commands, capture_output=True, text=True)
    if done.returncode != 0:
        why = done.stderr.strip().splitlines()[-1] if done.stderr.strip() else f"nft exited {done.returncode}"
        raise SetupError(f"configure the user-defined networks' netfilter ({commands.split(' ip ')[0]})", why)


def _nft_list(chain: str) -> str:
    import subprocess

    assert _NFT is not None
    return subprocess.run([_NFT, "-a", "list", "chain", "ip", "sandboxer", chain], capture_output=True,
                          text=True).stdout


def _delete_rules(chain: str, marker: str) -> None:
    handles = [line.rsplit("# handle ", 1)[1].strip() for line in _nft_list(chain).splitlines()
               if marker in line and "# handle " in line]
    if handles:
        _nft("".join(f"delete rule {_TABLE} {chain} handle {h}\n" for h in handles))


#: what a request may ask for; ``plug`` takes the sandbox's network namespace as its fd
OPS: dict[str, Callable[..., object]] = {
    "plug": _plug, "unplug_bridge": _unplug_bridge, "publish": _publish, "unpublish": _unpublish,
}


def _handle(conn: socket.socket) -> None:  # pragma: no cover - runs in a forked child of the holder
    """One request, in a child: run it and answer."""
    reply: dict[str, object]
    try:
        data, fds, _, _ = socket.recv_fds(conn, 65536, 1)
        request = json.loads(data)
        op = OPS[request["op"]]
        if (op is _plug) != (len(fds) == 1):
            raise SetupError("check a request", "a namespace fd goes with plug, and only with plug")
        op(*fds, *request.get("args", ()))
        reply = {"ok": True}
    except SetupError as e:
        reply = {"error": [e.step, e.message.removeprefix(f"{e.step}: "), e.hint or ""]}
    except Exception as e:  # every failure goes back to the caller
        reply = {"error": ["configure the network", f"{type(e).__name__}: {e}", ""]}
    conn.send(json.dumps(reply).encode())


def _peer_allowed(conn: socket.socket) -> bool:
    """The peer is in our PID namespace — the user's, outside every sandbox (each has a PID namespace of
    its own).  Its /proc/PID/status says so (``NSpid`` lists one pid); its user namespace would say it
    too, but from inside ours we may not look at a namespace of our parent's."""
    pid, _, _ = struct.unpack("3i", conn.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, struct.calcsize("3i")))
    try:
        with open(f"/proc/{pid}/status") as f:
            nspid = next((line.split()[1:] for line in f if line.startswith("NSpid:")), [])
    except OSError:
        return False
    return len(nspid) == 1


def serve(listener: socket.socket, commit: int) -> None:  # pragma: no cover - the holder's loop
    signals.signal(signals.SIGCHLD, signals.SIG_IGN)  # children reap themselves
    watched = [listener.fileno(), commit]
    while True:
        readable = select.select(watched, [], [])[0]
        if commit in readable:  # our starter's word: "c" once we are recorded; end of file if it died first
            if os.read(commit, 1) != b"c":
                os._exit(1)
            os.close(commit)
            watched = [listener.fileno()]
            continue
        conn, _ = listener.accept()
        if not _peer_allowed(conn):
            conn.close()
            continue
        if os.fork() == 0:
            code = 1
            try:
                signals.signal(signals.SIGCHLD, signals.SIG_DFL)  # nft is waited for with subprocess
                listener.close()
                _handle(conn)
                code = 0
            finally:
                os._exit(code)
        conn.close()


def main(argv: list[str]) -> int:  # pragma: no cover - the holder's entry point
    global _NFT
    path, ready, commit = argv[0], int(argv[1]), int(argv[2])
    from ..programs import find

    netlink.load()
    _NFT = find("nft")
    if _NFT is not None:  # forwarding only with the rules that keep the networks apart
        with open("/proc/sys/net/ipv4/ip_forward", "w") as f:  # this network namespace's
            f.write("1")
        _nft(RULESET)
    try:
        os.unlink(path)
    except FileNotFoundError:
        pass
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_SEQPACKET)
    listener.bind(path)
    listener.listen(16)
    os.write(ready, b"ready\n")
    os.close(ready)
    serve(listener, commit)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
