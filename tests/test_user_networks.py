"""User-defined networks, run as a user runs them: create/ls/inspect/rm, peers by name, IPAM, clean-up.

Each test runs with a private state root and image store (so a private
network namespace holder); traffic stays between the sandboxes they start.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from conftest import SANDBOXER, sandboxer, sh

pytest_plugins = ["pytester"]

#: a one-shot TCP server on port 8000 answering "hi from NAME", restarted forever
SERVE = "while true; do busybox nc -l -p 8000 -e echo hi from $(hostname); done"


def _connect(target: str) -> str:
    """A shell loop that reads port 8000 of ``target``, retrying while the server comes up."""
    return (f"(for i in $(seq 100); do out=$(busybox nc -w 2 {target} 8000 </dev/null) && [ -n \"$out\" ] "
            "&& echo \"$out\" && exit 0; sleep 0.05; done; exit 1)")


@pytest.fixture
def env(tmp_path: Path) -> Iterator[Path]:
    """A private state root and store; every network removed at the end (the holder goes with the last)."""
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("SANDBOXER_STATE_DIR", str(tmp_path / "state"))
        mp.setenv("SANDBOXER_DATA_DIR", str(tmp_path / "data"))
        yield tmp_path
        for record in json.loads(sandboxer("ps", "-a", "--format", "json").stdout or "[]"):
            sandboxer("rm", "-f", record["Id"] if "Id" in record else record["id"])
        for name in sandboxer("network", "ls", "-q").stdout.split():
            sandboxer("network", "rm", name)
        assert _holder(tmp_path) is None


@pytest.fixture
def net(env: Path) -> str:
    name = f"net-{os.urandom(3).hex()}"
    sandboxer("network", "create", name, check=True)
    return name


def _holder(root: Path) -> int | None:
    """The holder's pid if it runs (a zombie left to a non-reaping init counts as gone)."""
    from sandboxer.procfs import same_process

    try:
        pid, started = map(int, (root / "state" / "netns" / "holder").read_text().split()[:2])
    except FileNotFoundError:
        return None
    return pid if same_process(pid, started) else None


def _holder_links(root: Path) -> list[str]:
    pid = _holder(root)
    assert pid is not None
    out = subprocess.run(["nsenter", "--preserve-credentials", "-U", "-n", "-t", str(pid), "ip", "-o", "link"],
                         capture_output=True, text=True, check=True).stdout
    return sorted(line.split(":")[1].strip().split("@")[0] for line in out.splitlines())


def _links_become(root: Path, expected: list[str]) -> bool:
    """Whether the holder's interfaces are ``expected`` within 5 s: the kernel destroys an ended
    sandbox's network namespace, and the veth pair with it, a little after its last process."""
    deadline = time.monotonic() + 5
    while (links := _holder_links(root)) != expected:
        if time.monotonic() > deadline:
            print("holder interfaces:", links)
            return False
        time.sleep(0.05)
    return True


def _leases(root: Path) -> list[str]:
    base = root / "state" / "netns" / "leases"
    return [str(p) for p in base.rglob("*") if p.is_file()] if base.exists() else []


def _in_holder_userns(root: Path) -> set[int]:
    """Live processes in the holder's user namespace, the holder and its slirp4netns aside: those of
    sandboxes on a network."""
    from sandboxer.procfs import same_process

    holder = _holder(root)
    assert holder is not None
    userns = os.stat(f"/proc/{holder}/ns/user").st_ino
    found = set()
    for entry in os.listdir("/proc"):
        try:
            if entry.isdigit() and int(entry) != holder and os.stat(f"/proc/{entry}/ns/user").st_ino == userns:
                found.add(int(entry))
        except OSError:
            continue
    found = {pid for pid in found if same_process(pid, None)}
    return {pid for pid in found if Path(f"/proc/{pid}/comm").read_text().strip() != "slirp4netns"}


def _inspect(name: str) -> dict:  # type: ignore[type-arg]
    return json.loads(sandboxer("network", "inspect", name, check=True).stdout)[0]  # type: ignore[no-any-return]


