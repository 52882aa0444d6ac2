"""sandboxer.oci: config.json load/validate/dump and the `sandboxer spec` template."""

from __future__ import annotations

import copy
import io
import json
import os
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from sandboxer.errors import ConfigError, HostError, SandboxerError, UsageError
from sandboxer.oci import (
    CAPABILITIES,
    DEFAULT_CAPS,
    MASKED_PATHS,
    READONLY_PATHS,
    RLIMITS,
    Capabilities,
    Hook,
    Hooks,
    IDMapping,
    Linux,
    Mount,
    Namespace,
    Process,
    Root,
    Spec,
    User,
    dump,
    dumps,
    load,
    loads,
    require_runnable,
    spec_template,
    to_json,
    validate,
    write_template,
)

# A rootless config as runc and its callers write it (Go's omitempty rules:
# no false booleans, no empty lists), with a few spec extensions thrown in.
RUNC_STYLE = """
{
  "ociVersion": "1.0.2-dev",
  "process": {
    "terminal": true,
    "consoleSize": {"height": 25, "width": 80},
    "user": {"uid": 0, "gid": 0, "additionalGids": [10]},
    "args": ["sh", "-c", "echo hi"],
    "env": ["PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin", "TERM=xterm"],
    "cwd": "/",
    "capabilities": {
      "bounding": ["CAP_AUDIT_WRITE", "CAP_KILL", "CAP_NET_BIND_SERVICE"],
      "effective": ["CAP_AUDIT_WRITE", "CAP_KILL", "CAP_NET_BIND_SERVICE"],
      "permitted": ["CAP_AUDIT_WRITE", "CAP_KILL", "CAP_NET_BIND_SERVICE"]
    },
    "rlimits": [{"type": "RLIMIT_NOFILE", "hard": 1024, "soft": 1024}],
    "noNewPrivileges": true,
    "oomScoreAdj": 0,
    "execCPUAffinity": {"initial": "0", "final": "0-3"}
  },
  "root": {"path": "rootfs", "readonly": true},
  "hostname": "runc",
  "mounts": [
    {"destination": "/proc", "type": "proc", "source": "proc"},
    {"destination": "/dev", "type": "tmpfs", "source": "tmpfs",
     "options": ["nosuid", "strictatime", "mode=755", "size=65536k"]},
    {"destination": "/dev/pts", "type": "devpts", "source": "devpts",
     "options": ["nosuid", "noexec", "newinstance", "ptmxmode=0666", "mode=0620"]},
    {"destination": "/dev/shm", "type": "tmpfs", "source": "shm",
     "options": ["nosuid", "noexec", "nodev", "mode=1777", "size=65536k"]},
    {"destination": "/dev/mqueue", "type": "mqueue", "source": "mqueue",
     "options": ["nosuid", "noexec", "nodev"]},
    {"destination": "/sys", "type": "none", "source": "/sys",
     "options": ["rbind", "nosuid", "noexec", "nodev", "ro"]},
    {"destination": "/data", "type": "none", "source": "/srv/data",
     "options": ["rbind", "idmap"],
     "uidMappings": [{"containerID": 0, "hostID": 100000, "size": 65536}],
     "gidMappings": [{"containerID": 0, "hostID": 100000, "size": 65536}]}
  ],
  "hooks": {
    "prestart": [{"path": "/usr/bin/fix-mounts", "args": ["fix-mounts", "a"], "env": ["K=v"]}],
    "createRuntime": [{"path": "/usr/bin/setup-network", "args": ["setup-network"]}],
    "poststop": [{"path": "/usr/sbin/cleanup.sh", "timeout": 5}]
  },
  "annotations": {"org.example.owner": "ci"},
  "linux": {
    "uidMappings": [{"containerID": 0, "hostID": 1000, "size": 1}],
    "gidMappings": [{"containerID": 0, "hostID": 1000, "size": 1}],
    "sysctl": {"net.ipv4.ip_forward": "1"},
    "resources": {"pids": {"limit": 512}, "memory": {"limit": 536870912}},
    "cgroupsPath": "/sandboxer/test",
    "namespaces": [
      {"type": "pid"}, {"type": "ipc"}, {"type": "uts"}, {"type": "mount"},
      {"type": "cgroup"}, {"type": "network", "path": "/run/netns/ci"}, {"type": "user"}
    ],
    "devices": [{"path": "/dev/fuse", "type": "c", "major": 10, "minor": 229, "fileMode": 438}],
    "seccomp": {
      "defaultAction": "SCMP_ACT_ERRNO",
      "architectures": ["SCMP_ARCH_X86_64"],
      "syscalls": [
        {"names": ["read", "write"], "action": "SCMP_ACT_ALLOW"},
        {"names": ["personality"], "action": "SCMP_ACT_ALLOW",
         "args": [{"index": 0, "value": 0, "op": "SCMP_CMP_EQ"}]}
      ]
    },
    "rootfsPropagation": "rprivate",
    "maskedPaths": ["/proc/kcore", "/sys/firmware"],
    "readonlyPaths": ["/proc/sys", "/proc/sysrq-trigger"],
    "intelRdt": {"closID": "guaranteed_group"}
  },
  "org.example.extension": {"any": ["thing"]}
}
"""


