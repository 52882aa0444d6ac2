"""``sandboxer doctor``: verdicts on made-up hosts, plus the real probe and CLI on this one."""

from __future__ import annotations

import dataclasses
import errno
import io
import json
import os
import pwd
import socket
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from conftest import sandboxer

from sandboxer.doctor import (
    ESSENTIAL,
    Check,
    HostFacts,
    cgroup_mounts,
    delegation_root,
    file_caps_permitted,
    healthy,
    kernel_version,
    main,
    read_id_ranges,
    render_json,
    render_text,
    run_checks,
    userns_blocker,
)
from sandboxer.errors import HostError

REPO = Path(__file__).resolve().parents[1]
STATUSES = {"works", "degraded", "missing"}
NAMES = ["user-namespaces", "subuid", "subgid", "newuidmap", "newgidmap", "overlay", "fuse-overlayfs",
         "storage", "network", "user-networks", "cgroup-v2", "cgroup-delegation", "systemd-user", "seccomp",
         "xdg-runtime-dir"]
SUBID_FIX = "sudo usermod --add-subuids 100000-165535 --add-subgids 100000-165535 $USER"

UID = 1000
USER_MANAGER = f"/user.slice/user-{UID}.slice/user@{UID}.service"

#: A well-set-up Debian 12 desktop: everything works.
GOOD = HostFacts(
    user="alice", uid=UID,
    unprivileged_userns_clone=1, max_user_namespaces=63704,
    apparmor_restrict_unprivileged_userns=None, apparmor_label=None, userns_errno=0,
    subuid_ranges=((100000, 65536),), subgid_ranges=((100000, 65536),),
    newuidmap_path="/usr/bin/newuidmap", newuidmap_setuid_root=True, newuidmap_file_caps=0,
    newgidmap_path="/usr/bin/newgidmap", newgidmap_setuid_root=True, newgidmap_file_caps=0,
    kernel_release="6.1.0-18-amd64", overlay_in_kernel=True,
    fuse_overlayfs_path="/usr/bin/fuse-overlayfs", dev_fuse_rw=True,
    slirp4netns_path="/usr/bin/slirp4netns", pasta_path=None, dev_net_tun_rw=True, nft_path="/usr/sbin/nft",
    cgroup2_mount="/sys/fs/cgroup", cgroup_v1=False,
    cgroup_path=f"{USER_MANAGER}/app.slice/app-term.scope", delegated_cgroup=USER_MANAGER,
    delegated_controllers=("cpuset", "cpu", "io", "memory", "pids"), delegated_cgroup_writable=True,
    dbus_session_bus_address=f"unix:path=/run/user/{UID}/bus",
    runtime_bus_socket=True, runtime_systemd_dir=True,
    seccomp_in_status=True, seccomp_filters_in_status=True,
    seccomp_actions_avail="kill_process kill_thread trap errno user_notif trace log allow",
    xdg_runtime_dir=f"/run/user/{UID}", xdg_runtime_dir_owner=UID, xdg_runtime_dir_mode=0o700,
)

#: This CI machine's reality: cgroup v1 controllers plus an empty cgroup2 at /sys/fs/cgroup/unified.
HYBRID: dict[str, Any] = dict(cgroup2_mount="/sys/fs/cgroup/unified", cgroup_v1=True, cgroup_path="/",
                              delegated_cgroup="/", delegated_controllers=("hugetlb",))


def verdicts(facts: HostFacts) -> dict[str, Check]:
    return {c.name: c for c in run_checks(facts)}


def test_a_good_host_works_everywhere() -> None:
    checks = run_checks(GOOD)
    assert [c.name for c in checks] == NAMES
    assert {c.name: c.status for c in checks} == dict.fromkeys(NAMES, "works")
    assert all(c.fix is None for c in checks)
    assert healthy(checks)
    assert userns_blocker(GOOD) is None


def case(id_: str, name: str, status: str, *fragments: str, **changes: Any) -> Any:
    """A verdict scenario: ``changes`` to GOOD make check ``name`` report ``status`` and ``fragments``."""
    return pytest.param(changes, name, status, fragments, id=id_)


