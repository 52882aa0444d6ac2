"""``sandboxer run`` on the host root, as a user runs it: isolation, exit codes, errors.

Every test here runs the real command in a subprocess.  Run as an
unprivileged user (as CI does) they prove the rootless behaviour.
"""

from __future__ import annotations

import os
import re
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
from conftest import SANDBOXER, needs_subids, sandboxer, sh, state_entries

# --- the basics ---------------------------------------------------------------


def test_readme_command_runs_as_root_of_the_sandbox() -> None:
    p = sh("id -u; hostname; ls /", "--rm", check=True)
    uid, hostname, *listing = p.stdout.split("\n")
    assert uid == "0"
    assert re.fullmatch(r"[0-9a-f]{12}", hostname)
    assert {"etc", "usr", "proc"} <= set(listing)


def test_the_run_path_imports_nothing_it_does_not_need() -> None:
    """Every module ``run -- CMD`` loads is start-up time (the command's figure in the README): no json,
    no enum (the signal module's enums: sandboxer.signals), no dataclasses, typing, subprocess or pluggy, no
    importlib or warnings, ctypes' Python half (sandboxer.syscalls drives _ctypes), and no collections
    (sandboxer.records makes the named tuples)."""
    import site
    import sys
    from pathlib import Path

    slow = {"json", "re", "enum", "functools", "dataclasses", "typing", "subprocess", "pluggy", "signal", "warnings",
            "importlib", "ctypes", "collections"}
    code = ("import sys, atexit; from sandboxer.cli import main; atexit.register(lambda: print(*sorted("
            f"set({sorted(slow)!r}) & set(sys.modules)), file=sys.stderr)); sys.exit(main(sys.argv[1:]))")
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(Path(__file__).resolve().parent.parent),
                                                        *site.getsitepackages()])}
    for _ in range(2):  # the first in a new environment (sys.path) may scan the installed entry points, once
        bare = subprocess.run([sys.executable, "-S", "-c", code, "run", "--", "sh", "-c", "echo bare"],
                              env=env, capture_output=True, text=True, timeout=60)
    assert bare.returncode == 0 and bare.stdout == "bare\n", bare.stderr
    assert bare.stderr.strip() == "", bare.stderr


def test_an_exception_in_the_callers_wait_ends_the_sandbox() -> None:
    """A caller that keeps its own signals (a build: forward_signals=False) and is interrupted while it
    waits — in the status read, where a sandbox without pump or deadline waits — kills the sandbox and
    reaps its set-up process before the exception goes on; the sandbox ran on, its state released."""
    code = f"""
import os, signal, subprocess, sys
from sandboxer.sandbox import SandboxOptions, run
def interrupt(sig, frame):
    raise KeyboardInterrupt
signal.signal(signal.SIGALRM, interrupt)
signal.alarm(2)
try:
    run(SandboxOptions(command=["sleep", "3333.{os.getpid()}"]), forward_signals=False)
except KeyboardInterrupt:
    pass
children = subprocess.run(["ps", "--ppid", str(os.getpid()), "-o", "pid="], capture_output=True, text=True)
everything = subprocess.run(["ps", "-eo", "args"], capture_output=True, text=True).stdout
print("children:", len(children.stdout.split()) - 1, "sleeping:", "sleep 3333.{os.getpid()}" in everything.split("\\n"))
"""
    before = set(state_entries())
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60,
                          env={**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parent.parent)})
    # while the caller still lives: no child left but ps itself, and the workload gone
    assert done.stdout.strip() == "children: 0 sleeping: False", (done.stdout, done.stderr)
    ps = subprocess.run(["ps", "-eo", "args"], capture_output=True, text=True).stdout
    assert f"sleep 3333.{os.getpid()}" not in ps.splitlines()
    assert set(state_entries()) == before


def test_namespaces_made_after_the_user_namespace_fail_cleanly() -> None:
    """The set-up process unshares its user namespace alone, says so, and makes the others while its
    maps are written: a failure there (a host at its max_net_namespaces) still reaches the caller as
    one error, after the maps, and leaves nothing behind."""
    code = """
import errno, sys
from sandboxer import syscalls
from sandboxer.errors import SandboxerError
from sandboxer.sandbox import SandboxOptions, run
real = syscalls.unshare
def unshare(flags):
    if flags & syscalls.CLONE_NEWNET and not flags & syscalls.CLONE_NEWUSER:
        raise OSError(errno.ENOSPC, "unshare: No space left on device")
    real(flags)
syscalls.unshare = unshare  # the set-up process is a fork: it inherits the stand-in
try:
    run(SandboxOptions(command=["true"]))
except SandboxerError as e:
    print("error:", e)
"""
    before = set(state_entries())
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60,
                          env={**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parent.parent)})
    assert done.stdout.startswith("error: unshare mount, network, UTS and IPC namespaces: "), (done.stdout, done.stderr)
    assert "No space left on device" in done.stdout
    assert "Traceback" not in done.stderr
    assert set(state_entries()) == before