def doc() -> Any:
    return json.loads(RUNC_STYLE)


DELETE = object()


def edit(data: Any, path: str | tuple[Any, ...], value: Any) -> Any:
    """Set (or, with DELETE, remove) the value at a JSON path like ``a.b[2].c``."""
    keys = path if isinstance(path, tuple) else tuple(
        int(k) if k.isdigit() else k for k in re.findall(r"[^.\[\]]+", path))
    node: Any = data
    for k in keys[:-1]:
        node = node[k]
    if value is DELETE:
        del node[keys[-1]]
    else:
        node[keys[-1]] = value
    return data


# --- loading a realistic config ------------------------------------------


def test_runc_style_config_loads() -> None:
    spec = loads(RUNC_STYLE)
    assert spec.oci_version == "1.0.2-dev"
    assert spec.process is not None and spec.linux is not None and spec.root is not None
    assert spec.process.args == ["sh", "-c", "echo hi"]
    assert spec.process.user == User(uid=0, gid=0, additional_gids=[10])
    assert spec.process.capabilities == Capabilities(
        bounding=["CAP_AUDIT_WRITE", "CAP_KILL", "CAP_NET_BIND_SERVICE"],
        effective=["CAP_AUDIT_WRITE", "CAP_KILL", "CAP_NET_BIND_SERVICE"],
        permitted=["CAP_AUDIT_WRITE", "CAP_KILL", "CAP_NET_BIND_SERVICE"])
    assert spec.process.oom_score_adj == 0
    assert spec.root == Root("rootfs", readonly=True)
    assert spec.mounts[0] == Mount("/proc", "proc", "proc")
    assert spec.mounts[6].uid_mappings == [IDMapping(0, 100000, 65536)]
    assert spec.hooks is not None and spec.hooks.poststop == [Hook("/usr/sbin/cleanup.sh", timeout=5)]
    assert spec.linux.namespace("network") == Namespace("network", "/run/netns/ci")
    assert spec.linux.namespace("time") is None
    assert spec.linux.uid_mappings == [IDMapping(container_id=0, host_id=1000, size=1)]
    assert spec.linux.sysctl == {"net.ipv4.ip_forward": "1"}
    assert spec.linux.resources == {"pids": {"limit": 512}, "memory": {"limit": 536870912}}
    assert spec.linux.seccomp is not None and spec.linux.seccomp["defaultAction"] == "SCMP_ACT_ERRNO"
    assert spec.linux.rootfs_propagation == "rprivate"
    require_runnable(spec)