SCENARIOS = [
    # user namespaces
    case("debian-sysctl-0", "user-namespaces", "missing",
         "kernel.unprivileged_userns_clone=0", "sudo sysctl -w kernel.unprivileged_userns_clone=1",
         unprivileged_userns_clone=0, userns_errno=errno.EPERM),
    case("debian-sysctl-0-not-probed", "user-namespaces", "missing", "kernel.unprivileged_userns_clone=0",
         unprivileged_userns_clone=0, userns_errno=None),
    case("debian-sysctl-0-as-root", "user-namespaces", "works", "unshare(CLONE_NEWUSER) works",
         unprivileged_userns_clone=0, uid=0, userns_errno=0),
    case("ubuntu-apparmor", "user-namespaces", "missing",
         "kernel.apparmor_restrict_unprivileged_userns=1", "AppArmor profile",
         "sudo sysctl -w kernel.apparmor_restrict_unprivileged_userns=0",
         apparmor_restrict_unprivileged_userns=1, apparmor_label="unconfined"),
    case("ubuntu-apparmor-as-root", "user-namespaces", "works",
         apparmor_restrict_unprivileged_userns=1, apparmor_label="unconfined", uid=0),
    case("ubuntu-apparmor-no-label", "user-namespaces", "missing", "AppArmor",
         apparmor_restrict_unprivileged_userns=1),
    case("ubuntu-apparmor-profile", "user-namespaces", "works",
         apparmor_restrict_unprivileged_userns=1, apparmor_label="sandboxer (enforce)"),
    case("ubuntu-apparmor-off", "user-namespaces", "works",
         apparmor_restrict_unprivileged_userns=0, apparmor_label="unconfined"),
    case("max-user-namespaces-0", "user-namespaces", "missing",
         "user.max_user_namespaces=0", "sudo sysctl -w user.max_user_namespaces=",
         max_user_namespaces=0, userns_errno=errno.ENOSPC),
    case("container-forbids-userns", "user-namespaces", "missing",
         "EPERM", "Operation not permitted", "container or seccomp policy", userns_errno=errno.EPERM),
    case("userns-not-probed", "user-namespaces", "works", "not probed", userns_errno=None),
    # subordinate ids
    case("no-subuid", "subuid", "degraded", "no range for alice in /etc/subuid", SUBID_FIX, subuid_ranges=()),
    case("no-subgid", "subgid", "degraded", "/etc/subgid", SUBID_FIX, subgid_ranges=()),
    case("small-subuid-range", "subuid", "degraded", "only 1000 ids", "100000-100999", SUBID_FIX,
         subuid_ranges=((100000, 1000),)),
    case("split-subuid-ranges", "subuid", "works", "65536 ids", "100000-132767, 200000-232767",
         subuid_ranges=((100000, 32768), (200000, 32768))),
    # id-map helpers: with subordinate ranges every run needs them ("newuidmap not found" is an error)
    case("no-uidmap-package", "newuidmap", "missing", "not found on PATH", "every run fails",
         "sudo apt-get install uidmap", newuidmap_path=None),
    case("newuidmap-without-setuid", "newuidmap", "missing",
         "neither setuid root nor has cap_setuid", "every run fails", "sudo chmod u+s /usr/bin/newuidmap",
         newuidmap_setuid_root=False),
    case("no-uidmap-without-subuid", "newuidmap", "degraded", "single-id map", "sudo apt-get install uidmap",
         newuidmap_path=None, subuid_ranges=()),
    case("no-uidmap-without-subgid", "newgidmap", "degraded", "single-id map",  # runs map one id then
         newgidmap_path=None, subgid_ranges=()),
    case("no-uidmap-as-root", "newuidmap", "degraded", newuidmap_path=None, uid=0),
    case("newuidmap-with-file-caps", "newuidmap", "works", "cap_setuid",
         newuidmap_setuid_root=False, newuidmap_file_caps=1 << 7),
    case("newgidmap-with-the-wrong-cap", "newgidmap", "missing",
         "cap_setgid", "sudo setcap cap_setgid+ep /usr/bin/newgidmap",
         newgidmap_setuid_root=False, newgidmap_file_caps=1 << 7),
    # storage
    case("old-kernel", "overlay", "missing", "5.10.0-28-amd64", "5.11", kernel_release="5.10.0-28-amd64"),
    case("kernel-5.11", "overlay", "works", "5.11.0-1-amd64", kernel_release="5.11.0-1-amd64"),
    case("no-overlay-module", "overlay", "missing", "sudo modprobe overlay", overlay_in_kernel=False),
    case("no-fuse-overlayfs", "fuse-overlayfs", "missing",
         "not found on PATH", "sudo apt-get install fuse-overlayfs", fuse_overlayfs_path=None),
    case("dev-fuse-0600", "fuse-overlayfs", "missing",
         "/dev/fuse", "sudo chmod 0666 /dev/fuse", "modprobe fuse", dev_fuse_rw=False),
    case("no-fuse-at-all", "fuse-overlayfs", "missing",
         "sudo apt-get install fuse-overlayfs\nsudo chmod 0666 /dev/fuse",
         fuse_overlayfs_path=None, dev_fuse_rw=False),
    # the kernel overlay never serves the host root: without fuse-overlayfs `run -- CMD` fails
    case("storage-dev-fuse-0600", "storage", "missing",
         "no driver for the host root", "/dev/fuse is not readable", "`run -- CMD` fails",
         "images still run on the kernel overlay", "`run --read-only` needs none", "sudo chmod 0666 /dev/fuse",
         dev_fuse_rw=False),
    case("storage-no-fuse-overlayfs", "storage", "missing", "`run -- CMD` fails", "kernel overlay",
         "sudo apt-get install fuse-overlayfs", fuse_overlayfs_path=None),
    case("storage-none", "storage", "missing", "`run -- CMD` fails", "images still run on the (slow) copy driver",
         "sudo apt-get install fuse-overlayfs", fuse_overlayfs_path=None, kernel_release="5.4.0-150-generic"),
    # network
    case("no-network-helper", "network", "degraded",
         "only --network none/host", "sudo apt-get install passt", slirp4netns_path=None),
    case("pasta-only", "network", "works", "pasta", slirp4netns_path=None, pasta_path="/usr/bin/pasta"),
    case("dev-net-tun-0600", "network", "degraded",
         "only --network none/host", "sudo chmod 0666 /dev/net/tun", dev_net_tun_rw=False),
    case("no-nft", "user-networks", "degraded", "reach each other, nothing else", "sudo apt-get install nftables",
         nft_path=None),
    case("no-slirp-for-networks", "user-networks", "degraded", "slirp4netns not found",
         "sudo apt-get install slirp4netns", slirp4netns_path=None),
    # cgroups
    case("hybrid-cgroups", "cgroup-v2", "missing",
         "hybrid", "/sys/fs/cgroup/unified", "systemd.unified_cgroup_hierarchy=1", **HYBRID),
    case("hybrid-cgroups-delegation", "cgroup-delegation", "missing", "cgroup v2", "cgroup-v2", **HYBRID),
    case("cgroup-v1-only", "cgroup-v2", "missing", "v1 only", "systemd.unified_cgroup_hierarchy=1",
         cgroup2_mount=None, cgroup_v1=True, cgroup_path=None, delegated_cgroup=None,
         delegated_controllers=None),
    case("no-cgroups", "cgroup-v2", "missing", "no cgroup", cgroup2_mount=None, cgroup_v1=False),
    case("v2-partial-delegation", "cgroup-delegation", "degraded",
         "cpu not delegated", USER_MANAGER, "/etc/systemd/system/user@.service.d/delegate.conf",
         "[Service]\n  Delegate=cpu cpuset io memory pids", "systemctl daemon-reload",
         delegated_controllers=("memory", "pids")),
    case("v2-no-delegation", "cgroup-delegation", "missing",
         "cpu memory pids not delegated", "Delegate=cpu cpuset io memory pids", delegated_controllers=()),
    case("v2-not-writable", "cgroup-delegation", "missing",
         "not delegated to you", "loginctl enable-linger $USER", delegated_cgroup_writable=False),
    case("v2-unreadable-controllers", "cgroup-delegation", "missing",
         "cannot read cgroup.controllers", "delegate.conf", delegated_controllers=None),
    # systemd user manager
    case("no-user-manager", "systemd-user", "missing",
         "no session bus", "loginctl enable-linger $USER", "log in again",
         dbus_session_bus_address=None, runtime_bus_socket=False, runtime_systemd_dir=False),
    case("bus-socket-only", "systemd-user", "works", dbus_session_bus_address=None),
    case("bus-without-systemd-dir", "systemd-user", "missing",
         "$XDG_RUNTIME_DIR/systemd", "loginctl enable-linger $USER", runtime_systemd_dir=False),
    # seccomp
    case("no-seccomp", "seccomp", "missing", "CONFIG_SECCOMP_FILTER=y",
         seccomp_in_status=False, seccomp_filters_in_status=False, seccomp_actions_avail=None),
    case("seccomp-strict-only", "seccomp", "missing", "filter mode",
         seccomp_filters_in_status=False, seccomp_actions_avail=None),
    case("seccomp-actions-avail-only", "seccomp", "works", seccomp_filters_in_status=False),
    # XDG_RUNTIME_DIR
    case("xdg-unset", "xdg-runtime-dir", "degraded",
         "XDG_RUNTIME_DIR is not set", "private directory under /tmp", "pam_systemd",
         xdg_runtime_dir=None, xdg_runtime_dir_owner=None, xdg_runtime_dir_mode=None),
    case("xdg-does-not-exist", "xdg-runtime-dir", "degraded", "does not exist", "/tmp",
         xdg_runtime_dir_owner=None, xdg_runtime_dir_mode=None),
    case("xdg-wrong-owner", "xdg-runtime-dir", "degraded",
         "owned by uid 0", "unset XDG_RUNTIME_DIR, or set it to /run/user/$UID", xdg_runtime_dir_owner=0),
    case("xdg-tmp", "xdg-runtime-dir", "degraded", "/tmp is a shared directory (mode 1777)",
         "unset XDG_RUNTIME_DIR", xdg_runtime_dir="/tmp", xdg_runtime_dir_owner=0, xdg_runtime_dir_mode=0o1777),
    case("xdg-own-but-shared", "xdg-runtime-dir", "degraded", "shared directory (mode 0775)",
         "unset XDG_RUNTIME_DIR", xdg_runtime_dir_mode=0o775),
    case("xdg-wrong-mode", "xdg-runtime-dir", "degraded", "mode 0755", f"chmod 0700 /run/user/{UID}",
         xdg_runtime_dir_mode=0o755),
]


