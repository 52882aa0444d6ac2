"""OCI bundles: ``sandboxer spec`` and ``sandboxer run --bundle``, hooks included."""

from __future__ import annotations

import json
import os
import shutil
import stat
import subprocess

import pytest
from conftest import sandboxer

BUSYBOX = shutil.which("busybox") or "/bin/busybox"
APPLETS = ("sh", "cat", "echo", "id", "hostname", "ls", "mount", "touch", "true", "grep", "readlink")

pytestmark = pytest.mark.skipif(not os.path.exists(BUSYBOX), reason="needs busybox-static")


def make_bundle(path: str, args: list[str], **process: object) -> dict:  # type: ignore[type-arg]
    """A bundle with a busybox rootfs and the rootless template, running ``args``."""
    rootfs = os.path.join(path, "rootfs")
    os.makedirs(os.path.join(rootfs, "bin"))
    shutil.copy(BUSYBOX, os.path.join(rootfs, "bin", "busybox"))
    for applet in APPLETS:
        os.symlink("busybox", os.path.join(rootfs, "bin", applet))
    for d in ("proc", "dev", "sys", "tmp", "etc"):
        os.makedirs(os.path.join(rootfs, d), exist_ok=True)
    p = sandboxer("spec", "--rootless", "--bundle", path)
    assert p.returncode == 0, p.stderr
    config_path = os.path.join(path, "config.json")
    with open(config_path) as f:
        config = json.load(f)
    config["process"]["terminal"] = False
    config["process"]["args"] = args
    config["process"]["env"] = ["PATH=/bin"]
    config["process"].update(process)
    write_config(path, config)
    return config  # type: ignore[no-any-return]


def write_config(path: str, config: dict) -> None:  # type: ignore[type-arg]
    with open(os.path.join(path, "config.json"), "w") as f:
        json.dump(config, f)


def test_spec_writes_a_template_and_refuses_to_overwrite(tmp_path: os.PathLike[str]) -> None:
    p = sandboxer("spec", "--bundle", str(tmp_path))
    assert p.returncode == 0
    config = json.loads(open(os.path.join(tmp_path, "config.json")).read())
    assert config["process"]["args"] == ["sh"]
    assert config["root"] == {"path": "rootfs", "readonly": True}
    again = sandboxer("spec", "--bundle", str(tmp_path))
    assert again.returncode == 125
    assert "config.json" in again.stderr and "Traceback" not in again.stderr
    file_given = sandboxer("run", "--bundle", os.path.join(tmp_path, "config.json"))  # the file, not its directory
    assert file_given.returncode == 125 and "is not a directory" in file_given.stderr
    assert "the bundle's directory" in file_given.stderr


def test_spec_defaults_to_the_current_directory(tmp_path: os.PathLike[str]) -> None:
    import subprocess

    from conftest import SANDBOXER

    subprocess.run([*SANDBOXER, "spec", "--rootless"], cwd=tmp_path, check=True)
    config = json.loads(open(os.path.join(tmp_path, "config.json")).read())
    assert {"type": "user"} in config["linux"]["namespaces"]


def test_run_bundle(tmp_path: os.PathLike[str]) -> None:
    make_bundle(str(tmp_path), ["sh", "-c", "id -u; hostname; ls /bin | grep -c busybox; "
                                            "touch /x 2>/dev/null || echo read-only-root"])
    p = sandboxer("run", "--bundle", str(tmp_path), "b1")
    assert p.returncode == 0, p.stderr
    assert p.stdout.split() == ["0", "sandboxer", "1", "read-only-root"]


def test_run_bundle_honours_process_fields(tmp_path: os.PathLike[str]) -> None:
    config = make_bundle(str(tmp_path), ["sh", "-c", "echo $FOO; pwd; grep -E 'CapEff|NoNewPrivs' /proc/self/status; "
                                                     "ulimit -n"])
    config["process"]["env"].append("FOO=bar")
    config["process"]["cwd"] = "/tmp"
    config["process"]["capabilities"] = {"bounding": ["CAP_KILL"], "effective": ["CAP_KILL"],
                                         "permitted": ["CAP_KILL"]}
    config["process"]["rlimits"] = [{"type": "RLIMIT_NOFILE", "hard": 512, "soft": 256}]
    config["root"]["readonly"] = False
    write_config(str(tmp_path), config)
    p = sandboxer("run", "--bundle", str(tmp_path))
    assert p.returncode == 0, p.stderr
    lines = p.stdout.split("\n")
    assert lines[0] == "bar"
    assert lines[1] == "/tmp"
    assert lines[2].split()[1] == f"{1 << 5:016x}"  # CAP_KILL only
    assert lines[3].split()[1] == "1"
    assert lines[4] == "256"


