"""Networking, run as a user runs it: slirp4netns and pasta, published ports, host loopback, the none default.

Traffic goes only to 127.0.0.1 and to the namespaces these tests create.
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import threading
import time
from collections.abc import Iterator

import pytest
from conftest import SANDBOXER, busybox_store, sandboxer, sh

pytest_plugins = ["pytester"]
pytestmark = pytest.mark.skipif(not os.access("/dev/net/tun", os.W_OK), reason="needs an accessible /dev/net/tun")

PY = "python3"


def _needs(program: str) -> pytest.MarkDecorator:
    return pytest.mark.skipif(not shutil.which(program), reason=f"needs {program}")


#: each test taking ``stack`` runs with both user-mode stacks
STACKS = [pytest.param("slirp4netns", marks=_needs("slirp4netns")), pytest.param("pasta", marks=_needs("pasta"))]


def _free_port(kind: int = socket.SOCK_STREAM) -> int:
    with socket.socket(socket.AF_INET, kind) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _processes(name: str) -> list[str]:
    # pasta re-executes itself as passt.avx2 where the CPU has AVX2
    names = ("pasta", "passt.avx2") if name == "pasta" else (name,)
    out = subprocess.run(["pgrep", "-u", str(os.getuid()), "-x", "|".join(names)], capture_output=True, text=True)
    return out.stdout.split()


@pytest.mark.parametrize("stack", STACKS)
def test_stack_configures_the_sandbox(stack: str) -> None:
    p = sh("ip -4 -o addr show tap0; ip route; cat /etc/resolv.conf; grep -c 10.0.2.100 /etc/hosts",
           "--network", stack, "--hostname", "web", check=True)
    assert "10.0.2.100/24" in p.stdout
    assert "default via 10.0.2.2 dev tap0" in p.stdout
    assert "nameserver 10.0.2.3" in p.stdout
    assert p.stdout.strip().endswith("1")


def test_none_has_no_route_anywhere() -> None:
    p = sh("ip -o link | cut -d: -f2; ip route | wc -l", check=True)
    assert p.stdout.split() == ["lo", "0"]
    probe = f"{PY} -c \"import socket; socket.create_connection(('10.0.2.2', 80), timeout=2)\""
    p = sh(probe)
    assert p.returncode != 0 and "Network is unreachable" in p.stderr


class _Server:
    """A one-line TCP server on the host's 127.0.0.1."""

    def __init__(self) -> None:
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(5)
        self.port = int(self.sock.getsockname()[1])
        threading.Thread(target=self._serve, daemon=True).start()

    def _serve(self) -> None:
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            with conn:
                conn.sendall(b"hello from the host\n")


@pytest.mark.parametrize("stack", STACKS)
def test_host_loopback_is_closed_unless_allowed(stack: str) -> None:
    server = _Server()
    try:
        probe = (f"{PY} -c \"import socket; s = socket.create_connection(('10.0.2.2', {server.port}), timeout=2); "
                 f"print(s.recv(100).decode().strip())\"")
        closed = sh(probe, "--network", stack)
        assert closed.returncode != 0, closed.stdout
        # nor through the sandbox's own loopback (pasta would forward it to the host's unless told not to)
        inner = sh(probe.replace("10.0.2.2", "127.0.0.1"), "--network", f"{stack}:allow_host_loopback=true")
        assert inner.returncode != 0, inner.stdout
        opened = sh(probe, "--network", f"{stack}:allow_host_loopback=true", check=True)
        assert opened.stdout.strip() == "hello from the host"
    finally:
        server.sock.close()


def _serve_inside(args: list[str], script: str, network: str = "slirp4netns") -> subprocess.Popen[str]:
    return subprocess.Popen([*SANDBOXER, "run", "--network", network, *args, "--", PY, "-c", script],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, stdin=subprocess.DEVNULL)


@pytest.mark.parametrize("network", [pytest.param("slirp4netns:allow_host_loopback=true", marks=_needs("slirp4netns")),
                                     pytest.param("pasta", marks=_needs("pasta"))])