def test_the_attach_hook_finds_the_sandbox_in_its_new_network_namespace() -> None:
    """sandboxer_attach is promised a PID already in its new network namespace (slirp4netns and pasta
    enter it).  The set-up process makes that namespace while its maps are written; made slowly here, the
    hook must still wait for it — else it would enter the host's (and, as root, configure it)."""
    code = """
import os, time
from sandboxer import plugins, syscalls
from sandboxer.plugins import hookimpl
real = syscalls.unshare
def unshare(flags):
    if flags & syscalls.CLONE_NEWNET and not flags & syscalls.CLONE_NEWUSER:
        time.sleep(0.3)  # a slow network namespace: the maps are written long before it exists
    real(flags)
syscalls.unshare = unshare
class Probe:
    @hookimpl
    def sandboxer_attach(self, plan, pid):
        print("host netns:", os.readlink(f"/proc/{pid}/ns/net") == os.readlink("/proc/self/ns/net"))
plugins.register(Probe())
from sandboxer.sandbox import SandboxOptions, run
print("status:", run(SandboxOptions(command=["true"])).code)
"""
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60,
                          env={**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parent.parent)})
    assert done.stdout == "host netns: False\nstatus: 0\n", (done.stdout, done.stderr)


def test_hostname_option_and_env() -> None:
    p = sh('hostname; echo "$FOO $HOSTNAME"', "--hostname", "box1", "-e", "FOO=bar", check=True)
    assert p.stdout.split("\n")[:2] == ["box1", "bar box1"]
    long = sandboxer("run", "--hostname", "h" * 65, "--", "true")  # refused before anything is set up
    assert long.returncode == 125 and "longer than 64 bytes" in long.stderr and long.stderr.count("\n") == 2


def test_env_file_and_passthrough(tmp_path: pytest.TempPathFactory) -> None:
    env_file = os.path.join(str(tmp_path), "env")
    with open(env_file, "w") as f:
        f.write("# comment\nA=1\n\nB=two words\n")
    env = dict(os.environ, PASSME="yes")
    p = sh('echo "$A|$B|$PASSME|${UNSET-none}"', "--env-file", env_file, "-e", "PASSME", "-e", "UNSET",
           env=env, check=True)
    assert p.stdout.strip() == "1|two words|yes|none"
    for content, message in ((b"A=1\n\xff=2\n", "is not UTF-8 text"), (b"=bad\n", ":1: invalid environment"),
                             (b"A=\x00\n", ":1: invalid environment")):
        with open(env_file, "wb") as f:
            f.write(content)
        p = sandboxer("run", "--env-file", env_file, "--", "true")
        assert p.returncode == 125 and message in p.stderr and "hint:" in p.stderr, p.stderr
    p = sandboxer("run", "-e", "=bad", "--", "true")
    assert p.returncode == 125 and "-e: invalid environment variable" in p.stderr, p.stderr


def test_workdir() -> None:
    assert sh("pwd", "-w", "/usr/share", check=True).stdout.strip() == "/usr/share"


def test_descriptors_the_caller_left_open_stay_outside(tmp_path: pytest.TempPathFactory) -> None:
    """A shell's ``7</dir`` reaching the workload would be a way out of the sandbox: ``openat``
    through it reads (and writes) the host's files under any root.  Neither the command nor, with
    ``--init``, PID 1 (whose descriptors the command reaches through /proc/1/fd) may hold it."""
    outside = os.path.join(str(tmp_path), "outside")
    os.mkdir(outside)
    with open(os.path.join(outside, "secret"), "w") as f:
        f.write("host only")
    fd = os.open(outside, os.O_RDONLY | os.O_DIRECTORY)
    try:
        script = (f"cat /proc/self/fd/{fd}/secret /proc/1/fd/{fd}/secret 2>/dev/null; "
                  "for f in /proc/self/fd/* /proc/1/fd/*; do readlink $f; done")
        for init in ([], ["--init"]):
            p = subprocess.run([*SANDBOXER, "run", *init, "--", "sh", "-c", script], pass_fds=(fd,),
                               capture_output=True, text=True, timeout=60)
            assert p.returncode != 0 or p.stdout, p.stderr
            assert "host only" not in p.stdout and outside not in p.stdout, (init, p.stdout)
    finally:
        os.close(fd)


