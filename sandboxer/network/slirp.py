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
import select

from ..errors import HostError, SetupError
from ..programs import require
from . import GUEST_ADDRESS, NetworkSpec, PortMapping

__all__ = ["Slirp", "start"]

READY_TIMEOUT_S = 10.0
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
        if mapping.host_port == 0:
            mapping = mapping._replace(host_port=_free_port(mapping.host_ip, mapping.proto))
        reply = self._call("add_hostfwd", {"proto": mapping.proto, "host_addr": mapping.host_ip,
                                           "host_port": mapping.host_port, "guest_addr": GUEST_ADDRESS,
                                           "guest_port": mapping.container_port})
        if "error" in reply:
            desc = str(reply["error"].get("desc", reply["error"])) if isinstance(reply["error"], dict) else ""
            raise SetupError(f"publish port {mapping}", desc or "slirp4netns refused it",
                             hint="the host port is probably in use: choose another, or give only the "
                                  "container port (-p CPORT) for a free one")
        self.ports.append(mapping)
        return mapping

    def _call(self, command: str, arguments: dict[str, object]) -> dict[str, object]:
        import json
        import socket

        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
            s.settimeout(5.0)
            try:
                s.connect(self.api_socket)
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

    def close(self) -> None:
        """Stop it, without waiting for its exit to finish.

        The sandbox has ended, so slirp4netns holds nothing worth a graceful
        exit (it takes ~20 ms to notice its exit fd), and its death itself
        takes 20-40 ms more: the kernel tears down its tap device.  It is
        reaped now if already gone, else by the next close (a long-lived
        caller: pytest) or by init once we exit (the CLI).
        """
        if self._exit_w < 0:
            return
        try:
            os.kill(self.pid, 9)
        except ProcessLookupError:
            pass
        os.close(self._exit_w)
        self._exit_w = -1
        _DYING.append(self.pid)
        _reap_dead()


def start(pid: int, spec: NetworkSpec, state_dir: str) -> Slirp:
    """Attach slirp4netns to the network namespace of ``pid`` and wait until it is configured."""
    binary = require("slirp4netns")
    if not os.access("/dev/net/tun", os.R_OK | os.W_OK):
        raise HostError("/dev/net/tun is not accessible: slirp4netns cannot create the sandbox's interface",
                        hint="sudo chmod 0666 /dev/net/tun (or load the tun module)")
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
        child = _spawn(argv, (ready_w, exit_r), log)
    finally:
        os.close(ready_w)
        os.close(exit_r)
    try:
        _wait_ready(ready_r, child, log)
    except BaseException:
        os.close(exit_w)
        try:
            os.kill(child, 9)
        except ProcessLookupError:
            pass
        os.waitpid(child, 0)
        raise
    finally:
        os.close(ready_r)
    return Slirp(child, exit_w, api, log)


def _spawn(argv: list[str], keep: tuple[int, ...], log: str) -> int:
    """posix_spawn with only ``keep`` inherited (they are made inheritable just for the spawn)."""
    out = os.open(log, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, 0o600)
    null = os.open("/dev/null", os.O_RDONLY | os.O_CLOEXEC)
    try:
        actions = [(os.POSIX_SPAWN_DUP2, null, 0), (os.POSIX_SPAWN_DUP2, out, 1), (os.POSIX_SPAWN_DUP2, out, 2)]
        actions += [(os.POSIX_SPAWN_DUP2, fd, fd) for fd in keep]  # dup2 onto itself clears close-on-exec
        return os.posix_spawn(argv[0], argv, os.environ, file_actions=actions)
    finally:
        os.close(out)
        os.close(null)


def _wait_ready(ready_r: int, child: int, log: str) -> None:
    readable, _, _ = select.select([ready_r], [], [], READY_TIMEOUT_S)
    if readable and os.read(ready_r, 1) == b"1":
        return
    reason = "it did not get ready in time" if not readable else "it exited"
    try:
        with open(log, errors="replace") as f:
            lines = [line.strip() for line in f if line.strip()]
        if lines:
            reason = lines[-1]
    except OSError:
        pass
    raise SetupError("start slirp4netns", reason, hint="see 'sandboxer doctor' (slirp4netns, /dev/net/tun)")


#: killed slirp4netns processes not yet reaped
_DYING: list[int] = []


def _reap_dead() -> None:
    for pid in list(_DYING):
        try:
            done, _ = os.waitpid(pid, os.WNOHANG)
        except ChildProcessError:
            done = pid
        if done:
            _DYING.remove(pid)


def _free_port(host_ip: str, proto: str) -> int:
    import socket

    kind = socket.SOCK_STREAM if proto == "tcp" else socket.SOCK_DGRAM
    with socket.socket(socket.AF_INET, kind) as s:
        s.bind((host_ip, 0))
        return int(s.getsockname()[1])