def test_unknown_keys_are_kept_and_written_back() -> None:
    spec = loads(RUNC_STYLE)
    assert spec.extra == {"org.example.extension": {"any": ["thing"]}}
    assert spec.process is not None and spec.linux is not None
    assert spec.process.extra == {"execCPUAffinity": {"initial": "0", "final": "0-3"}}
    assert spec.linux.extra == {"intelRdt": {"closID": "guaranteed_group"}}
    assert spec.linux.devices[0]["fileMode"] == 438


# --- round trips ---------------------------------------------------------


def test_dump_of_load_gives_back_the_same_json() -> None:
    assert json.loads(dumps(loads(RUNC_STYLE))) == doc()


@pytest.mark.parametrize("rootless", [False, True])
def test_template_round_trips(rootless: bool) -> None:
    spec = spec_template(rootless)
    text = dumps(spec)
    assert loads(text) == spec
    assert dumps(loads(text)) == text


def test_load_of_dump_gives_back_the_same_spec() -> None:
    spec = Spec(
        process=Process(args=["true"], oom_score_adj=0, user=User(uid=5, umask=0o22),
                        no_new_privileges=True, extra={"vendorKey": [1, 2]}),
        root=Root("/abs/rootfs"),
        hostname="",  # set but empty: distinct from unset, and must stay so
        hooks=Hooks(create_runtime=[Hook("/bin/hook", args=["hook"], timeout=1)]),
        linux=Linux(namespaces=[Namespace("uts"), Namespace("time")], time_offsets={
            "monotonic": {"secs": 10}}, seccomp={"defaultAction": "SCMP_ACT_ALLOW"}),
    )
    assert loads(dumps(spec)) == spec


def test_dump_leaves_out_defaults_but_keeps_required_fields() -> None:
    data = to_json(Spec(process=Process(args=["sh"]), root=Root("rootfs")))
    assert data == {
        "ociVersion": "1.2.0",
        "process": {"user": {"uid": 0, "gid": 0}, "args": ["sh"], "cwd": "/"},
        "root": {"path": "rootfs"},
    }


def test_load_accepts_paths_bundles_files_text_and_dicts(tmp_path: Path) -> None:
    expected = loads(RUNC_STYLE)
    config = tmp_path / "config.json"
    config.write_text(RUNC_STYLE)
    assert load(config) == expected
    assert load(str(config)) == expected
    assert load(tmp_path) == expected  # a bundle directory
    with open(config) as f:
        assert load(f) == expected
    assert load(io.BytesIO(RUNC_STYLE.encode())) == expected
    assert load(RUNC_STYLE) == expected
    assert load(RUNC_STYLE.encode()) == expected
    assert load(doc()) == expected


def test_dump_writes_atomically_and_loads_back(tmp_path: Path) -> None:
    spec = spec_template(rootless=True)
    assert dump(spec, tmp_path) == str(tmp_path / "config.json")
    assert load(tmp_path) == spec
    dump(spec_template(rootless=False), tmp_path / "config.json")  # replaces
    assert load(tmp_path) == spec_template(rootless=False)
    assert sorted(os.listdir(tmp_path)) == ["config.json"]  # no temporary left behind


def test_dump_into_a_missing_directory_is_a_host_error(tmp_path: Path) -> None:
    with pytest.raises(HostError, match="cannot write"):
        dump(spec_template(rootless=True), tmp_path / "nope" / "config.json")


# --- errors, each with the JSON path of the problem ----------------------