def test_an_init_pid_1_shows_the_workload_neither_our_environment_nor_our_files() -> None:
    """``--init``'s PID 1 is a fork of sandboxer: the workload (same uid) reaches it through /proc/1.  It
    must not find the caller's environment there (tokens), nor the state directory's lock (a host
    file), and a status pipe written into with junk must not crash the caller."""
    env = dict(os.environ, SANDBOXER_TEST_SECRET="do-not-leak")
    p = subprocess.run([*SANDBOXER, "run", "--init", "--", "sh", "-c",
                        "tr -d '\\0' < /proc/1/environ; echo; ls /proc/1/fd | tr '\\n' ' '; echo; "
                        "for fd in /proc/1/fd/[3-9]*; do printf '\\377\\n' > $fd; done 2>/dev/null; exit 3"],
                       env=env, capture_output=True, text=True, timeout=60)
    environ, fds = p.stdout.split("\n")[:2]
    assert "do-not-leak" not in p.stdout and environ == "", p.stdout
    assert len(fds.split()) == 4, fds  # stdin, stdout, stderr and the status pipe
    assert p.returncode == 3 and "internal error" not in p.stderr, p.stderr


_KEY_SEARCH = """
import ctypes, os, sys
libc = ctypes.CDLL(None, use_errno=True)
found = libc.syscall(250, 10, -3, b"user", sys.argv[1].encode(), 0)  # keyctl(SEARCH, session keyring)
print("found" if found > 0 else "not-found", os.strerror(ctypes.get_errno()))
"""


@pytest.mark.skipif(os.uname().machine != "x86_64", reason="syscall numbers of x86_64")
def test_without_seccomp_the_sandbox_has_a_session_keyring_of_its_own() -> None:
    """With the default profile keyctl is refused; unconfined, the sandbox must not reach the keys of
    the session that started it (as runc: a new session keyring)."""
    import ctypes
    import sys

    libc = ctypes.CDLL(None, use_errno=True)
    name = f"sandboxer-test-{os.getpid()}"
    key = libc.syscall(248, b"user", name.encode(), b"host secret", 11, -3)  # add_key to our session keyring
    if key < 0:
        pytest.skip(f"no session keyring here: {os.strerror(ctypes.get_errno())}")
    try:
        here = subprocess.run([sys.executable, "-c", _KEY_SEARCH, name], capture_output=True, text=True, timeout=30)
        assert here.stdout.startswith("found"), here.stdout  # the search finds it outside
        p = sandboxer("run", "--security-opt", "seccomp=unconfined", "--", "python3", "-c", _KEY_SEARCH, name)
        assert p.returncode == 0 and p.stdout.startswith("not-found"), p.stdout + p.stderr
    finally:
        libc.syscall(250, 21, key)  # keyctl(INVALIDATE)


def test_exit_status_is_the_commands() -> None:
    assert sh("exit 3").returncode == 3
    # PID 1 of a namespace cannot be killed from inside (as in Docker) ...
    assert sh("kill -9 $$; exit 4").returncode == 4
    # ... the workload under --init can, and reports 128+N
    assert sh("kill -9 $$", "--init").returncode == 137


def test_command_not_found_is_127() -> None:
    p = sandboxer("run", "--", "no-such-command-xyz")
    assert p.returncode == 127
    assert "no-such-command-xyz" in p.stderr and "not found" in p.stderr
    assert "Traceback" not in p.stderr


def test_not_executable_is_126() -> None:
    p = sandboxer("run", "--", "/etc/passwd")
    assert p.returncode == 126
    assert "Traceback" not in p.stderr


def test_stdin_is_null_unless_interactive() -> None:
    assert sandboxer("run", "--", "cat", input="hello").stdout == ""
    assert sandboxer("run", "-i", "--", "cat", input="hello").stdout == "hello"


# --- the root filesystem ---------------------------------------------------------