@pytest.mark.parametrize(("changes", "name", "status", "fragments"), SCENARIOS)
def test_verdict(changes: dict[str, Any], name: str, status: str, fragments: tuple[str, ...]) -> None:
    check = verdicts(dataclasses.replace(GOOD, **changes))[name]
    assert check.status == status
    text = f"{check.detail}\n{check.fix or ''}"
    for fragment in fragments:
        assert fragment in text
    assert (check.fix is None) == (status == "works")


@pytest.mark.parametrize(("owner", "mode"), [(0, 0o1777), (UID, 0o1777), (0, 0o700), (UID + 1, 0o700)],
                         ids=["tmp", "own-but-sticky", "root's", "another-user's"])
def test_no_fix_takes_over_a_runtime_dir_that_is_not_only_yours(owner: int, mode: int) -> None:
    """XDG_RUNTIME_DIR=/tmp once got "sudo chown $USER /tmp": never chown or chmod such a directory."""
    facts = dataclasses.replace(GOOD, xdg_runtime_dir="/tmp", xdg_runtime_dir_owner=owner, xdg_runtime_dir_mode=mode)
    fix = verdicts(facts)["xdg-runtime-dir"].fix
    assert fix == "unset XDG_RUNTIME_DIR, or set it to /run/user/$UID (your own, mode 0700)"