ERRORS: list[tuple[str | tuple[Any, ...], Any, str]] = [
    ("linux.namespaces[2].type", "foo", 'linux.namespaces[2].type: unknown namespace "foo"'),
    ("linux.namespaces[1].type", "pid", 'linux.namespaces[1].type: duplicate namespace "pid"'),
    ("linux.namespaces[0].type", DELETE, "linux.namespaces[0].type: is required"),
    ("linux.namespaces[5].path", "run/netns/ci", "linux.namespaces[5].path: must be an absolute path"),
    ("ociVersion", "2.0.0", 'ociVersion: unsupported version "2.0.0" (supported 1.0.0\u20131.3.x)'),
    ("ociVersion", DELETE, "ociVersion: is required"),
    ("ociVersion", 1, "ociVersion: must be a string"),
    ("process", "sh", "process: must be an object"),
    ("process.args", "sh", "process.args: must be a list of strings"),
    ("process.args[1]", 7, "process.args[1]: must be a string"),
    ("process.terminal", "yes", "process.terminal: must be a boolean"),
    ("process.noNewPrivileges", 1, "process.noNewPrivileges: must be a boolean"),
    ("process.cwd", "home", "process.cwd: must be an absolute path"),
    ("process.consoleSize.height", "25", "process.consoleSize.height: must be an integer"),
    ("process.consoleSize.width", 70000, "process.consoleSize.width: must be at most 65535"),
    ("process.user.uid", "0", "process.user.uid: must be an integer"),
    ("process.user.uid", 0.0, "process.user.uid: must be an integer"),
    ("process.user.uid", True, "process.user.uid: must be an integer"),
    ("process.user.gid", -1, "process.user.gid: must not be negative"),
    ("process.user.uid", 2**32, "process.user.uid: must be at most 4294967295"),
    ("process.user.additionalGids[0]", -5, "process.user.additionalGids[0]: must not be negative"),
    ("process.capabilities.bounding[1]", "CAP_FOO",
     'process.capabilities.bounding[1]: unknown capability "CAP_FOO"'),
    ("process.capabilities.ambient", "CAP_KILL", "process.capabilities.ambient: must be a list of strings"),
    ("process.rlimits[0].type", "RLIMIT_FOO", 'process.rlimits[0].type: unknown rlimit "RLIMIT_FOO"'),
    ("process.rlimits[0].soft", 2048, "process.rlimits[0].soft: must not exceed hard (1024)"),
    ("process.rlimits[0].hard", DELETE, "process.rlimits[0].hard: is required"),
    ("process.rlimits", [{"type": "RLIMIT_NOFILE", "hard": 1, "soft": 1},
                         {"type": "RLIMIT_NOFILE", "hard": 2, "soft": 2}],
     'process.rlimits[1].type: duplicate rlimit "RLIMIT_NOFILE"'),
    ("process.oomScoreAdj", 1001, "process.oomScoreAdj: must be at most 1000"),
    ("root.path", DELETE, "root.path: is required"),
    ("root.readonly", 1, "root.readonly: must be a boolean"),
    ("mounts[1].destination", "dev", "mounts[1].destination: must be an absolute path"),
    ("mounts[1].options", [1], "mounts[1].options[0]: must be a string"),
    ("mounts[6].gidMappings", DELETE, "mounts[6].gidMappings: is required when uidMappings is set"),
    ("hooks.prestart[0].path", "bin/hook", "hooks.prestart[0].path: must be an absolute path"),
    ("hooks.poststop[0].timeout", 0, "hooks.poststop[0].timeout: must be greater than 0"),
    ("hooks.poststop[0].timeout", "5", "hooks.poststop[0].timeout: must be an integer"),
    ("hooks.createRuntime[0].args", "x", "hooks.createRuntime[0].args: must be a list of strings"),
    ("hooks.prestart[0].env[0]", 1, "hooks.prestart[0].env[0]: must be a string"),
    ("hooks.poststart", {"path": "/x"}, "hooks.poststart: must be a list of objects"),
    ("annotations", {"": "x"}, 'annotations[""]: annotation keys must not be empty'),
    ("annotations", {"k": 1}, 'annotations["k"]: must be a string'),
    (("linux", "sysctl", "net.ipv4.ip_forward"), 1, 'linux.sysctl["net.ipv4.ip_forward"]: must be a string'),
    ("linux.uidMappings[0].size", 0, "linux.uidMappings[0].size: must be greater than 0"),
    ("linux.uidMappings[0].containerID", "0", "linux.uidMappings[0].containerID: must be an integer"),
    ("linux.uidMappings[0]", {"containerID": 0, "hostID": 2**32 - 1, "size": 2},
     "linux.uidMappings[0].size: the range runs past the last 32-bit ID"),
    ("linux.gidMappings", [{"containerID": 0, "hostID": 1000, "size": 10},
                           {"containerID": 5, "hostID": 2000, "size": 1}],
     "linux.gidMappings[1]: container IDs overlap those of linux.gidMappings[0]"),
    ("linux.uidMappings", [{"containerID": 0, "hostID": 1000, "size": 1},
                           {"containerID": 1, "hostID": 1000, "size": 1}],
     "linux.uidMappings[1]: host IDs overlap those of linux.uidMappings[0]"),
    ("linux.namespaces", [{"type": "pid"}, {"type": "uts"}],
     'linux.uidMappings: requires a "user" namespace'),
    ("linux.namespaces", [{"type": "pid"}, {"type": "user"}],
     'hostname: can only be set with a "uts" namespace'),
    ("linux.timeOffsets", {"boottime": {"secs": 1}}, 'linux.timeOffsets: requires a "time" namespace'),
    ("linux.devices[0]", "/dev/fuse", "linux.devices[0]: must be an object"),
    ("linux.rootfsPropagation", "sideways", 'linux.rootfsPropagation: unknown rootfs propagation "sideways"'),
    ("linux.maskedPaths[0]", "proc/kcore", "linux.maskedPaths[0]: must be an absolute path"),
    ("linux.seccomp.defaultAction", 1, "linux.seccomp.defaultAction: must be a string"),
    ("linux.seccomp.defaultAction", DELETE, "linux.seccomp.defaultAction: is required"),
    ("linux.seccomp.defaultAction", "SCMP_ACT_NOPE",
     'linux.seccomp.defaultAction: unknown seccomp action "SCMP_ACT_NOPE"'),
    ("linux.seccomp.syscalls[0].action", "KILL",
     'linux.seccomp.syscalls[0].action: unknown seccomp action "KILL"'),
    ("linux.seccomp.syscalls[1].args[0].op", "SCMP_CMP_FOO",
     'linux.seccomp.syscalls[1].args[0].op: unknown seccomp operator "SCMP_CMP_FOO"'),
    ("linux.seccomp.syscalls", {}, "linux.seccomp.syscalls: must be a list of objects"),
    ("linux", [], "linux: must be an object"),
]