def test_writes_to_host_root_stay_inside(home_tmp: str) -> None:
    marker = f"sbx-test-{os.getpid()}"
    before = open("/etc/passwd").read()
    p = sh(f"echo '{marker}:x:4242:4242::/:/bin/sh' >> /etc/passwd && grep -c {marker} /etc/passwd && "
           f"echo hi > /usr/{marker} && echo home > {home_tmp}/inside && mkdir /home/{marker} && cat /usr/{marker}",
           check=True)
    assert p.stdout.split() == ["1", "hi"]
    assert open("/etc/passwd").read() == before
    assert not os.path.exists(f"/usr/{marker}")
    assert not os.path.exists(f"{home_tmp}/inside")
    assert not os.path.exists(f"/home/{marker}")
    # and the next sandbox starts clean
    assert sh(f"grep -c {marker} /etc/passwd; test -e /usr/{marker} || echo gone").stdout.split() == ["0", "gone"]


def test_host_root_directories_count_one_link_and_tools_still_walk_them() -> None:
    # fuse-overlayfs runs with static_nlink on the host root (storage/fuse.py): a directory's link count
    # is 1, as on btrfs, so that stat never makes the daemon read a whole directory; find must not take
    # it as a leaf, and a directory replaced inside (opaque in the upper layer) must still hide the host's
    p = sh("stat -c %h /usr /etc; stat -c %h /etc/passwd; find /etc -maxdepth 2 -name passwd -type f | sort; "
           "rm -rf /usr/share/doc && mkdir /usr/share/doc && ls -A /usr/share/doc | wc -l; "
           "mkdir -p /opt/a/b && find /opt/a -mindepth 1 | sort", check=True)
    lines = p.stdout.split()
    assert lines[:2] == ["1", "1"]
    assert lines[2] == str(os.stat("/etc/passwd").st_nlink)  # files keep their real count
    assert "/etc/passwd" in lines[3:-2] and lines[-2:] == ["0", "/opt/a/b"]


def test_private_tmp_and_run() -> None:
    p = sh("ls -A /tmp /run | wc -l; touch /tmp/x /run/y && echo ok", check=True)
    assert p.stdout.split() == ["3", "ok"]  # two headers and the blank line between them


def test_read_only_root() -> None:
    p = sh("touch /etc/x 2>&1; touch /tmp/ok && echo tmp-ok", "--read-only")
    assert "Read-only file system" in p.stdout
    assert "tmp-ok" in p.stdout
    p = sandboxer("run", "--read-only", "-v", "/etc:/no-such-mount-point", "--", "true")
    assert p.returncode == 125 and "the mount point must exist on a read-only root" in p.stderr, p.stderr


def test_read_only_with_sys_admin_cannot_be_undone_onto_the_host(home_tmp: str) -> None:
    """With CAP_SYS_ADMIN the workload can remount the root writable and unmount what covers the host's
    /proc: over the host root bound as is, that wrote host files and showed host processes; with that
    capability the root is a throwaway layer, as without --read-only."""
    target = os.path.join(home_tmp, "ro-escape")
    p = sh(f"touch /etc/x 2>&1; mount -o remount,bind,rw / && echo > {target}; umount -l /proc 2>/dev/null; "
           "ls /proc | grep -c '^[0-9]'", "--read-only", "--cap-add", "SYS_ADMIN")
    assert "Read-only file system" in p.stdout  # read-only as asked, until the workload itself undoes it
    assert not os.path.exists(target), "a --read-only sandbox wrote a host file"
    if os.getuid() != 0:  # as root, CAP_SYS_ADMIN given to a sandbox is the host's: it may unmount anything
        assert int(p.stdout.split()[-1]) < 10, p.stdout  # the sandbox's processes, never the host's


@pytest.mark.parametrize("option", [["-v", "/tmp:/"], ["--tmpfs", "/dev"], ["-v", "/proc:/proc"],
                                    ["-v", "/tmp:/proc/sys"], ["--tmpfs", "/sys/fs"], ["-v", "/tmp:/dev/pts"]])
def test_a_mount_may_not_replace_what_isolation_stands_on(option: list[str]) -> None:
    p = sandboxer("run", *option, "--", "true")
    assert p.returncode == 125 and "would replace the sandbox's own" in p.stderr, p.stderr


def test_tmpfs_option() -> None:
    p = sh("grep ' /data ' /proc/self/mountinfo | cut -d' ' -f9; touch /data/f && echo ok", "--tmpfs", "/data",
           check=True)
    assert p.stdout.split() == ["tmpfs", "ok"]