def test_published_tcp_and_udp_ports_reach_the_sandbox(network: str) -> None:
    tcp_port, udp_port = _free_port(), _free_port(socket.SOCK_DGRAM)
    # the same UDP port number on both sides: pasta (2023) cannot translate UDP ports
    script = ("import socket\n"
              "t = socket.socket(); t.bind(('0.0.0.0', 8080)); t.listen(1)\n"
              f"u = socket.socket(socket.AF_INET, socket.SOCK_DGRAM); u.bind(('0.0.0.0', {udp_port}))\n"
              "print('ready', flush=True)\n"
              "c, _ = t.accept(); c.sendall(b'tcp ok\\n'); c.close()\n"
              "data, peer = u.recvfrom(100); u.sendto(b'udp ' + data, peer)\n")
    proc = _serve_inside(["-p", f"127.0.0.1:{tcp_port}:8080", "-p", f"127.0.0.1:{udp_port}:{udp_port}/udp"], script,
                         network=network)
    try:
        assert proc.stdout is not None and proc.stdout.readline().strip() == "ready"
        with socket.create_connection(("127.0.0.1", tcp_port), timeout=5) as c:
            assert c.recv(100) == b"tcp ok\n"
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as u:
            u.settimeout(5)
            u.sendto(b"ping", ("127.0.0.1", udp_port))
            assert u.recvfrom(100)[0] == b"udp ping"
        assert proc.wait(timeout=10) == 0
    finally:
        proc.kill()
        proc.wait()
    # the forward went away with the sandbox: nothing listens there any more
    with socket.socket() as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # the closed connection may be in TIME_WAIT
        s.bind(("127.0.0.1", tcp_port))


@pytest.mark.parametrize("stack", STACKS)
def test_a_taken_host_port_fails_the_start(stack: str) -> None:
    before = set(_processes(stack))
    busy = socket.socket()
    busy.bind(("127.0.0.1", 0))
    busy.listen(1)
    try:
        port = busy.getsockname()[1]
        p = sandboxer("run", "--network", stack, "-p", f"127.0.0.1:{port}:80", "--", "true")
        assert p.returncode == 125 and f"publish port 127.0.0.1:{port}->80/tcp" in p.stderr and "hint:" in p.stderr
        assert len(p.stderr.strip().splitlines()) == 2, p.stderr  # the error and its hint
    finally:
        busy.close()
    assert not set(_processes(stack)) - before


def test_port_errors_are_one_line() -> None:
    for bad, message in (("80:http", "invalid port mapping"), ("1.2.3:80:80", "invalid port mapping")):
        p = sandboxer("run", "--network", "pasta", "-p", bad, "--", "true")
        assert p.returncode == 125 and message in p.stderr
    p = sandboxer("run", "-p", "8080:80", "--", "true")
    assert p.returncode == 125 and "add --network" in p.stderr
    p = sandboxer("run", "--network", "pasta", "-p", "80:80", "--", "true")
    assert p.returncode == 125 and "host port 80 is privileged" in p.stderr and "ip_unprivileged_port_start" in p.stderr
    p = sandboxer("run", "--network", "pasta", "-p", "6000:5353/udp", "--", "true")
    assert p.returncode == 125 and "cannot publish UDP port 5353 on another host port" in p.stderr
    p = sandboxer("run", "--network", "pasta:bogus=1", "--", "true")
    assert p.returncode == 125 and "pasta takes allow_host_loopback=true|false" in p.stderr
    p = sandboxer("run", "--network", "slirp4netns", "-p", "5353/udp", "--", "true")
    assert p.returncode == 125 and "allow_host_loopback=true" in p.stderr
    p = sandboxer("run", "--network", "bogus", "--", "true")
    assert p.returncode == 125 and "unknown network mode" in p.stderr and "Traceback" not in p.stderr


@pytest.mark.parametrize("stack", STACKS)
def test_no_stack_outlives_its_sandboxes(stack: str) -> None:
    before = set(_processes(stack))
    for _ in range(10):
        sh("true", "--network", stack, "-p", "127.0.0.1::80", check=True)
    proc = subprocess.Popen([*SANDBOXER, "run", "--network", stack, "--", "sleep", "60"],
                            stdin=subprocess.DEVNULL)
    deadline = time.monotonic() + 10
    while not set(_processes(stack)) - before and time.monotonic() < deadline:  # (one of before may end meanwhile)
        time.sleep(0.05)
    assert set(_processes(stack)) - before, f"no {stack} seen"
    # SIGKILL: no clean-up code of ours runs; slirp4netns sees its exit fd close, pasta its parent-death signal
    proc.kill()
    proc.wait()
    deadline = time.monotonic() + 10
    while set(_processes(stack)) - before and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not set(_processes(stack)) - before


@pytest.mark.parametrize("stack", STACKS)
def test_pytest_marker_with_a_stack(pytester: pytest.Pytester, stack: str) -> None:
    pytester.makepyfile(f"""
        import subprocess, pytest

        @pytest.mark.sandbox(network="{stack}")
        def test_has_a_network():
            out = subprocess.run(["ip", "-4", "-o", "addr", "show", "tap0"], capture_output=True, text=True).stdout
            assert "10.0.2.100" in out

        @pytest.mark.sandbox
        def test_default_is_loopback_only():
            out = subprocess.run(["ip", "-o", "link"], capture_output=True, text=True).stdout
            assert "tap0" not in out
    """)
    result = pytester.runpytest_subprocess("-p", "no:cacheprovider")
    assert result.parseoutcomes() == {"passed": 2}, result.stdout.str()