def test_bundle_hooks_run_in_order_with_the_state(tmp_path: os.PathLike[str]) -> None:
    bundle = str(tmp_path)
    log = os.path.join(bundle, "hooks.log")
    hook = os.path.join(bundle, "hook.sh")
    with open(hook, "w") as f:
        f.write(f'#!/bin/sh\necho "$1 $(cat)" >> {log}\n')
    os.chmod(hook, stat.S_IRWXU)
    config = make_bundle(bundle, ["sh", "-c", "echo workload"])
    config["hooks"] = {phase: [{"path": hook, "args": ["hook.sh", phase]}]
                       for phase in ("prestart", "createRuntime", "poststart", "poststop")}
    write_config(bundle, config)
    p = sandboxer("run", "--bundle", bundle, "hooked")
    assert p.returncode == 0, p.stderr
    entries = [line.split(" ", 1) for line in open(log).read().splitlines()]
    assert [phase for phase, _ in entries] == ["prestart", "createRuntime", "poststart", "poststop"]
    states = [json.loads(state) for _, state in entries]
    assert all(s["id"] == "hooked" and s["bundle"] == bundle for s in states)
    assert [s["status"] for s in states] == ["created", "created", "running", "stopped"]
    assert states[0]["pid"] > 1


def test_failing_prestart_hook_aborts_the_start(tmp_path: os.PathLike[str]) -> None:
    config = make_bundle(str(tmp_path), ["sh", "-c", "echo should-not-run"])
    config["hooks"] = {"prestart": [{"path": "/bin/false"}]}
    write_config(str(tmp_path), config)
    p = sandboxer("run", "--bundle", str(tmp_path))
    assert p.returncode == 125
    assert "hooks.prestart[0]" in p.stderr
    assert "should-not-run" not in p.stdout


def test_a_hook_that_times_out_takes_its_children_along(tmp_path: os.PathLike[str]) -> None:
    """A hook's timeout kills what it started too (its process group), not only the hook; and a hook
    that leaves a child running on purpose does not hold the start until that child exits."""
    import time

    bundle = str(tmp_path)
    hanging = os.path.join(bundle, "hang.sh")
    with open(hanging, "w") as f:
        f.write("#!/bin/sh\n/bin/sleep 2222.75\n")
    daemonising = os.path.join(bundle, "daemon.sh")
    with open(daemonising, "w") as f:
        f.write("#!/bin/sh\n/bin/sleep 2222.5 &\necho started >&2\nexit 0\n")
    for script in (hanging, daemonising):
        os.chmod(script, stat.S_IRWXU)
    config = make_bundle(bundle, ["true"])
    config["hooks"] = {"prestart": [{"path": hanging, "timeout": 1}]}
    write_config(bundle, config)
    p = sandboxer("run", "--bundle", bundle)
    assert p.returncode == 125 and "timed out after 1s" in p.stderr
    assert subprocess.run(["pgrep", "-f", "sleep 2222.75"], capture_output=True).returncode == 1  # none left
    config["hooks"] = {"prestart": [{"path": daemonising}]}
    write_config(bundle, config)
    started = time.monotonic()
    try:
        p = sandboxer("run", "--bundle", bundle)
        assert p.returncode == 0 and time.monotonic() - started < 30, p.stderr
    finally:
        subprocess.run(["pkill", "-f", "sleep 2222.5"])


@pytest.mark.parametrize(("change", "message"), [
    (lambda c: c["linux"]["namespaces"].append({"type": "foo"}),
     'linux.namespaces[7].type: unknown namespace "foo"'),
    (lambda c: c.__setitem__("ociVersion", "2.0.0"), "ociVersion: unsupported version"),
    (lambda c: c["process"].__setitem__("args", []), "process.args"),
    (lambda c: c["mounts"][0].__setitem__("destination", "proc"), "mounts[0].destination"),
])
def test_malformed_config_names_the_json_path(tmp_path: os.PathLike[str], change, message: str) -> None:  # type: ignore[no-untyped-def]
    config = make_bundle(str(tmp_path), ["true"])
    change(config)
    write_config(str(tmp_path), config)
    p = sandboxer("run", "--bundle", str(tmp_path))
    assert p.returncode == 125
    assert message in p.stderr, p.stderr
    assert "Traceback" not in p.stderr


def test_invalid_json_reports_line_and_column(tmp_path: os.PathLike[str]) -> None:
    make_bundle(str(tmp_path), ["true"])
    with open(os.path.join(tmp_path, "config.json"), "w") as f:
        f.write('{\n  "ociVersion": "1.2.0",\n  "process": {,}\n}')
    p = sandboxer("run", "--bundle", str(tmp_path))
    assert p.returncode == 125
    assert "line 3" in p.stderr


def test_missing_bundle_is_a_clear_error(tmp_path: os.PathLike[str]) -> None:
    p = sandboxer("run", "--bundle", os.path.join(str(tmp_path), "nope"))
    assert p.returncode == 125
    assert "Traceback" not in p.stderr and p.stderr.startswith("sandboxer: error:")