def test_create_ls_inspect_rm(env: Path) -> None:
    first = sandboxer("network", "create", "front", check=True).stdout.strip()
    assert len(first) == 64
    sandboxer("network", "create", "--subnet", "10.77.0.0/16", "back", check=True)
    listing = sandboxer("network", "ls", check=True).stdout
    assert "front" in listing and "10.89.0.0/24" in listing and "10.77.0.0/16" in listing
    assert sandboxer("network", "ls", "-q", check=True).stdout.split() == ["back", "front"]
    info = _inspect("back")
    assert info["Subnets"] == [{"Subnet": "10.77.0.0/16", "Gateway": "10.77.0.1"}]
    assert info["Containers"] == {} and info["Name"] == "back"
    assert _holder(env) is None, "defining a network starts nothing"
    assert sandboxer("network", "rm", "front", "back", check=True).stdout.split() == ["front", "back"]
    assert sandboxer("network", "ls", "-q").stdout == ""


def test_two_sandboxes_talk_by_name_and_alias(net: str) -> None:
    sandboxer("run", "-d", "--name", "srv", "--network-alias", "web", "--network", net, "--",
              "sh", "-c", SERVE, check=True)
    p = sh(f"{_connect('srv')} && {_connect('web')} && getent hosts srv", "--network", net, "--hostname", "cli",
           check=True)
    lines = p.stdout.splitlines()
    server_hostname = lines[0].split()[-1]
    assert lines[:2] == [f"hi from {server_hostname}"] * 2
    server_ip = lines[2].split()[0]
    assert server_ip.startswith("10.89.") and "srv" in lines[2] and "web" in lines[2]
    members = _inspect(net)["Containers"]
    assert [m["IPv4Address"] for m in members.values()] == [f"{server_ip}/24"]
    settings = json.loads(sandboxer("inspect", "srv", check=True).stdout)[0]["NetworkSettings"]
    assert settings["IPAddress"] == server_ip
    assert settings["Gateway"] == "10.89.0.1" and settings["Dns"] == ["10.0.2.3"]  # the holder's slirp4netns
    assert settings["Networks"][net]["Aliases"][:2] == ["srv", "web"]
    assert sandboxer("inspect", "-f", "{{.NetworkSettings.IPAddress}}", "srv").stdout.strip() == server_ip


def test_peers_hosts_follow_members(net: str) -> None:
    sandboxer("run", "-d", "--name", "one", "--network", net, "--", "sleep", "60", check=True)
    sandboxer("run", "-d", "--name", "two", "--network", net, "--", "sleep", "60", check=True)
    hosts = sandboxer("exec", "one", "cat", "/etc/hosts", check=True).stdout
    assert "\tone " in hosts and "\ttwo " in hosts
    sandboxer("rm", "-f", "two", check=True)
    hosts = sandboxer("exec", "one", "cat", "/etc/hosts", check=True).stdout
    assert "two" not in hosts and "\tone " in hosts
    assert len(_inspect(net)["Containers"]) == 1


def test_networks_are_isolated_from_each_other(env: Path, net: str) -> None:
    sandboxer("network", "create", "other", check=True)
    sandboxer("run", "-d", "--name", "srv", "--network", net, "--", "sh", "-c", SERVE, check=True)
    address = _inspect(net)["Containers"].popitem()[1]["IPv4Address"].split("/")[0]
    assert "hi from" in sh(_connect(address), "--network", net, check=True).stdout
    p = sh(f"busybox nc -w 1 {address} 8000 </dev/null; getent hosts srv || echo unresolved", "--network", "other")
    assert "hi from" not in p.stdout and "unresolved" in p.stdout


def test_a_hundred_sandboxes_leave_nothing_behind(env: Path, net: str) -> None:
    """Four concurrent loops of 25 short sandboxes each, through the library."""
    sh("true", "--network", net, check=True)  # the holder and the bridge exist from here on
    loop = ("import sys\nfrom sandboxer import SandboxOptions, run\n"
            "for i in range(25):\n"
            "    s = run(SandboxOptions(command=['sh', '-c', 'ip -4 -o addr show eth0 | grep -q 10.89.'],"
            f" network={net!r}), on_notice=lambda m: None)\n"
            "    assert s.code == 0, s\n")
    procs = [subprocess.Popen([sys.executable, "-c", loop]) for _ in range(4)]
    assert [p.wait(timeout=300) for p in procs] == [0, 0, 0, 0]
    assert _leases(env) == []
    assert _inspect(net)["Containers"] == {}
    assert _links_become(env, ["lo", "sbx0", "tap0"]), "a veth pair outlived its sandbox"
    assert _in_holder_userns(env) == set(), "a process outlived its sandbox"
    assert [e for e in os.listdir(env / "state") if len(e) == 64] == []