def test_userns_blocker_names_the_sysctl_and_its_fix() -> None:
    err = userns_blocker(dataclasses.replace(GOOD, unprivileged_userns_clone=0, userns_errno=errno.EPERM))
    assert isinstance(err, HostError)
    assert str(err) == "user namespaces are disabled: kernel.unprivileged_userns_clone=0"
    assert err.hint == "sudo sysctl -w kernel.unprivileged_userns_clone=1"


def test_userns_blocker_matches_the_user_namespaces_check() -> None:
    facts = dataclasses.replace(GOOD, max_user_namespaces=0, userns_errno=errno.ENOSPC)
    err, check = userns_blocker(facts), verdicts(facts)["user-namespaces"]
    assert err is not None
    assert (check.detail, check.fix) == (err.message, err.hint)
    assert err.message == "user namespaces are disabled: user.max_user_namespaces=0"


@pytest.mark.parametrize(("changes", "ok"), [
    ({}, True),
    (HYBRID, True),  # no limits, but sandboxes run
    (dict(subuid_ranges=(), newuidmap_path=None, slirp4netns_path=None), True),
    (dict(unprivileged_userns_clone=0, userns_errno=errno.EPERM), False),
    (dict(fuse_overlayfs_path=None, overlay_in_kernel=False), False),
    (dict(fuse_overlayfs_path=None), False),  # images would run; `run -- CMD` would not
    (dict(dev_fuse_rw=False), False),
    (dict(newuidmap_path=None), False),
    (dict(newgidmap_setuid_root=False), False),
    (dict(seccomp_in_status=False), False),
], ids=["good", "hybrid-cgroups", "degraded-only", "no-userns", "no-storage", "no-fuse-overlayfs",
        "dev-fuse-0600", "no-newuidmap", "newgidmap-not-setuid", "no-seccomp"])
