"""slirp4netns: a user-mode network stack for a sandbox's network namespace, as podman uses it.

Started by the caller while the sandbox waits (``sandboxer_attach``), on
the set-up process's PID: it creates ``tap0`` inside, configures
10.0.2.100/24 with a default route (``--configure``) and says so on
``--ready-fd`` — no sleeping.  It ends when we close its ``--exit-fd``, and
since that fd is ours, also when we die, however we die.  Published ports
are added through its JSON API socket (``add_hostfwd``), one request per
connection.
"""

from __future__ import annotations

import os

from ..errors import SetupError
from ..programs import require
from . import GUEST_ADDRESS, PORT_IN_USE, NetworkSpec, PortMapping, helper

__all__ = ["Slirp", "start", "add_hostfwd", "list_hostfwd", "remove_hostfwd"]

MTU = 65520


class Slirp:
    """A running slirp4netns serving one sandbox."""

    def __init__(self, pid: int, exit_w: int, api_socket: str, log: str) -> None:
        self.pid = pid
        self._exit_w = exit_w
        self.api_socket = api_socket
        self._log = log
        self.ports: list[PortMapping] = []

    def publish(self, mapping: PortMapping) -> PortMapping:
        """Forward a host port to the sandbox; a host port of 0 becomes a free one."""
        mapping = helper.with_host_port(mapping)
        add_hostfwd(self.api_socket, mapping, mapping.container_port)
        self.ports.append(mapping)
        return mapping

    def close(self, *, wait: bool = False) -> None:
        """Stop it at once: the sandbox has ended, and slirp4netns takes ~20 ms to notice its exit fd.

        With published ports, wait for its death: they are free again when we return.
        """
        if self._exit_w < 0:
            return
        helper.kill(self.pid, wait=wait or bool(self.ports))
        os.close(self._exit_w)
        self._exit_w = -1


def add_hostfwd(api_socket: str, mapping: PortMapping, guest_port: int) -> None:
    """Forward ``mapping``'s host port to ``guest_port`` of 10.0.2.100."""
    reply = _call(api_socket, "add_hostfwd", {"proto": mapping.proto, "host_addr": mapping.host_ip,
                                              "host_port": mapping.host_port, "guest_addr": GUEST_ADDRESS,
                                              "guest_port": guest_port})
    if "error" in reply:
        desc = str(reply["error"].get("desc", reply["error"])) if isinstance(reply["error"], dict) else ""
        raise SetupError(f"publish port {mapping}", desc or "slirp4netns refused it", hint=PORT_IN_USE)


def list_hostfwd(api_socket: str) -> list[dict[str, object]]:
    """The forwards slirp4netns has now ([] if it is gone, and its forwards with it)."""
    try:
        reply = _call(api_socket, "list_hostfwd", {})
    except SetupError:
        return []
    entries = reply.get("entries")  # slirp4netns 1.2 answers {"entries": [...]}, no "return" around it
    return [e for e in entries if isinstance(e, dict)] if isinstance(entries, list) else []


def remove_hostfwd(api_socket: str, forward_id: int) -> None:
    """Stop a forward :func:`add_hostfwd` made (gone already is fine)."""
    try:
        _call(api_socket, "remove_hostfwd", {"id": forward_id})
    except SetupError:
        pass  # slirp4netns is gone, and its forwards with it


def _call(api_socket: str, command: str, arguments: dict[str, object]) -> dict[str, object]:
    """One request on slirp4netns's JSON API socket (one per connection)."""
    import json
    import socket

    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
        s.settimeout(5.0)
        try:
            s.connect(api_socket)
            s.sendall(json.dumps({"execute": command, "arguments": arguments}).encode())
            s.shutdown(socket.SHUT_WR)
            data = b""
            while chunk := s.recv(4096):
                data += chunk
        except OSError as e:
            raise SetupError(f"slirp4netns API ({command})", e.strerror or str(e)) from None
    try:
        reply = json.loads(data)
    except ValueError:
        raise SetupError(f"slirp4netns API ({command})", f"unreadable reply {data[:80]!r}") from None
    return reply if isinstance(reply, dict) else {}


def start(pid: int, spec: NetworkSpec, state_dir: str) -> Slirp:
    """Attach slirp4netns to the network namespace of ``pid``, wait until it is configured, publish the ports."""
    binary = require("slirp4netns")
    ready_r, ready_w = os.pipe2(os.O_CLOEXEC)
    exit_r, exit_w = os.pipe2(os.O_CLOEXEC)
    api = os.path.join(state_dir, "slirp.sock")
    log = os.path.join(state_dir, "slirp.log")
    argv = [binary, "--configure", f"--mtu={MTU}", f"--ready-fd={ready_w}", f"--exit-fd={exit_r}",
            f"--api-socket={api}", "--enable-sandbox", "--enable-seccomp"]
    if not spec.allow_host_loopback:
        argv.append("--disable-host-loopback")
    argv += [str(pid), "tap0"]
    try:
        child = helper.spawn(argv, (ready_w, exit_r), log)
    finally:
        os.close(ready_w)
        os.close(exit_r)
    try:
        helper.wait_ready(ready_r, child, "slirp4netns", log)
    except BaseException:
        os.close(exit_w)
        raise
    finally:
        os.close(ready_r)
    stack = Slirp(child, exit_w, api, log)
    try:
        for mapping in spec.ports:
            stack.publish(mapping)
    except BaseException:
        stack.close(wait=True)
        raise
    return stack