def _dnat_rules(root: Path) -> list[str]:
    from sandboxer.programs import require

    pid = _holder(root)
    assert pid is not None
    nft = require("nft")  # in /usr/sbin, off a user's PATH
    out = subprocess.run(["nsenter", "--preserve-credentials", "-U", "-n", "-t", str(pid), nft, "list", "chain",
                          "ip", "sandboxer", "prerouting"], capture_output=True, text=True, check=True).stdout
    return [line.strip() for line in out.splitlines() if "dnat to" in line]


def _forwards(root: Path) -> list[dict]:  # type: ignore[type-arg]
    """The holder's slirp4netns port forwards."""
    from sandboxer.network.slirp import list_hostfwd

    return list_hostfwd(str(root / "state" / "netns" / "slirp.sock"))


def _get(port: int) -> str:
    import urllib.request

    deadline = time.monotonic() + 10
    while True:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/hostname", timeout=2) as response:
                return str(response.read().decode())
        except OSError:
            assert time.monotonic() < deadline, "the server never answered"
            time.sleep(0.05)


def test_published_ports_and_the_way_out(env: Path, net: str) -> None:
    """-p through the holder's slirp4netns and a DNAT rule; gone with the sandbox.  The sandbox's DNS is
    slirp4netns's, behind the holder's NAT (not exercised: tests stay off the real network)."""
    p = sh("cat /etc/resolv.conf; ip route", "--network", net, check=True)
    assert "nameserver 10.0.2.3" in p.stdout and "default via 10.89.0.1 dev eth0" in p.stdout
    for name, publish in (("web", "127.0.0.1::8000"), ("web2", "127.0.0.1::8000")):  # the same container port
        sandboxer("run", "-d", "--name", name, "--network", net, "-p", publish, "--",
                  "python3", "-m", "http.server", "8000", "--directory", "/etc", check=True)
    ports = [int(sandboxer("port", n, "8000", check=True).stdout.strip().rsplit(":", 1)[1]) for n in ("web", "web2")]
    assert ports[0] != ports[1]
    assert _get(ports[0]) == _get(ports[1]) == Path("/etc/hostname").read_text()
    assert len(_dnat_rules(env)) == 2
    sandboxer("rm", "-f", "web", check=True)
    assert len(_dnat_rules(env)) == 1
    with pytest.raises(OSError):
        import urllib.request

        urllib.request.urlopen(f"http://127.0.0.1:{ports[0]}/hostname", timeout=2)
    # one host port serves one sandbox, whatever the host address (the holder's side uses its number)
    taken = sandboxer("run", "--network", net, "-p", f"127.0.0.2:{ports[1]}:80", "--", "true")
    assert taken.returncode == 125 and "is published already, by sandbox web2" in taken.stderr
    with socket.socket() as busy:  # a host port someone else holds: slirp4netns cannot bind it
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        taken = sandboxer("run", "--network", net, "-p", f"127.0.0.1:{busy.getsockname()[1]}:80", "--", "true")
    assert taken.returncode == 125 and "publish port" in taken.stderr and taken.stderr.count("error:") == 1
    assert len(_dnat_rules(env)) == 1 and len(_inspect(net)["Containers"]) == 1
    assert len(_forwards(env)) == 1


def test_a_killed_sandbox_gives_its_address_back(env: Path, net: str) -> None:
    proc = subprocess.Popen([*SANDBOXER, "run", "--network", net, "-p", "127.0.0.1::8000", "--", "sleep", "60"])
    deadline = time.monotonic() + 20
    while not _inspect(net)["Containers"]:
        assert time.monotonic() < deadline
        time.sleep(0.05)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    deadline = time.monotonic() + 10
    while _inspect(net)["Containers"]:  # its set-up process dies with the CLI (PDEATHSIG), freeing its lock
        assert time.monotonic() < deadline, "the lease of a dead sandbox was kept"
        time.sleep(0.05)
    assert _leases(env) == [] and _dnat_rules(env) == [] and _forwards(env) == []
    assert sh("ip -4 -o addr show eth0", "--network", net, check=True).stdout.count("10.89.0.2/24") == 1