def test_volumes_rw_and_ro(home_tmp: str) -> None:
    rw, ro = os.path.join(home_tmp, "rw"), os.path.join(home_tmp, "ro")
    os.mkdir(rw)
    os.mkdir(ro)
    with open(os.path.join(ro, "f"), "w") as f:
        f.write("data\n")
    p = sh("echo out > /mnt/rw/new; cat /mnt/ro/f; echo x > /mnt/ro/f 2>/dev/null || echo ro-refused",
           "-v", f"{rw}:/mnt/rw", "-v", f"{ro}:/mnt/ro:ro", check=True)
    assert p.stdout.split() == ["data", "ro-refused"]
    assert open(os.path.join(rw, "new")).read() == "out\n"


def test_a_volume_inside_another_shows_whatever_their_order(home_tmp: str) -> None:
    """Outer destinations are mounted first, as docker and podman sort them: given inner first, the
    outer volume no longer covers it."""
    outer, inner = os.path.join(home_tmp, "outer"), os.path.join(home_tmp, "inner")
    os.mkdir(outer)
    os.mkdir(inner)
    with open(os.path.join(inner, "f"), "w") as f:
        f.write("inner\n")
    p = sh("cat /mnt/o/i/f", "-v", f"{inner}:/mnt/o/i:ro", "--tmpfs", "/mnt/o/t", "-v", f"{outer}:/mnt/o",
           check=True)
    assert p.stdout == "inner\n"


def test_bad_volume_source_is_a_clear_error() -> None:
    p = sh("true", "-v", "/no/such/dir:/x")
    assert p.returncode == 125
    lines = p.stderr.strip().splitlines()
    assert lines[0].startswith("sandboxer: error: volume source /no/such/dir does not exist")
    assert lines[1].startswith("hint:")
    assert "Traceback" not in p.stderr


@pytest.mark.parametrize("bad", [["--cap-add", "NOPE"], ["-v", "a"], ["--security-opt", "foo"],
                                 ["--network", "bridge0"], ["--storage-driver", "zfs"], ["--bogus"],
                                 ["-u", "nosuchuser"]])
def test_usage_mistakes_exit_125_without_traceback(bad: list[str]) -> None:
    p = sandboxer("run", *bad, "--", "true")
    assert p.returncode == 125, p.stderr
    assert p.stderr.startswith("sandboxer: error: ")
    assert "Traceback" not in p.stderr


def test_storage_driver_copy_is_refused_for_host_root() -> None:
    p = sandboxer("run", "--storage-driver", "copy", "--", "true")
    assert p.returncode == 125
    assert "host root is too large to copy" in p.stderr


def test_storage_driver_is_named_in_debug_output() -> None:
    p = sandboxer("run", "--debug", "--", "true")
    assert p.returncode == 0
    assert "storage driver fuse-overlayfs" in p.stderr


def test_kernel_overlay_is_refused_for_host_root() -> None:
    p = sandboxer("run", "--storage-driver", "overlay", "--", "true")
    assert p.returncode == 125
    assert "storage driver 'overlay' is unusable here" in p.stderr


# --- namespaces -------------------------------------------------------------------

NAMESPACES = ("user", "mnt", "pid", "uts", "ipc", "net", "cgroup")


def test_every_namespace_is_new() -> None:
    script = "; ".join(f"readlink /proc/self/ns/{ns}" for ns in NAMESPACES)
    inside = sh(script, check=True).stdout.split()
    outside = [os.readlink(f"/proc/self/ns/{ns}") for ns in NAMESPACES]
    assert len(inside) == len(NAMESPACES)
    for ns, a, b in zip(NAMESPACES, inside, outside, strict=True):
        assert a != b, f"{ns} namespace is shared with the host"


def test_command_is_pid_1_and_host_processes_are_invisible() -> None:
    host = subprocess.Popen(["sleep", "30"])
    try:
        p = sh(f"echo $$; ls /proc | grep -c '^[0-9]'; kill -0 {host.pid} 2>&1 || echo cannot-signal",
               check=True)
        pid, count, *_ = p.stdout.split("\n")
        assert pid == "1"
        assert int(count) <= 4  # sh, ls, grep and at most a subshell
        assert "cannot-signal" in p.stdout
    finally:
        host.kill()
        host.wait()


def test_only_loopback_and_it_is_up() -> None:
    p = sh("ls /sys/class/net; cat /sys/class/net/lo/flags", check=True)
    name, flags = p.stdout.split()
    assert name == "lo"
    assert int(flags, 16) & 1  # IFF_UP