@pytest.mark.parametrize(("path", "value", "message"), ERRORS, ids=[m for _, _, m in ERRORS])
def test_errors_name_their_json_path(path: str | tuple[Any, ...], value: Any, message: str) -> None:
    with pytest.raises(ConfigError) as err:
        load(edit(doc(), path, value))
    assert str(err.value) == message
    assert err.value.path == message.split(": ", 1)[0]


@pytest.mark.parametrize(("path", "value", "message"), [
    ("process.args", [], "process.args: must be a non-empty list of strings"),
    ("process", DELETE, "process: is required to run a container"),
    ("root", DELETE, "root.path: is required to run a container"),
    ("root.path", "", "root.path: is required to run a container"),
])
def test_require_runnable(path: str, value: Any, message: str) -> None:
    spec = load(edit(doc(), path, value))  # a valid config ...
    with pytest.raises(ConfigError) as err:
        require_runnable(spec)  # ... that cannot run
    assert str(err.value) == message
    assert err.value.hint


def test_unknown_names_come_with_a_hint() -> None:
    with pytest.raises(ConfigError) as err:
        load(edit(doc(), "process.capabilities.bounding[0]", "CAP_SYS_ADMN"))
    assert err.value.hint == 'did you mean "CAP_SYS_ADMIN"?'
    with pytest.raises(ConfigError) as err:
        load(edit(doc(), "linux.namespaces[0].type", "foo"))
    assert err.value.hint is not None and "pid, network, mount" in err.value.hint