def test_a_killed_holder_is_replaced(env: Path, net: str) -> None:
    sh("true", "--network", net, check=True)
    old = _holder(env)
    assert old is not None
    os.kill(old, signal.SIGKILL)
    p = sh("ip -4 -o addr show eth0", "--network", net, check=True)
    assert "10.89.0.2/24" in p.stdout
    new = _holder(env)
    assert new is not None and new != old
    assert _links_become(env, ["lo", "sbx0", "tap0"])


def test_the_holder_goes_with_the_last_network(env: Path, net: str) -> None:
    sandboxer("network", "create", "second", check=True)
    sh("true", "--network", net, check=True)
    sh("true", "--network", "second", check=True)
    assert _links_become(env, ["lo", "sbx0", "sbx1", "tap0"])
    sandboxer("network", "rm", net, check=True)
    assert _links_become(env, ["lo", "sbx1", "tap0"])
    slirp = subprocess.run(["pgrep", "-f", str(env / "state" / "netns" / "slirp.sock")], capture_output=True,
                           text=True).stdout.split()
    assert len(slirp) == 1
    sandboxer("network", "rm", "second", check=True)
    assert _holder(env) is None
    assert sorted(os.listdir(env / "state" / "netns")) == ["holder.log", "leases", "lock", "networks", "slirp.log"]
    assert os.listdir(env / "state" / "netns" / "networks") == [], "a removed network kept its claim"
    deadline = time.monotonic() + 5  # slirp4netns sees its exit fd close
    while subprocess.run(["pgrep", "-f", str(env / "state" / "netns" / "slirp.sock")]).returncode == 0:
        assert time.monotonic() < deadline, "slirp4netns outlived the holder"
        time.sleep(0.05)


@pytest.mark.parametrize("args, message", [
    (("network", "create", "--subnet", "10.89.0.128/25", "x"), "overlaps 10.89.0.0/24 of network"),
    (("network", "create", "--subnet", "10.0.0.0/8", "x"), "overlaps"),
    (("network", "create", "--subnet", "10.0.2.0/24", "x"), "the network of pasta and slirp4netns"),
    (("network", "create", "--subnet", "10.1.2.0/33", "x"), "invalid subnet"),
    (("network", "create", "--subnet", "fd00::/64", "x"), "invalid subnet"),
    (("network", "create", "--subnet", "10.1.2.3/24", "x"), "invalid subnet"),
    (("network", "create", "--subnet", "127.0.0.0/24", "x"), "overlaps 127.0.0.0/8, the loopback range"),
    (("network", "create", "--subnet", "224.0.0.0/24", "x"), "the multicast range"),
    (("network", "create", "--subnet", "0.0.0.0/24", "x"), "(unspecified) range"),
    (("network", "create", "--subnet", "255.255.255.0/24", "x"), "the reserved (and broadcast) range"),
    (("network", "create", "--subnet", "169.254.0.0/24", "x"), "the link-local range"),
    (("network", "create", "--subnet", "192.0.0.0/2", "x"), "the multicast range: sandboxes cannot use it"),
    (("network", "create", "NET"), "already exists"),
    (("network", "create", "none"), "network mode"),
    (("network", "create", "../x"), "invalid network name"),
    (("network", "rm", "nosuch"), "no network 'nosuch'"),
    (("network", "inspect", "nosuch"), "no network 'nosuch'"),
    (("network", "frobnicate"), "usage: sandboxer network"),
    (("run", "--network", "nosuch", "--", "true"), "unknown network mode or network 'nosuch'"),
    (("run", "--network", "NET", "-p", "8080:80/udp", "--", "true"), "publishing UDP ports from the user-defined"),
    (("run", "--network-alias", "x", "--", "true"), "--network-alias names a sandbox on a user-defined network"),
    (("run", "--network", "NET", "--network-alias", "a\n6.6.6.6 b", "--", "true"), "invalid --network-alias"),
    (("run", "--network", "NET", "--network-alias", "", "--", "true"), "invalid --network-alias"),
    (("run", "--network", "NET", "--hostname", "a b", "--", "true"), "invalid --hostname"),
])
def test_bad_input_is_one_line_and_changes_nothing(env: Path, net: str, args: tuple[str, ...], message: str) -> None:
    before = sandboxer("network", "ls", check=True).stdout
    p = sandboxer(*(net if a == "NET" else a for a in args))
    assert p.returncode in (2, 125), p.stderr
    assert message in p.stderr
    assert p.stderr.count("error:") == 1
    assert sandboxer("network", "ls", check=True).stdout == before
    assert _leases(env) == []