@pytest.mark.parametrize("stack", STACKS)
def test_port_command_reports_a_random_host_port(stack: str) -> None:
    name = f"ports{os.getpid()}"
    script = ("import socket\nt = socket.socket(); t.bind(('0.0.0.0', 80)); t.listen(1)\n"
              "print('ready', flush=True)\nc, _ = t.accept(); c.sendall(b'found me\\n')\n")
    proc = _serve_inside(["--name", name, "-p", "127.0.0.1::80"], script, network=stack)
    try:
        assert proc.stdout is not None and proc.stdout.readline().strip() == "ready"
        line = sandboxer("port", name, "80", check=True).stdout.strip()
        assert line.startswith("80/tcp -> 127.0.0.1:"), line
        host_port = int(line.rsplit(":", 1)[1])
        with socket.create_connection(("127.0.0.1", host_port), timeout=5) as c:
            assert c.recv(100) == b"found me\n"
        assert proc.wait(timeout=10) == 0
    finally:
        proc.kill()
        proc.wait()
    p = sandboxer("port", name)
    assert p.returncode == 125 and "no running sandbox" in p.stderr


@pytest.mark.parametrize("stack", STACKS)
def test_sandbox_fixture_starts_a_server_and_reports_its_port(sandbox_factory, stack: str) -> None:  # type: ignore[no-untyped-def]
    import urllib.request

    box = sandbox_factory(network=stack)
    box.start([PY, "-m", "http.server", "8000", "--directory", "/etc"], ports=[8000])
    port = box.port(8000)
    deadline = time.monotonic() + 10
    while True:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/hostname", timeout=2) as response:
                assert response.status == 200
                break
        except OSError:
            assert time.monotonic() < deadline, "the server never answered"
            time.sleep(0.05)
    box.close()
    with pytest.raises(OSError):
        urllib.request.urlopen(f"http://127.0.0.1:{port}/hostname", timeout=2)