def test_validate_checks_specs_built_in_python() -> None:
    with pytest.raises(ConfigError, match=r"^process\.args: must be a list of strings$"):
        validate(Spec(process=Process(args="sh")))  # type: ignore[arg-type]
    # a wrong type that compares equal to the default must not slip through
    with pytest.raises(ConfigError, match=r"^process\.terminal: must be a boolean$"):
        validate(Spec(process=Process(args=["sh"], terminal=0)))  # type: ignore[arg-type]
    with pytest.raises(ConfigError, match=r"^linux\.namespaces\[1\]\.type: duplicate"):
        dumps(Spec(linux=Linux(namespaces=[Namespace("pid"), Namespace("pid")])))


def test_malformed_json_names_line_and_column(tmp_path: Path) -> None:
    text = '{\n  "ociVersion": "1.2.0"\n  "process": {}\n}\n'
    with pytest.raises(ConfigError, match=r"invalid JSON at line 3, column 3"):
        loads(text)
    (tmp_path / "config.json").write_text(text)
    with pytest.raises(ConfigError) as err:
        load(tmp_path)
    assert str(err.value).startswith(f"{tmp_path / 'config.json'}: invalid JSON at line 3, column 3")


def test_top_level_must_be_an_object() -> None:
    with pytest.raises(ConfigError, match="must hold a JSON object"):
        loads("[1, 2]")