def test_a_network_in_use_is_not_removed(env: Path, net: str) -> None:
    sandboxer("run", "-d", "--name", "busy", "--network", net, "--", "sleep", "60", check=True)
    p = sandboxer("network", "rm", net)
    assert p.returncode == 125 and f"network {net!r} is in use by busy" in p.stderr
    assert net in sandboxer("network", "ls", "-q").stdout
    assert sandboxer("exec", "busy", "ip", "-4", "-o", "addr", "show", "eth0", check=True).returncode == 0


def test_pytest_fixture_and_marker_on_a_network(pytester: pytest.Pytester, net: str) -> None:
    pytester.makepyfile(f"""
        import subprocess
        import pytest

        SERVE = {SERVE!r}

        def test_server_and_client_by_name(sandbox_factory):
            server = sandbox_factory(network={net!r})
            server.start(["sh", "-c", SERVE], name="api")
            client = sandbox_factory(network={net!r})
            out = client.run(["sh", "-c", {_connect('api')!r} + " && getent hosts api"], check=True, text=True)
            assert out.stdout.startswith("hi from ")
            assert out.stdout.splitlines()[1].split()[0] == server.ip

        @pytest.mark.sandbox(network={net!r})
        def test_marked_test_is_on_the_network():
            out = subprocess.run(["ip", "-4", "-o", "addr", "show", "eth0"], capture_output=True, text=True,
                                 check=True).stdout
            assert " 10.89.0." in out
            assert open("/etc/hosts").read().count("10.89.0.") == 1
    """)
    result = pytester.runpytest_subprocess("-p", "no:cacheprovider")
    result.assert_outcomes(passed=2)


def test_system_prune_frees_the_leases_of_crashed_sandboxes(env: Path, net: str) -> None:
    sandboxer("run", "-d", "--name", "alive", "--network", net, "--", "sleep", "60", check=True)
    # what a sandbox killed with its whole process tree (its lock freed) leaves until the next change
    lease_dir = env / "state" / "netns" / "leases" / _inspect(net)["Id"]
    (lease_dir / "10.89.0.9").write_text(json.dumps({
        "address": "10.89.0.9", "sandbox": "f" * 64, "names": ["ghost"], "hosts": str(env / "nowhere")}))
    out = sandboxer("system", "prune", check=True).stdout
    assert f"freed address 10.89.0.9 of network {net}" in out
    assert sorted(p.name for p in lease_dir.iterdir()) == ["10.89.0.2"]
    assert "alive" in sandboxer("exec", "alive", "cat", "/etc/hosts", check=True).stdout


def test_the_holder_under_the_default_state_root(tmp_path: Path) -> None:
    """No SANDBOXER_STATE_DIR, no XDG_RUNTIME_DIR: the state root is /tmp/sandboxer-UID, whose name the
    holder must not work out again inside its namespace, where its uid is 0 (it once bound its socket
    under /tmp/sandboxer-0, and every attach failed)."""
    name = f"dflt-{os.urandom(3).hex()}"
    with pytest.MonkeyPatch.context() as mp:
        mp.delenv("SANDBOXER_STATE_DIR", raising=False)
        mp.delenv("XDG_RUNTIME_DIR", raising=False)
        mp.setenv("SANDBOXER_DATA_DIR", str(tmp_path / "data"))
        sandboxer("network", "create", name, check=True)
        try:
            p = sh("ip -4 -o addr show eth0", "--network", name, check=True)
            assert " 10.89." in p.stdout
        finally:
            sandboxer("network", "rm", name, check=True)
    if os.getuid() != 0:
        assert not os.path.exists("/tmp/sandboxer-0") or os.stat("/tmp/sandboxer-0").st_uid != os.getuid()