def test_no_route_to_the_hosts_network() -> None:
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen()
    port = server.getsockname()[1]
    try:
        p = sh(f"python3 -c 'import socket; socket.create_connection((\"127.0.0.1\", {port}), timeout=2)' "
               "2>&1 | tail -1")
        assert "Connection refused" in p.stdout
    finally:
        server.close()


def test_host_abstract_unix_sockets_are_unreachable() -> None:
    name = f"\0sandboxer-test-{os.getpid()}"
    server = socket.socket(socket.AF_UNIX)
    server.bind(name)
    server.listen()
    try:
        script = ("import socket; s = socket.socket(socket.AF_UNIX); "
                  f"s.connect({name!r})")
        p = sandboxer("run", "--", "python3", "-c", script)
        assert p.returncode != 0
        assert "Connection refused" in p.stderr
    finally:
        server.close()


def test_host_session_sockets_under_run_are_hidden() -> None:
    xdg = os.environ.get("XDG_RUNTIME_DIR") or "/run/user"
    p = sh(f"ls -A {xdg} 2>/dev/null | wc -l")
    assert p.stdout.strip() == "0"


# --- user namespace ----------------------------------------------------------------

@needs_subids
def test_subordinate_ids_are_mapped() -> None:
    p = sh("cat /proc/self/uid_map; cd /tmp && touch f && chown 1000:1000 f && stat -c %u:%g f", check=True)
    lines = [line.split() for line in p.stdout.strip().splitlines()]
    assert lines[0][:2] == ["0", str(os.getuid())] or os.getuid() == 0
    assert lines[-1] == ["1000:1000"]
    if os.getuid() != 0:
        assert int(lines[1][2]) >= 65536


@needs_subids
def test_user_switch_inside() -> None:
    p = sh("setpriv --reuid 1000 --regid 1000 --clear-groups id -u", check=True)
    assert p.stdout.strip() == "1000"
    p = sh("id -u; id -g; grep CapEff /proc/self/status", "-u", "1000:1001", check=True)
    uid, gid, caps = p.stdout.strip().splitlines()
    assert (uid, gid) == ("1000", "1001")
    assert caps.split()[1] == "0000000000000000"


@needs_subids
def test_setuid_binary_gains_nothing() -> None:
    p = sh("cp /usr/bin/id /tmp/suid-id && chmod 4755 /tmp/suid-id && "
           "setpriv --reuid 1000 --regid 1000 --clear-groups /tmp/suid-id -u", check=True)
    assert p.stdout.strip() == "1000"


def test_without_subordinate_ids_a_single_id_map_with_a_notice(capfd: pytest.CaptureFixture[str],
                                                                monkeypatch: pytest.MonkeyPatch) -> None:
    if os.getuid() == 0:
        pytest.skip("root maps ids directly")
    import sandboxer.sandbox as sb
    from sandboxer.runtime.userns import IdMap, IdMapping

    single = IdMap((IdMapping(0, os.getuid(), 1),), (IdMapping(0, os.getgid(), 1),))
    monkeypatch.setattr(sb, "default_idmap", lambda: single)
    status = sb.run(sb.SandboxOptions(command=["sh", "-c", "cat /proc/self/uid_map; id -u; "
                                                             "chown 1000 /etc/hostname 2>/dev/null || echo no-chown"]))
    out, err = capfd.readouterr()
    assert status.code == 0
    lines = out.strip().splitlines()
    assert lines[0].split() == ["0", str(os.getuid()), "1"]
    assert lines[1:] == ["0", "no-chown"]
    assert "notice: no subuid/subgid range" in err
    assert len(err.strip().splitlines()) == 1
    with pytest.raises(sb.HostError, match="not mapped"):  # this host's limit: a test may skip on it
        sb.run(sb.SandboxOptions(command=["true"], user="1000"))


# --- mounts ----------------------------------------------------------------------------

def test_dev_is_minimal() -> None:
    p = sh("ls /dev | sort | tr '\\n' ' '; echo; echo x > /dev/null && head -c4 /dev/zero | wc -c", check=True)
    entries = set(p.stdout.split("\n")[0].split())
    assert {"null", "zero", "full", "random", "urandom", "tty", "pts", "shm", "ptmx", "fd", "mqueue"} <= entries
    assert "sda" not in entries and "vda" not in entries and "kmsg" not in entries
    assert p.stdout.split("\n")[1].strip() == "4"


def test_devpts_is_a_new_instance() -> None:
    p = sh("grep ' /dev/pts ' /proc/self/mountinfo; ls /dev/pts", check=True)
    assert "devpts" in p.stdout and "ptmxmode=666" in p.stdout
    assert p.stdout.split()[-1] == "ptmx"  # no host terminals