@pytest.fixture(scope="module")
def exposing_image(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """An image built from busybox with ``EXPOSE 8080 9999/udp``, in a private store."""
    if not os.path.exists("/bin/busybox"):
        pytest.skip("needs busybox-static")
    with busybox_store(tmp_path_factory) as root:
        context = root / "exposing"
        context.mkdir()
        (context / "Containerfile").write_text("FROM sandboxer-test/busybox\nEXPOSE 8080 9999/udp\n")
        sandboxer("build", "-q", "-t", "sandboxer-test/exposing", str(context), check=True, timeout=120)
        yield "sandboxer-test/exposing"


@_needs("pasta")
def test_publish_all_publishes_what_the_image_exposes(exposing_image: str) -> None:
    name = f"exposed{os.getpid()}"
    proc = subprocess.Popen([*SANDBOXER, "run", "--name", name, "--network", "pasta", "-P", exposing_image,
                             "nc", "-l", "-p", "8080", "-e", "echo", "exposed"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, stdin=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 20
        # its name exists from the start of set-up, its ports once published, before the workload runs
        while (p := sandboxer("port", name)).returncode != 0 or not p.stdout.strip():
            assert proc.poll() is None and time.monotonic() < deadline, p.stderr
            time.sleep(0.05)
        lines = p.stdout.splitlines()
        assert [line.split(" -> ")[0] for line in lines] == ["8080/tcp", "9999/udp"], lines
        assert all(line.split(" -> ")[1].startswith("0.0.0.0:") for line in lines), lines
        tcp_port = int(lines[0].rsplit(":", 1)[1])
        assert tcp_port >= 1024
        with socket.create_connection(("127.0.0.1", tcp_port), timeout=5) as c:
            assert c.recv(100) == b"exposed\n"
        assert proc.wait(timeout=10) == 0
    finally:
        proc.kill()
        proc.wait()


def test_publish_all_needs_an_image_and_a_stack(exposing_image: str) -> None:
    p = sandboxer("run", "--network", "pasta", "-P", "--", "true")
    assert p.returncode == 125 and "-P publishes the ports an image exposes" in p.stderr
    p = sandboxer("run", "-P", exposing_image, "true")
    assert p.returncode == 125 and "add --network" in p.stderr
    p = sandboxer("run", "--network", "slirp4netns", "-P", exposing_image, "true")  # 9999/udp
    assert p.returncode == 125 and "allow_host_loopback=true" in p.stderr


@pytest.mark.parametrize("stack, package", [("pasta", "passt"), ("slirp4netns", "slirp4netns")])
def test_a_missing_stack_is_one_line_with_the_package(monkeypatch: pytest.MonkeyPatch, stack: str,
                                                      package: str) -> None:
    from conftest import state_entries

    from sandboxer import programs
    from sandboxer.errors import HostError
    from sandboxer.sandbox import SandboxOptions, prepare

    real = programs.find
    monkeypatch.setattr(programs, "find", lambda name: None if name == stack else real(name))
    before = set(state_entries())
    with pytest.raises(HostError) as err:
        prepare(SandboxOptions(command=["true"], network=stack, publish=["127.0.0.1::80"]))
    assert str(err.value) == f"{stack} not found" and f"apt-get install {package}" in (err.value.hint or "")
    assert set(state_entries()) == before  # refused before anything was created


@pytest.mark.parametrize("args, message", [
    (("--network", "pasta", "--dns", "notanip"), "invalid --dns: 'notanip' is not an IP address"),
    (("--network", "pasta", "--dns", "1.2.3.4 evil"), "invalid --dns: '1.2.3.4 evil' is not an IP address"),
    (("--network", "slirp4netns", "--add-host", "foo:bar"), "invalid --add-host 'foo:bar': 'bar' is not an IP"),
    (("--network", "pasta", "--add-host", "a\n6.6.6.6 b:1.2.3.4"), "invalid --add-host name"),
    (("--dns", "10.0.2.3"), "--dns needs a network mode whose /etc/resolv.conf and /etc/hosts sandboxer writes"),
    (("--network", "host", "--add-host", "db:10.1.2.3"), "--add-host needs a network mode"),
    (("--network", ""), "--network '' names no network mode"),
    (("--network", "pasta", "-p", "18084:80", "-p", "18084:81"), "host port 18084/tcp is published twice"),
    (("--network", "pasta", "-p", "127.0.0.1:18084:80", "-p", "127.0.0.2:18084:81"), "is published twice"),
    (("--network", "slirp4netns", "-p", "127.0.0.1:18084:80", "-p", "18084:81"), "is published twice"),
])
def test_bad_network_options_are_refused_in_one_line(args: tuple[str, ...], message: str) -> None:
    """Refused before anything starts, rather than written into resolv.conf or hosts as they are, ignored,
    or failed by the stack ("Overlapping port specifier")."""
    p = sandboxer("run", *args, "--", "true")
    assert p.returncode == 125 and message in p.stderr, p.stderr
    assert p.stderr.count("error:") == 1 and "hint:" in p.stderr


@pytest.mark.parametrize("stack", STACKS)
def test_dns_and_add_host_go_into_the_sandbox(stack: str) -> None:
    p = sh("cat /etc/resolv.conf /etc/hosts", "--network", stack, "--dns", "10.0.2.3", "--dns", "fd00::53",
           "--add-host", "db:10.1.2.3", "--add-host", "six:fd00::6", check=True)
    assert "nameserver 10.0.2.3\nnameserver fd00::53\n" in p.stdout
    assert "10.1.2.3\tdb\nfd00::6\tsix\n" in p.stdout


@_needs("pasta")
def test_pasta_refuses_the_gateway_unless_host_loopback_is_allowed() -> None:
    """As slirp4netns: with --no-map-gw alone, pasta sent the sandbox's traffic for 10.0.2.2 off the machine
    through the host's default route.  Checked without sending any: the sandbox's route to 10.0.2.2, then a
    connection only once there is none (refused before a packet is sent)."""
    probe = (f"ip route get 10.0.2.2 >/dev/null 2>&1 && echo routed && exit 0; {PY} -c \"import socket; "
             "socket.create_connection(('10.0.2.2', 80), timeout=2)\"")
    closed = sh(probe, "--network", "pasta")
    assert "routed" not in closed.stdout and "No route to host" in closed.stderr, (closed.stdout, closed.stderr)
    assert "default via 10.0.2.2 dev tap0" in sh("ip route", "--network", "pasta", check=True).stdout
    allowed = sh("ip route get 10.0.2.2", "--network", "pasta:allow_host_loopback=true", check=True)
    assert "10.0.2.2 dev tap0" in allowed.stdout


@_needs("pasta")
def test_inspect_shows_the_addresses_of_a_pasta_sandbox() -> None:
    name = f"inspected{os.getpid()}"
    sandboxer("run", "-d", "--name", name, "--network", "pasta", "--add-host", "db:10.1.2.3", "--",
              "sleep", "60", check=True)
    try:
        settings = json.loads(sandboxer("inspect", name, check=True).stdout)[0]["NetworkSettings"]
    finally:
        sandboxer("rm", "-f", name, check=True)
    assert (settings["IPAddress"], settings["Gateway"]) == ("10.0.2.100", "10.0.2.2")
    assert settings["Dns"] == ["10.0.2.3"] and settings["ExtraHosts"] == ["db:10.1.2.3"]