def test_no_sandbox_can_use_the_holder(env: Path, net: str) -> None:
    """The holder serves the user outside any sandbox: a sandbox shown its socket (here bound in on purpose,
    as a --read-only host root shows $XDG_RUNTIME_DIR) is hung up on, and nothing runs."""
    sh("true", "--network", net, check=True)
    netns = str(env / "state" / "netns")
    probe = ("import json, socket\n"
             "s = socket.socket(socket.AF_UNIX, socket.SOCK_SEQPACKET)\n"
             f"s.connect({netns + '/holder.sock'!r})\n"
             "try:\n"
             "    s.send(json.dumps({'op': 'unplug_bridge', 'args': ['sbx0']}).encode())\n"
             "    print('reply', s.recv(4096))\n"
             "except OSError as e:\n"  # hung up on before the send (EPIPE) or the reply (ECONNRESET)
             "    print('refused', e.errno)\n")
    p = sandboxer("run", "--read-only", "-v", f"{netns}:{netns}", "--", "python3", "-c", probe)
    assert p.stdout.startswith(("reply b''", "refused")), (p.stdout, p.stderr)
    assert _links_become(env, ["lo", "sbx0", "tap0"])


def test_a_half_made_bridge_is_repaired(env: Path, net: str) -> None:
    """A bridge left down and without its address (a holder child killed mid-way) is put right by the
    next sandbox that plugs into it."""
    sh("true", "--network", net, check=True)
    pid = _holder(env)
    assert pid is not None
    nsenter = ["nsenter", "--preserve-credentials", "-U", "-n", "-t", str(pid)]
    subprocess.run([*nsenter, "sh", "-c", "ip addr flush dev sbx0 && ip link set sbx0 down"], check=True)
    p = sh("ip route; busybox ping -c 1 -W 2 10.89.0.1", "--network", net, check=True)
    assert "default via 10.89.0.1 dev eth0" in p.stdout and " 0% packet loss" in p.stdout
    out = subprocess.run([*nsenter, "ip", "-4", "-o", "addr", "show", "sbx0"], capture_output=True, text=True).stdout
    assert "10.89.0.1/24" in out


@pytest.mark.skipif(os.getuid() == 0, reason="a user's fallback state root")
def test_the_fallback_state_root_is_the_users_in_a_user_namespace_too() -> None:
    """/tmp/sandboxer-UID is named by the uid outside the user namespace (inside, ours reads 0)."""
    probe = "from sandboxer.state import state_root; print(state_root())"
    env = {k: v for k, v in os.environ.items() if k not in ("SANDBOXER_STATE_DIR", "XDG_RUNTIME_DIR")}
    inside = subprocess.run(["unshare", "--map-root-user", sys.executable, "-c", probe], env=env,
                            capture_output=True, text=True, check=True).stdout.strip()
    assert inside == f"/tmp/sandboxer-{os.getuid()}"


def _bridges(root: Path) -> list[str]:
    return [link for link in _holder_links(root) if link.startswith("sbx") and not link.startswith("sbxv")]


def _address_of(name: str) -> str:
    return str(json.loads(sandboxer("inspect", name, check=True).stdout)[0]["NetworkSettings"]["IPAddress"])