def test_proc_is_fresh_and_sys_read_only() -> None:
    p = sh("cat /proc/1/comm; touch /sys/kernel/x 2>&1 | grep -c 'Read-only'", check=True)
    assert p.stdout.split() == ["sh", "1"]


def test_masked_and_read_only_paths() -> None:
    p = sh("(wc -c < /proc/kcore) 2>/dev/null || echo 0; cat /proc/keys | wc -l; cat /proc/timer_list | wc -l; "
           "ls /sys/firmware | wc -l; (echo 1 > /proc/sys/kernel/domainname) 2>&1 | grep -c Read-only; "
           "grep -c ' /proc/bus ' /proc/self/mountinfo", check=True)
    assert p.stdout.split() == ["0", "0", "0", "0", "1", "1"]


def test_old_root_is_detached() -> None:
    p = sh("cut -d' ' -f5 /proc/self/mountinfo | sort -u | tr '\\n' ' '", check=True)
    points = p.stdout.split()
    assert "/" in points
    assert not any(".oldroot" in pt or "scratch" in pt for pt in points)
    assert not [pt for pt in points if pt.startswith(("/home", "/work"))]


# --- privileges ---------------------------------------------------------------------------

DOCKER_CAPS = "00000000a80425fb"


def _status(script_opts: list[str]) -> dict[str, str]:
    p = sandboxer("run", *script_opts, "--", "cat", "/proc/self/status")
    assert p.returncode == 0, p.stderr
    return dict(line.split(":\t", 1) for line in p.stdout.splitlines() if ":\t" in line)


def test_capabilities_no_new_privs_and_seccomp_by_default() -> None:
    st = _status([])
    for key in ("CapEff", "CapPrm", "CapBnd"):
        assert st[key].strip() == DOCKER_CAPS, key
    assert st["CapInh"].strip() == st["CapAmb"].strip() == "0000000000000000"
    assert st["NoNewPrivs"].strip() == "1"
    assert st["Seccomp"].strip() == "2"


def test_cap_add_and_drop() -> None:
    st = _status(["--cap-add", "NET_ADMIN", "--cap-drop", "chown"])
    caps = int(st["CapEff"], 16)
    assert caps & (1 << 12)          # CAP_NET_ADMIN
    assert not caps & (1 << 0)       # CAP_CHOWN
    assert int(st["CapBnd"], 16) == caps
    st = _status(["--cap-drop", "ALL"])
    assert int(st["CapBnd"], 16) == 0


def test_seccomp_unconfined_and_new_privileges_switches() -> None:
    st = _status(["--security-opt", "seccomp=unconfined", "--security-opt", "no-new-privileges=false"])
    assert st["Seccomp"].strip() == "0"
    assert st["NoNewPrivs"].strip() == "0"


def test_seccomp_refuses_dangerous_syscalls() -> None:
    script = r"""
import ctypes, errno, os
libc = ctypes.CDLL(None, use_errno=True)
def check(name, nr, *args):
    r = libc.syscall(nr, *args)
    print(name, errno.errorcode.get(ctypes.get_errno(), r) if r < 0 else "allowed")
check("keyctl", 250, 0, 0, 0, 0)
check("add_key", 248, 0, 0, 0, 0, 0)
check("bpf", 321, 0, 0, 0)
check("unshare_user", 272, 0x10000000)
check("mount", 165, b"none", b"/mnt", b"tmpfs", 0, 0)
check("reboot", 169, 0, 0, 0, 0)
check("kexec_load", 246, 0, 0, 0, 0)
"""
    p = sandboxer("run", "--", "python3", "-c", script)
    assert p.returncode == 0, p.stderr
    results = dict(line.split() for line in p.stdout.splitlines())
    assert results == {k: "EPERM" for k in
                       ("keyctl", "add_key", "bpf", "unshare_user", "mount", "reboot", "kexec_load")}


def test_custom_seccomp_profile(tmp_path: pytest.TempPathFactory) -> None:
    profile = os.path.join(str(tmp_path), "profile.json")
    with open(profile, "w") as f:
        f.write('{"defaultAction": "SCMP_ACT_ALLOW", "syscalls": '
                '[{"names": ["mkdir", "mkdirat"], "action": "SCMP_ACT_ERRNO", "errnoRet": 13}]}')
    p = sh("mkdir /tmp/d 2>&1 || true", "--security-opt", f"seccomp={profile}")
    assert "Permission denied" in p.stdout