def test_missing_config_names_the_file_and_how_to_make_one(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as err:
        load(tmp_path)
    assert str(tmp_path / "config.json") in str(err.value)
    assert err.value.hint is not None and "sandboxer spec" in err.value.hint


@pytest.mark.parametrize("version", ["1.0.0", "1.0.1", "1.0.2", "1.0.2-dev", "1.1.0", "1.1.0-rc.1",
                                     "1.2.0", "1.2.1", "1.3.0", "1.3.7+build.5"])
def test_supported_versions(version: str) -> None:
    assert load(edit(doc(), "ociVersion", version)).oci_version == version


@pytest.mark.parametrize("version", ["0.9", "0.9.0", "2.0", "2.0.0", "1.4.0", "1.0.0-rc5", "v1.2.0", "",
                                     "1.2"])
def test_unsupported_versions(version: str) -> None:
    with pytest.raises(ConfigError, match=r"^ociVersion: unsupported version"):
        load(edit(doc(), "ociVersion", version))


# --- name tables ---------------------------------------------------------


def test_default_caps_are_dockers_fourteen() -> None:
    assert len(set(DEFAULT_CAPS)) == 14
    assert sum(1 << CAPABILITIES[name] for name in DEFAULT_CAPS) == 0xA80425FB


def test_capability_numbers() -> None:
    assert list(CAPABILITIES.values()) == list(range(41))
    assert CAPABILITIES["CAP_CHOWN"] == 0
    assert CAPABILITIES["CAP_SYS_ADMIN"] == 21
    assert CAPABILITIES["CAP_CHECKPOINT_RESTORE"] == 40


def test_rlimit_numbers_match_this_host() -> None:
    resource = pytest.importorskip("resource")
    for name, number in RLIMITS.items():
        if hasattr(resource, name):
            assert getattr(resource, name) == number, name
    assert len(RLIMITS) == 16


# --- the template --------------------------------------------------------


@pytest.mark.parametrize("rootless", [False, True])
def test_template_common_parts(rootless: bool) -> None:
    spec = spec_template(rootless)
    require_runnable(spec)
    p, linux = spec.process, spec.linux
    assert p is not None and linux is not None and p.capabilities is not None
    assert (p.terminal, p.args, p.cwd, p.no_new_privileges) == (True, ["sh"], "/", True)
    assert "TERM=xterm" in p.env and p.env[0].startswith("PATH=")
    caps = p.capabilities
    assert caps.bounding == caps.effective == caps.permitted == list(DEFAULT_CAPS)
    assert caps.ambient == caps.inheritable == []
    assert [(r.type, r.hard, r.soft) for r in p.rlimits] == [("RLIMIT_NOFILE", 1024, 1024)]
    assert spec.root == Root("rootfs", readonly=True)
    assert spec.hostname == "sandboxer"
    assert [m.destination for m in spec.mounts] == [
        "/proc", "/dev", "/dev/pts", "/dev/shm", "/dev/mqueue", "/sys"]
    assert spec.mounts[1].options == ["nosuid", "strictatime", "mode=755", "size=65536k"]
    assert linux.masked_paths == list(MASKED_PATHS)
    assert linux.readonly_paths == list(READONLY_PATHS)
    assert "/sys/devices/virtual/powercap" in MASKED_PATHS
    assert {"pid", "network", "ipc", "uts", "mount", "cgroup"} <= {ns.type for ns in linux.namespaces}


def test_rootless_template() -> None:
    spec = spec_template(rootless=True)
    assert spec.linux is not None
    assert spec.linux.namespace("user") == Namespace("user")
    assert spec.linux.uid_mappings == [IDMapping(0, os.geteuid(), 1)]
    assert spec.linux.gid_mappings == [IDMapping(0, os.getegid(), 1)]
    assert spec.linux.resources is None
    pts = spec.mounts[2]
    assert pts.type == "devpts" and "newinstance" in pts.options
    assert not any(o.startswith("gid=") for o in pts.options)
    assert spec.mounts[5] == Mount("/sys", "/sys", "none", ["rbind", "nosuid", "noexec", "nodev", "ro"])


def test_rootful_template() -> None:
    spec = spec_template(rootless=False)
    assert spec.linux is not None
    assert spec.linux.namespace("user") is None
    assert spec.linux.uid_mappings == spec.linux.gid_mappings == []
    assert "gid=5" in spec.mounts[2].options
    assert spec.mounts[5] == Mount("/sys", "sysfs", "sysfs", ["nosuid", "noexec", "nodev", "ro"])


def test_templates_are_independent_objects() -> None:
    first = spec_template(rootless=True)
    assert first.process is not None and first.linux is not None
    first.process.args.append("-x")
    first.linux.masked_paths.clear()
    assert spec_template(rootless=True) != first


def test_write_template_refuses_to_overwrite(tmp_path: Path) -> None:
    path = write_template(tmp_path, rootless=True)
    assert path == str(tmp_path / "config.json")
    assert load(path) == spec_template(rootless=True)
    Path(path).write_text("{}")  # hand-edited
    with pytest.raises(UsageError) as err:
        write_template(tmp_path, rootless=False)
    assert isinstance(err.value, SandboxerError)
    assert "already exists" in str(err.value)
    assert err.value.hint is not None and "--force" in err.value.hint
    assert Path(path).read_text() == "{}"  # untouched
    write_template(tmp_path, rootless=False, force=True)
    assert load(path) == spec_template(rootless=False)


def test_write_template_needs_an_existing_bundle(tmp_path: Path) -> None:
    with pytest.raises(UsageError, match="does not exist"):
        write_template(tmp_path / "missing", rootless=True)


# --- import cost ---------------------------------------------------------


def test_import_is_light() -> None:
    """json and dataclasses only: no schema libraries, no typing.

    (The capability table and the masked paths come from the runtime's
    capabilities and mounts modules, which bring the syscall wrappers.)
    """
    code = (
        "import sys, json, dataclasses, sandboxer.errors, sandboxer.runtime.capabilities, sandboxer.runtime.mounts\n"
        "before = set(sys.modules)\n"
        "import sandboxer.oci.spec\n"
        "print(sorted(set(sys.modules) - before))\n"
    )
    root = str(Path(__file__).resolve().parent.parent)
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                         cwd=root, env={**os.environ, "PYTHONPATH": root})
    new = eval(out.stdout)
    assert [m for m in new if not m.startswith("sandboxer.oci")] == []


def test_deepcopy_and_equality_behave() -> None:
    spec = loads(RUNC_STYLE)
    clone = copy.deepcopy(spec)
    assert clone == spec
    assert clone.linux is not None
    clone.linux.extra["intelRdt"] = {}
    assert clone != spec