def test_networks_of_two_data_dirs_share_no_bridge_and_no_address(env: Path, net: str) -> None:
    """Definitions are per data dir, the holder, its bridges and the leases per user: a second data dir's
    network (of the same name, even) gets a bridge, a subnet and leases of its own, and removing it leaves
    the first one's sandboxes connected."""
    sandboxer("run", "-d", "--name", "srv", "--network", net, "--", "sh", "-c", SERVE, check=True)
    other = {**os.environ, "SANDBOXER_DATA_DIR": str(env / "data2")}
    sandboxer("network", "create", net, env=other, check=True)
    try:
        theirs = json.loads(sandboxer("network", "inspect", net, env=other, check=True).stdout)[0]
        assert (theirs["NetworkInterface"], theirs["Subnets"][0]["Subnet"]) == ("sbx1", "10.89.1.0/24")
        p = sh("ip -4 -o addr show eth0", "--network", net, env=other, check=True)
        assert " 10.89.1.2/24 " in p.stdout
        assert _bridges(env) == ["sbx0", "sbx1"]
        assert [m["Names"][0] for m in _inspect(net)["Containers"].values()] == ["srv"]
    finally:
        sandboxer("network", "rm", net, env=other, check=True)
    assert _holder(env) is not None and _bridges(env) == ["sbx0"]
    assert "hi from" in sh(_connect(_address_of("srv")), "--network", net, check=True).stdout


def test_a_clashing_network_of_another_data_dir_is_refused(env: Path, net: str) -> None:
    """A network defined under another state root (or before a reboot emptied the claims) may have the
    bridge and subnet of one in use: it is refused at its first run, and removing it touches nothing."""
    other = {**os.environ, "SANDBOXER_DATA_DIR": str(env / "data2"), "SANDBOXER_STATE_DIR": str(env / "state2")}
    sandboxer("network", "create", "clash", env=other, check=True)  # sbx0 and 10.89.0.0/24, as ours
    sandboxer("run", "-d", "--name", "srv", "--network", net, "--", "sh", "-c", SERVE, check=True)
    other["SANDBOXER_STATE_DIR"] = str(env / "state")
    try:
        p = sh("true", "--network", "clash", env=other)
        assert p.returncode == 125 and p.stderr.count("error:") == 1, p.stderr
        assert f"network 'clash' (10.89.0.0/24, sbx0) clashes with network {net!r} of data dir " in p.stderr
    finally:
        sandboxer("network", "rm", "clash", env=other, check=True)
    assert _holder(env) is not None and _bridges(env) == ["sbx0"]
    assert "hi from" in sh(_connect(_address_of("srv")), "--network", net, check=True).stdout


def test_a_lost_supervisor_frees_its_address_and_ports(env: Path, net: str) -> None:
    """A SIGKILLed supervisor takes its sandbox along; the first command that finds it lost (here ps)
    frees the lease and the published host port, with no network command in between."""
    sandboxer("run", "-d", "--name", "web", "--network", net, "-p", "127.0.0.1::8000", "--",
              "python3", "-m", "http.server", "8000", "--directory", "/etc", check=True)
    port = int(sandboxer("port", "web", "8000", check=True).stdout.strip().rsplit(":", 1)[1])
    assert _get(port) == Path("/etc/hostname").read_text()
    supervisor = json.loads(sandboxer("inspect", "web", check=True).stdout)[0]["State"]["SupervisorPid"]
    os.kill(supervisor, signal.SIGKILL)
    deadline = time.monotonic() + 10
    while "supervisor lost" not in sandboxer("ps", "-a", check=True).stdout:
        assert time.monotonic() < deadline, "the sandbox outlived its supervisor"
        time.sleep(0.05)
    assert _leases(env) == [] and _dnat_rules(env) == [] and _forwards(env) == []
    with socket.socket() as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # the closed connection may be in TIME_WAIT
        s.bind(("127.0.0.1", port))
    sandboxer("rm", "web", check=True)


def test_a_network_is_kept_while_an_exited_sandbox_refers_to_it(env: Path, net: str) -> None:
    """As docker: a network is in use by its sandboxes, running or not (a restart needs it)."""
    sandboxer("run", "-d", "--name", "done", "--network", net, "--", "true", check=True)
    sandboxer("wait", "done", check=True)
    p = sandboxer("network", "rm", net)
    assert p.returncode == 125 and f"network {net!r} is in use by done (exited)" in p.stderr
    assert "sandboxer rm -f NAME" in p.stderr and p.stderr.count("error:") == 1
    sandboxer("restart", "done", check=True)
    sandboxer("wait", "done", check=True)
    assert sandboxer("inspect", "-f", "{{.State.ExitCode}}", "done", check=True).stdout.strip() == "0"
    sandboxer("rm", "done", check=True)
    sandboxer("network", "rm", net, check=True)