# --- --init, signals, crashes --------------------------------------------------------------

def test_init_is_pid_1_and_reaps_zombies() -> None:
    p = sh("echo $$; (sleep 0.05 &); sleep 0.3; ps -eo stat= | grep -c '^Z' || true", "--init", check=True)
    pid, zombies = p.stdout.split()
    assert pid != "1"
    assert zombies == "0"


def _wait_for(predicate, timeout: float = 10.0) -> None:  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError("condition not met in time")
        time.sleep(0.02)


def _pids_with_arg(marker: str, *, exact_start: bool = False) -> list[int]:
    """PIDs whose command line contains ``marker`` (or starts with it: the
    forked set-up processes share the caller's command line until they exec)."""
    out = []
    needle = marker.encode()
    for pid in os.listdir("/proc"):
        if pid.isdigit():
            try:
                with open(f"/proc/{pid}/cmdline", "rb") as f:
                    cmdline = f.read()
            except OSError:
                continue
            if cmdline.startswith(needle) if exact_start else needle in cmdline:
                out.append(int(pid))
    return out


def test_init_forwards_signals() -> None:
    proc = subprocess.Popen([*SANDBOXER, "run", "--init", "--", "sleep", "1234.5"],
                            stderr=subprocess.PIPE, stdin=subprocess.DEVNULL)
    _wait_for(lambda: bool(_pids_with_arg("sleep\x001234.5", exact_start=True)))
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(timeout=10) == 128 + signal.SIGTERM


def test_sigkilled_caller_leaves_nothing_behind() -> None:
    before = set(state_entries())
    marker = "4321.5"
    proc = subprocess.Popen([*SANDBOXER, "run", "--", "sleep", marker], stdin=subprocess.DEVNULL)
    _wait_for(lambda: bool(_pids_with_arg(f"sleep\0{marker}", exact_start=True)))
    proc.kill()
    proc.wait()
    new = set(state_entries()) - before
    assert len(new) == 1
    sandbox_id = new.pop()
    _wait_for(lambda: not _pids_with_arg(marker))  # PDEATHSIG and the PID namespace
    _wait_for(lambda: not _pids_with_arg(sandbox_id))  # the fuse-overlayfs daemon too
    sandboxer("run", "--", "true", check=True)  # the next run collects the leftover state
    assert set(state_entries()) <= before


def test_runs_leave_no_state_behind() -> None:
    before = set(state_entries())
    for _ in range(3):
        sandboxer("run", "--", "true", check=True)
    assert set(state_entries()) <= before


def test_garbage_collection_never_takes_a_state_dir_being_created(tmp_path, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    """Another process's gc, running all along, must not remove a sandbox's state dir mid-creation."""
    import sys

    from sandboxer.state import StateDir

    root = tmp_path / "state"
    root.mkdir(mode=0o700)
    gc_loop = ("import sys, time\nfrom sandboxer.state import collect_garbage\n"
               "end = time.monotonic() + 30\n"
               "while time.monotonic() < end and not sys.stdin.closed:\n    collect_garbage(sys.argv[1])\n")
    gc = subprocess.Popen([sys.executable, "-c", gc_loop, str(root)], stdin=subprocess.PIPE)
    monkeypatch.setenv("SANDBOXER_STATE_DIR", str(root))
    try:
        for _ in range(300):
            state = StateDir.create(os.urandom(32).hex())
            assert os.path.isdir(os.path.join(state.path, "scratch"))
            state.release()
    finally:
        gc.kill()
        gc.wait()
    assert os.listdir(root) == []


def test_names_are_unique_while_running() -> None:
    name = f"n{os.getpid()}"
    proc = subprocess.Popen([*SANDBOXER, "run", "--name", name, "--", "sleep", "3333.5"], stdin=subprocess.DEVNULL)
    try:
        _wait_for(lambda: bool(_pids_with_arg("sleep\x003333.5", exact_start=True)))
        p = sandboxer("run", "--name", name, "--", "true")
        assert p.returncode == 125
        assert "in use" in p.stderr
    finally:
        proc.kill()
        proc.wait()
    assert sandboxer("run", "--name", name, "--", "true").returncode == 0


def test_version_is_the_installed_distributions() -> None:
    from importlib.metadata import version

    p = sandboxer("--version", check=True)
    assert p.stdout == f"sandboxer {version('sandboxer')}\n"