def test_healthy_only_fails_on_essential_checks(changes: dict[str, Any], ok: bool) -> None:
    assert healthy(run_checks(dataclasses.replace(GOOD, **changes))) is ok


# --- reading helpers ---------------------------------------------------------

def test_read_id_ranges_matches_name_or_uid(tmp_path: Path) -> None:
    path = tmp_path / "subuid"
    path.write_text("# comment\n\nalice:100000:65536\nbob:165536:65536\n1000:300000:10\n"
                    "alice:bad:1\nalice:400000\nalice:500000:0\n")
    assert read_id_ranges(path, "alice", 1000) == [(100000, 65536), (300000, 10)]
    assert read_id_ranges(str(path), "bob", 1001) == [(165536, 65536)]
    assert read_id_ranges(path, "carol", 1002) == []
    assert read_id_ranges(tmp_path / "absent", "alice", 1000) == []


def _vfs_cap(revision: int, permitted: int, rootid: int | None = None) -> bytes:
    words = [revision << 24 | 1, permitted & 0xFFFFFFFF, 0]
    if revision >= 2:
        words += [permitted >> 32, 0]
    if rootid is not None:
        words.append(rootid)
    return b"".join(w.to_bytes(4, "little") for w in words)


@pytest.mark.parametrize(("raw", "permitted"), [
    (_vfs_cap(2, 1 << 7), 1 << 7),  # setcap cap_setuid+ep
    (_vfs_cap(3, 1 << 6, rootid=0), 1 << 6),
    (_vfs_cap(2, 1 << 40), 1 << 40),  # high word
    (_vfs_cap(1, 1 << 7), 1 << 7),
    (b"", 0),
    (b"\x01\x00", 0),
])
def test_file_caps_permitted(raw: bytes, permitted: int) -> None:
    assert file_caps_permitted(raw) == permitted


CI_MOUNTINFO = """\
24 1 259:1 / / rw,relatime - ext4 /dev/vda rw
31 23 0:28 / /sys/fs/cgroup rw,relatime - tmpfs tmpfs rw,mode=755
32 31 0:29 / /sys/fs/cgroup/cpu rw,relatime - cgroup cgroup rw,cpu
35 31 0:32 / /sys/fs/cgroup/memory rw,relatime - cgroup cgroup rw,memory
40 31 0:37 / /sys/fs/cgroup/systemd rw,relatime - cgroup cgroup rw,name=systemd
41 31 0:38 / /sys/fs/cgroup/unified rw,relatime - cgroup2 cgroup2 rw
"""
V2_MOUNTINFO = """\
24 1 259:1 / / rw,relatime shared:1 - ext4 /dev/vda rw
35 24 0:30 / /sys/fs/cgroup rw,nosuid,nodev,noexec,relatime shared:9 - cgroup2 cgroup2 rw,nsdelegate
"""


@pytest.mark.parametrize(("mountinfo", "expected"), [
    (CI_MOUNTINFO, ("/sys/fs/cgroup/unified", True)),
    (V2_MOUNTINFO, ("/sys/fs/cgroup", False)),
    ("\n".join(CI_MOUNTINFO.splitlines()[:5]), (None, True)),
    ("", (None, False)),
    ("garbage\n1 2 3 - \n", (None, False)),
], ids=["hybrid", "unified", "v1", "empty", "garbage"])
def test_cgroup_mounts(mountinfo: str, expected: tuple[str | None, bool]) -> None:
    assert cgroup_mounts(mountinfo) == expected


@pytest.mark.parametrize(("cgroup", "expected"), [
    (f"{USER_MANAGER}/app.slice/app-term.scope", USER_MANAGER),
    (USER_MANAGER, USER_MANAGER),
    ("/user.slice/user-1001.slice/user@1001.service/app.slice",) * 2,  # another user's manager
    ("/system.slice/ci.service", "/system.slice/ci.service"),
    ("/", "/"),
])
def test_delegation_root_walks_up_to_the_user_manager(cgroup: str, expected: str) -> None:
    assert delegation_root(cgroup, UID) == expected


@pytest.mark.parametrize(("release", "version"), [
    ("6.18.44-fc-v657", (6, 18)), ("5.10.0-28-amd64", (5, 10)), ("5.11-rc1", (5, 11)), ("6.8", (6, 8)),
    ("", None), ("weird", None), ("6.", None),
])
def test_kernel_version(release: str, version: tuple[int, int] | None) -> None:
    assert kernel_version(release) == version


# --- probing -----------------------------------------------------------------

def _write(root: Path, path: str, text: str = "", mode: int | None = None) -> Path:
    file = root / path.lstrip("/")
    file.parent.mkdir(parents=True, exist_ok=True)
    file.write_text(text)
    if mode is not None:
        file.chmod(mode)
    return file


def test_probe_reads_a_fake_tree(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    uid = os.getuid()
    user = pwd.getpwuid(uid).pw_name
    manager = f"/user.slice/user-{uid}.slice/user@{uid}.service"
    _write(tmp_path, "/proc/sys/kernel/unprivileged_userns_clone", "0\n")
    _write(tmp_path, "/proc/sys/user/max_user_namespaces", "15000\n")
    _write(tmp_path, "/proc/sys/kernel/osrelease", "6.1.0-18-amd64\n")
    _write(tmp_path, "/proc/sys/kernel/seccomp/actions_avail", "kill_process errno allow\n")
    _write(tmp_path, "/proc/filesystems", "nodev\tsysfs\nnodev\toverlay\n\text4\n")
    _write(tmp_path, "/proc/self/status", "Name:\tpython3\nSeccomp:\t0\nSeccomp_filters:\t0\n")
    _write(tmp_path, "/proc/self/mountinfo", V2_MOUNTINFO)
    _write(tmp_path, "/proc/self/cgroup", f"0::{manager}/app.slice/term.scope\n")
    _write(tmp_path, f"/sys/fs/cgroup{manager}/cgroup.controllers", "memory pids\n")
    _write(tmp_path, "/etc/subuid", f"{user}:100000:65536\n")
    _write(tmp_path, "/etc/subgid", f"{uid}:200000:1000\n")
    _write(tmp_path, "/usr/bin/newuidmap", "#!/bin/sh\n", 0o4755)
    _write(tmp_path, "/usr/bin/fuse-overlayfs", "#!/bin/sh\n", 0o755)
    _write(tmp_path, "/dev/fuse", "", 0o666)
    runtime = tmp_path / f"run/user/{uid}"
    (runtime / "systemd").mkdir(parents=True)
    runtime.chmod(0o700)
    with socket.socket(socket.AF_UNIX) as bus:
        bus.bind(str(runtime / "bus"))
    monkeypatch.setenv("PATH", "/usr/bin:/bin")
    monkeypatch.setenv("XDG_RUNTIME_DIR", f"/run/user/{uid}")
    monkeypatch.delenv("DBUS_SESSION_BUS_ADDRESS", raising=False)

    facts = HostFacts.probe(root=str(tmp_path))

    assert (facts.user, facts.uid) == (user, uid)
    assert facts.unprivileged_userns_clone == 0
    assert facts.max_user_namespaces == 15000
    assert facts.apparmor_restrict_unprivileged_userns is None
    assert facts.userns_errno is None  # a fake tree has no kernel to ask
    assert facts.subuid_ranges == ((100000, 65536),)
    assert facts.subgid_ranges == ((200000, 1000),)
    assert facts.newuidmap_path == str(tmp_path / "usr/bin/newuidmap")
    assert facts.newuidmap_setuid_root is (uid == 0)  # setuid *root* only when root made the file
    assert facts.newuidmap_file_caps == 0
    assert facts.newgidmap_path is None
    assert facts.kernel_release == "6.1.0-18-amd64"
    assert facts.overlay_in_kernel
    assert facts.fuse_overlayfs_path == str(tmp_path / "usr/bin/fuse-overlayfs")
    assert facts.dev_fuse_rw
    assert facts.slirp4netns_path is None and facts.pasta_path is None
    assert not facts.dev_net_tun_rw
    assert (facts.cgroup2_mount, facts.cgroup_v1) == ("/sys/fs/cgroup", False)
    assert facts.cgroup_path == f"{manager}/app.slice/term.scope"
    assert facts.delegated_cgroup == manager
    assert facts.delegated_controllers == ("memory", "pids")
    assert facts.delegated_cgroup_writable
    assert facts.dbus_session_bus_address is None
    assert facts.runtime_bus_socket and facts.runtime_systemd_dir
    assert facts.seccomp_in_status and facts.seccomp_filters_in_status
    assert facts.seccomp_actions_avail == "kill_process errno allow"
    assert (facts.xdg_runtime_dir, facts.xdg_runtime_dir_owner) == (f"/run/user/{uid}", uid)
    assert facts.xdg_runtime_dir_mode == 0o700

    got = {c.name: c.status for c in run_checks(facts)}
    assert got["user-namespaces"] == "missing"  # the sysctl, since nothing probed it
    assert got["subgid"] == "degraded"
    assert got["newgidmap"] == "missing"
    assert got["storage"] == "works"
    assert got["network"] == "degraded"
    assert got["cgroup-delegation"] == "degraded"
    assert got["systemd-user"] == got["seccomp"] == got["xdg-runtime-dir"] == "works"


def test_probe_an_empty_tree_reads_nothing(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("XDG_RUNTIME_DIR", raising=False)
    facts = HostFacts.probe(root=str(tmp_path))
    assert facts.subuid_ranges == () and facts.cgroup2_mount is None and facts.kernel_release == ""
    assert facts.xdg_runtime_dir is None and facts.seccomp_actions_avail is None
    assert {c.status for c in run_checks(facts)} <= STATUSES


def test_probe_on_this_machine() -> None:
    facts = HostFacts.probe()
    assert isinstance(facts.userns_errno, int)  # the unshare probe ran
    checks = run_checks(facts)
    assert [c.name for c in checks] == NAMES
    for check in checks:
        assert check.status in STATUSES, check
        assert check.detail


# --- output and the command --------------------------------------------------

BROKEN = dataclasses.replace(GOOD, **HYBRID, subuid_ranges=(), slirp4netns_path=None)  # degraded, runs work


def test_render_text_aligns_statuses_and_indents_fixes() -> None:
    checks = run_checks(BROKEN)
    lines = render_text(checks, color=False).splitlines()
    rows = [line for line in lines if not line.startswith(" ")]
    assert [row.split()[0] for row in rows] == NAMES
    width = max(map(len, NAMES)) + 2
    assert {row[width:].split()[0] for row in rows} <= STATUSES
    assert {row[width:width + 10][-2:] for row in rows} == {"  "}  # detail column lines up
    fix_lines = [line for line in lines if line.startswith(" ")]
    assert fix_lines[0] == " " * (width + 10) + "fix: " + SUBID_FIX
    cgroup_fix = next(i for i, line in enumerate(lines) if "unified cgroup v2 hierarchy:" in line)
    assert lines[cgroup_fix + 1].startswith(" " * (width + 15) + "add systemd.unified_cgroup_hierarchy=1")
    assert "\033[" not in "\n".join(lines)


def test_render_text_colours_the_status() -> None:
    text = render_text([Check("a", "works", "ok"), Check("b", "missing", "no", "do it")], color=True)
    assert "\033[32mworks\033[0m" in text and "\033[31mmissing\033[0m" in text
    first, second = text.splitlines()[:2]
    assert first.index("ok") == second.index("no")  # the colour codes don't skew the columns


class _Tty(io.StringIO):
    def isatty(self) -> bool:
        return True


@pytest.mark.parametrize(("tty", "no_color", "coloured"), [
    (True, None, True), (True, "1", False), (True, "", True), (False, None, False),
])
def test_render_text_colours_only_a_terminal_without_no_color(
        monkeypatch: pytest.MonkeyPatch, tty: bool, no_color: str | None, coloured: bool) -> None:
    monkeypatch.setattr(sys, "stdout", _Tty() if tty else io.StringIO())
    if no_color is None:
        monkeypatch.delenv("NO_COLOR", raising=False)
    else:
        monkeypatch.setenv("NO_COLOR", no_color)
    assert ("\033[" in render_text(run_checks(GOOD))) is coloured


def test_render_json() -> None:
    doc = json.loads(render_json(run_checks(BROKEN)))
    assert doc["ok"] is True
    by_name = {c["name"]: c for c in doc["checks"]}
    assert list(by_name) == NAMES
    assert by_name["cgroup-v2"]["status"] == "missing"
    assert "systemd.unified_cgroup_hierarchy=1" in by_name["cgroup-v2"]["fix"]
    assert by_name["overlay"]["fix"] is None
    assert {name for name, c in by_name.items() if c["essential"]} == ESSENTIAL


@pytest.mark.parametrize(("facts", "code"), [(GOOD, 0), (BROKEN, 0),
                                             (dataclasses.replace(GOOD, seccomp_in_status=False), 1),
                                             (dataclasses.replace(GOOD, dev_fuse_rw=False), 1),
                                             (dataclasses.replace(GOOD, newuidmap_path=None), 1)])
def test_main_exit_status(monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str],
                          facts: HostFacts, code: int) -> None:
    monkeypatch.setattr(HostFacts, "probe", classmethod(lambda cls, root="/": facts))
    assert main([]) == code
    assert capsys.readouterr().out.splitlines()[0].startswith("user-namespaces")


def test_doctor_refuses_stray_arguments(capsys: pytest.CaptureFixture[str]) -> None:
    from sandboxer.cli import main as cli_main

    assert cli_main(["doctor", "extra"]) == 125
    assert "takes no arguments" in capsys.readouterr().err


def test_main_json_on_this_machine(capsys: pytest.CaptureFixture[str]) -> None:
    code = main(["--json"])
    doc = json.loads(capsys.readouterr().out)
    assert [c["name"] for c in doc["checks"]] == NAMES
    assert {c["status"] for c in doc["checks"]} <= STATUSES
    assert code == (0 if doc["ok"] else 1)


# --- the runtime names the user-namespace blocker ------------------------------

def test_no_storage_driver_blames_blocked_user_namespaces_first(monkeypatch: pytest.MonkeyPatch) -> None:
    from sandboxer import doctor, plugins, storage

    class NoFuse(storage.Snapshotter):
        name, priority = "fuse-overlayfs", 0

        def unusable_reason(self, kind: str, requested: bool = False) -> str | None:
            return "/dev/fuse is not accessible"

    monkeypatch.setattr(plugins, "call", lambda hook: [[NoFuse()]])
    monkeypatch.setattr(doctor, "probe_userns_blocker", lambda: None)
    with pytest.raises(HostError, match=r"^no usable storage driver"):
        storage.choose(storage.RootfsKind.HOST)
    blocker = HostError("cannot create a user namespace: ...", hint="run sandboxer on the host")
    monkeypatch.setattr(doctor, "probe_userns_blocker", lambda: blocker)
    with pytest.raises(HostError) as info:
        storage.choose(storage.RootfsKind.HOST)
    assert info.value is blocker


@pytest.mark.parametrize("opts", [[], ["--read-only"]], ids=["host-root", "read-only"])
def test_a_run_inside_a_sandbox_names_the_user_namespace_blocker(opts: list[str]) -> None:
    """There user namespaces are forbidden (seccomp) and /dev/fuse is absent: the error names the former."""
    inner = [sys.executable, "-m", "sandboxer", "run", *opts, "--", "true"]
    outer = sandboxer("run", "-v", f"{sys.prefix}:{sys.prefix}:ro", "-e", f"PYTHONPATH={REPO}", "--",
                      "sh", "-c", 'echo started >&2; exec "$@"', "sh", *inner)
    if not outer.stderr.startswith("started"):
        pytest.skip(f"no sandbox on this host: {outer.stderr.strip()}")
    assert outer.returncode == 125, outer.stderr
    assert outer.stderr.splitlines()[1:] == [
        "sandboxer: error: cannot create a user namespace: unshare(CLONE_NEWUSER) failed with EPERM "
        "(Operation not permitted)",
        "hint: a container or seccomp policy forbids user namespaces: run sandboxer on the host, "
        "or allow unshare(CLONE_NEWUSER) in that policy"]


def test_import_is_cheap() -> None:
    """The runtime imports probe_userns_blocker to explain a failed start: no subprocess, rich, json, ctypes."""
    code = ("import sys, sandboxer.errors; before = set(sys.modules); import sandboxer.doctor; "
            "print(' '.join(sorted(set(sys.modules) - before)))")
    new = subprocess.run([sys.executable, "-c", code], cwd=REPO, check=True, capture_output=True,
                         text=True).stdout.split()
    assert "sandboxer.doctor" in new
    assert not {"subprocess", "rich", "json", "argparse", "shutil", "ctypes", "sandboxer.syscalls"} & set(new)
