"""``sandboxer load`` and ``sandboxer save`` against archives made by an independent tool.

The fixtures come from skopeo, not from sandboxer: the busybox image is
pushed to Debian's docker-registry on 127.0.0.1, and skopeo copies it from
there into a docker-archive, an oci-archive and OCI layout directories.
What ``save`` writes goes back through ``skopeo inspect``.  The image id
(the config's digest) is the thread: every route must keep it.
"""

from __future__ import annotations

import gzip
import hashlib
import io
import json
import os
import shutil
import subprocess
import sys
import tarfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from conftest import SANDBOXER, needs_subids, sandboxer

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tools"))
from local_registry import REGISTRY, start_registry  # noqa: E402  (tools/, not a package)

BUSYBOX = "sandboxer-test/busybox"
pytestmark = [
    pytest.mark.skipif(not os.path.exists(REGISTRY), reason="needs Debian's docker-registry"),
    pytest.mark.skipif(not shutil.which("skopeo"), reason="needs skopeo"),
    pytest.mark.skipif(not os.path.exists("/bin/busybox"), reason="needs busybox-static"),
]


def _skopeo(*args: str) -> str:
    # an auth file of its own: without XDG_RUNTIME_DIR skopeo reads /run/containers/UID/, which a root
    # podman run leaves unreadable to users (then every copy fails on "permission denied")
    env = {**os.environ, "REGISTRY_AUTH_FILE": os.path.join(os.path.expanduser("~"), ".sandboxer-test-auth.json")}
    return subprocess.run(["skopeo", *args], capture_output=True, text=True, check=True, env=env).stdout


@pytest.fixture(scope="module")
def fixtures(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, str]]:
    """The busybox image's id, and skopeo's copies of it: docker-archive, oci-archive, layouts."""
    root = tmp_path_factory.mktemp("archives")
    tarball = root / "busybox.tar"
    subprocess.run([sys.executable, str(ROOT / "images" / "busybox.py"), str(tarball)], check=True)
    registry, address = start_registry(root / "registry")
    try:
        with pytest.MonkeyPatch.context() as mp:
            mp.setenv("SANDBOXER_DATA_DIR", str(root / "source"))
            sandboxer("import", str(tarball), BUSYBOX, check=True)
            image_id = str(_inspect(BUSYBOX)["Id"])
            sandboxer("push", "--tls-verify=false", BUSYBOX, f"{address}/x/busybox:latest", check=True)
        src = f"docker://{address}/x/busybox:latest"
        out = {"id": image_id, "rootfs": str(tarball), "root": str(root),
               "docker-archive": str(root / "docker.tar"), "oci-archive": str(root / "oci.tar"),
               "oci-dir": str(root / "layout"), "unnamed-dir": str(root / "unnamed")}
        for transport, dest in (("docker-archive", f"{out['docker-archive']}:x:latest"),
                                ("oci-archive", f"{out['oci-archive']}:x:latest"),
                                ("oci", f"{out['oci-dir']}:x:latest"), ("oci", out["unnamed-dir"])):
            _skopeo("copy", "--src-tls-verify=false", src, f"{transport}:{dest}")
    finally:
        registry.kill()
        registry.wait()
    yield out


@pytest.fixture
def store(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A fresh, empty store for this test."""
    path = tmp_path / "store"
    monkeypatch.setenv("SANDBOXER_DATA_DIR", str(path))
    return path


def _inspect(name: str) -> dict[str, object]:
    return dict(json.loads(sandboxer("image", "inspect", name, check=True).stdout)[0])


@needs_subids
@pytest.mark.parametrize("kind", ["docker-archive", "oci-archive", "oci-dir"])
def test_load_what_skopeo_wrote_then_run_it(fixtures: dict[str, str], store: Path, kind: str) -> None:
    p = sandboxer("load", "-i", fixtures[kind], check=True)
    assert p.stdout == "Loaded image: x:latest\n"
    assert _inspect("x")["Id"] == fixtures["id"]  # the config byte for byte: the same image
    assert sandboxer("run", "x", "cat", "/etc/hostname", check=True).stdout == "busybox\n"
    assert os.listdir(store / "tmp") == []


@needs_subids
@pytest.mark.parametrize("kind", ["gzip-compressed docker-archive", "legacy layer paths"])
def test_load_other_docker_archive_spellings(fixtures: dict[str, str], store: Path, tmp_path: Path,
                                             kind: str) -> None:
    if kind == "gzip-compressed docker-archive":
        path = tmp_path / "docker.tar.gz"
        with open(fixtures["docker-archive"], "rb") as src, gzip.open(path, "wb") as dest:
            shutil.copyfileobj(src, dest)
    else:
        with tarfile.open(fixtures["docker-archive"]) as tar:
            legacy = [m.name for m in tar if m.name.endswith("/layer.tar") and m.issym()]
        assert len(legacy) == 1
        path = Path(_rewrite_tar(fixtures["docker-archive"], tmp_path / "legacy.tar",
                                 _docker_manifest(lambda e: e.update(Layers=legacy))))
    assert sandboxer("load", "-i", str(path), check=True).stdout == "Loaded image: x:latest\n"
    assert _inspect("x")["Id"] == fixtures["id"]


@needs_subids
def test_load_from_stdin(fixtures: dict[str, str], store: Path) -> None:
    with open(fixtures["docker-archive"], "rb") as f:
        p = subprocess.run([*SANDBOXER, "load"], stdin=f, capture_output=True, text=True, timeout=60)
    assert p.returncode == 0, p.stderr
    assert p.stdout == "Loaded image: x:latest\n"
    assert os.listdir(store / "tmp") == []  # the spooled copy is gone


@needs_subids
def test_an_unnamed_layout_needs_a_name(fixtures: dict[str, str], store: Path) -> None:
    p = sandboxer("load", "-i", fixtures["unnamed-dir"])
    assert p.returncode == 125 and "has no name" in p.stderr and "--name" in p.stderr
    assert sandboxer("load", "-i", fixtures["unnamed-dir"], "--name", "team/named:1", check=True).stdout == \
        "Loaded image: team/named:1\n"
    assert sandboxer("load", "-i", fixtures["unnamed-dir"], "positional", check=True).stdout == \
        "Loaded image: positional:latest\n"
    p = sandboxer("load", "-i", fixtures["oci-dir"], "--name", "unused", check=True)
    assert p.stdout == "Loaded image: x:latest\n" and "unused:latest was not used" in p.stderr


@needs_subids
@pytest.mark.parametrize("fmt", ["docker-archive", "oci-archive"])
def test_save_then_load_round_trip_and_skopeo_reads_it(fixtures: dict[str, str], tmp_path: Path,
                                                       monkeypatch: pytest.MonkeyPatch, fmt: str) -> None:
    monkeypatch.setenv("SANDBOXER_DATA_DIR", str(tmp_path / "first"))
    sandboxer("load", "-i", fixtures["oci-archive"], check=True)  # a gzip layer, from skopeo
    sandboxer("import", "--cmd", "echo other", fixtures["rootfs"], "team/other:2", check=True)
    sandboxer("tag", "x", "team/again:3", check=True)
    ids = {name: _inspect(name)["Id"] for name in ("x:latest", "team/other:2", "team/again:3")}
    assert ids["x:latest"] == fixtures["id"] != ids["team/other:2"]
    archive = tmp_path / "saved.tar"
    sandboxer("save", "-o", str(archive), "--format", fmt, *ids, check=True)
    assert [e for e in os.listdir(tmp_path) if e.startswith(".")] == []  # no temporary file left
    for name, image_id in ids.items():  # an independent reader, each name in turn
        manifest = json.loads(_skopeo("inspect", "--raw", f"{fmt}:{archive}:{name}"))
        assert manifest["config"]["digest"] == image_id
    monkeypatch.setenv("SANDBOXER_DATA_DIR", str(tmp_path / "second"))
    p = sandboxer("load", "-i", str(archive), check=True)
    assert sorted(p.stdout.splitlines()) == sorted(f"Loaded image: {name}" for name in ids)
    assert {name: _inspect(name)["Id"] for name in ids} == ids
    assert sandboxer("run", "team/other:2", check=True).stdout == "other\n"


@needs_subids
def test_save_to_stdout_and_skopeo_copies_it(fixtures: dict[str, str], tmp_path: Path,
                                             monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SANDBOXER_DATA_DIR", str(tmp_path / "store"))
    sandboxer("load", "-i", fixtures["docker-archive"], check=True)
    archive = tmp_path / "stdout.tar"
    with open(archive, "wb") as out:
        subprocess.run([*SANDBOXER, "save", "--format", "oci-archive", "x"], stdout=out, check=True, timeout=60)
    _skopeo("copy", f"oci-archive:{archive}", f"oci:{tmp_path / 'copied'}:y")  # reads and verifies every blob
    assert json.loads((tmp_path / "copied" / "index.json").read_text())["manifests"][0]["annotations"] == \
        {"org.opencontainers.image.ref.name": "y"}


def test_save_failures_leave_the_destination_alone(fixtures: dict[str, str], store: Path, tmp_path: Path) -> None:
    dest = tmp_path / "keep.tar"
    dest.write_bytes(b"old")
    p = sandboxer("save", "-o", str(dest), "no/such:image")
    assert p.returncode == 125 and "no such image" in p.stderr
    p = sandboxer("save", "-o", str(dest), "--format", "zip", "x")
    assert p.returncode == 125 and "docker-archive" in p.stderr
    assert dest.read_bytes() == b"old"
    assert [e for e in os.listdir(tmp_path) if e.startswith(".")] == []


@needs_subids
def test_a_corrupt_store_blob_aborts_save(fixtures: dict[str, str], store: Path, tmp_path: Path) -> None:
    sandboxer("load", "-i", fixtures["docker-archive"], check=True)
    layer = json.loads(sandboxer("image", "inspect", "x", check=True).stdout)[0]["Manifest"]["layers"][0]
    blob = store / "blobs" / "sha256" / layer["digest"].removeprefix("sha256:")
    data = bytearray(blob.read_bytes())
    data[-1] ^= 0xFF
    blob.write_bytes(bytes(data))
    dest = tmp_path / "keep.tar"
    dest.write_bytes(b"old")
    p = sandboxer("save", "-o", str(dest), "x")
    assert p.returncode == 125 and "is corrupt; nothing was written" in p.stderr
    assert dest.read_bytes() == b"old"  # written beside it, then never renamed over it
    assert [e for e in os.listdir(tmp_path) if e.startswith(".")] == []


@needs_subids
def test_nested_index_picks_this_platform(fixtures: dict[str, str], store: Path, tmp_path: Path) -> None:
    layout = tmp_path / "nested"
    shutil.copytree(fixtures["oci-dir"], layout)
    index = json.loads((layout / "index.json").read_text())
    entry = index["manifests"][0]
    arch = {"x86_64": "amd64", "aarch64": "arm64"}.get(os.uname().machine, os.uname().machine)
    plain = {k: v for k, v in entry.items() if k != "annotations"}
    nested = {"schemaVersion": 2, "mediaType": "application/vnd.oci.image.index.v1+json",
              "manifests": [{**plain, "platform": {"os": "linux", "architecture": "riscv64"}},
                            {**plain, "platform": {"os": "linux", "architecture": arch}}]}
    index["manifests"] = [{**_add_blob(layout, nested), "annotations": entry["annotations"]}]
    (layout / "index.json").write_text(json.dumps(index))
    assert sandboxer("load", "-i", str(layout), check=True).stdout == "Loaded image: x:latest\n"
    assert _inspect("x")["Id"] == fixtures["id"]
    p = sandboxer("load", "--platform", "linux/s390x", "-i", str(layout))
    assert p.returncode == 125 and "no image for linux/s390x" in p.stderr and "linux/riscv64" in p.stderr


# -- bad input: one line and a hint, exit 125, nothing named, nothing left in tmp/ ---------------


def _add_blob(layout: Path, obj: dict[str, object]) -> dict[str, object]:
    """Write a JSON blob into a layout; returns its descriptor."""
    data = json.dumps(obj).encode()
    digest = hashlib.sha256(data).hexdigest()
    (layout / "blobs" / "sha256" / digest).write_bytes(data)
    return {"mediaType": str(obj.get("mediaType")), "digest": f"sha256:{digest}", "size": len(data)}


def _rewrite_manifest(layout: Path, change: Callable[[dict[str, Any]], None]) -> None:
    """Change the layout's (only) manifest, and point index.json at the changed one."""
    index = json.loads((layout / "index.json").read_text())
    entry = index["manifests"][0]
    manifest = json.loads((layout / "blobs" / "sha256" / entry["digest"].removeprefix("sha256:")).read_bytes())
    change(manifest)
    entry.update(_add_blob(layout, manifest))
    (layout / "index.json").write_text(json.dumps(index))


def _rewrite_tar(src: str, dest: Path, change: Callable[[str, bytes], bytes | None],
                 extra: dict[str, bytes] | None = None) -> str:
    """A copy of a tar with members changed (None drops one) and ``extra`` members added."""
    with tarfile.open(src) as tin, tarfile.open(dest, "w") as tout:
        for member in tin:
            f = tin.extractfile(member)
            data = change(member.name, f.read() if f else b"")
            if data is None:
                continue
            member.size = len(data) if member.isfile() else 0
            tout.addfile(member, io.BytesIO(data) if member.isfile() else None)
        for name, data in (extra or {}).items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tout.addfile(info, io.BytesIO(data))
    return str(dest)


def _docker_manifest(change: Callable[[dict[str, Any]], None]) -> Callable[[str, bytes], bytes | None]:
    def rewrite(name: str, data: bytes) -> bytes:
        if name != "manifest.json":
            return data
        entries = json.loads(data)
        change(entries[0])
        return json.dumps(entries).encode()
    return rewrite


def _wrong_diff_id(name: str, data: bytes) -> bytes:
    if not name.endswith(".json") or name == "manifest.json" or "/" in name:
        return data
    config = json.loads(data)
    config["rootfs"]["diff_ids"] = ["sha256:" + "0" * 64]
    return json.dumps(config).encode()


def _corrupt_layer(layout: Path) -> None:
    manifest_digest = json.loads((layout / "index.json").read_text())["manifests"][0]["digest"]
    manifest = json.loads((layout / "blobs" / "sha256" / manifest_digest.removeprefix("sha256:")).read_bytes())
    blob = layout / "blobs" / "sha256" / manifest["layers"][0]["digest"].removeprefix("sha256:")
    data = bytearray(blob.read_bytes())
    data[len(data) // 2] ^= 0xFF
    blob.write_bytes(bytes(data))


def _lz4_layers(manifest: dict[str, Any]) -> None:
    for layer in manifest["layers"]:
        layer["mediaType"] = "application/vnd.example.layer.v1.tar+lz4"


def _bad_input(case: str, fixtures: dict[str, str], tmp: Path) -> str:
    """The path of a broken archive or layout, made from skopeo's good ones."""
    if case == "not a tar":
        (tmp / "text.tar").write_text("hello, this is no archive\n" * 100)
        return str(tmp / "text.tar")
    if case == "neither format":
        return fixtures["rootfs"]
    if case == "legacy docker-archive":
        return _rewrite_tar(fixtures["docker-archive"], tmp / "legacy.tar",
                            lambda name, data: None if name == "manifest.json" else data)
    if case == "missing member":
        return _rewrite_tar(fixtures["docker-archive"], tmp / "missing.tar",
                            _docker_manifest(lambda e: e.update(Layers=["nowhere/layer.tar"])))
    if case == "traversal member":
        return _rewrite_tar(fixtures["docker-archive"], tmp / "escape.tar", lambda _n, d: d, {"../x": b"x"})
    if case == "traversal in manifest.json":
        return _rewrite_tar(fixtures["docker-archive"], tmp / "escape2.tar",
                            _docker_manifest(lambda e: e.update(Layers=["../../etc/passwd"])))
    if case == "diff-id mismatch":
        return _rewrite_tar(fixtures["docker-archive"], tmp / "diffid.tar", _wrong_diff_id)
    layout = tmp / "layout"
    shutil.copytree(fixtures["oci-dir"], layout)
    if case == "blob digest mismatch":
        _corrupt_layer(layout)
    elif case == "unsupported media type":
        _rewrite_manifest(layout, _lz4_layers)
    if case == "corrupt oci-archive":  # the same blob damage, inside a tar
        _corrupt_layer(layout)
        with tarfile.open(tmp / "layout.tar", "w") as tar:
            for entry in sorted(os.listdir(layout)):
                tar.add(layout / entry, entry)
        return str(tmp / "layout.tar")
    return str(layout)


BAD_INPUTS = {
    "not a tar": "is not a tar archive",
    "legacy docker-archive": "of Docker before 1.10",
    "neither format": "is neither a docker-archive",
    "missing member": "nowhere/layer.tar is not in the archive",
    "traversal member": "'../x' points outside the archive",
    "traversal in manifest.json": "'../../etc/passwd' points outside the archive",
    "diff-id mismatch": "layer 1 of x:latest in",
    "blob digest mismatch": "has digest",
    "unsupported media type": "unsupported layer type 'application/vnd.example.layer.v1.tar+lz4'",
    "corrupt oci-archive": "has digest",
}


@pytest.mark.parametrize("case", list(BAD_INPUTS))
def test_bad_input_is_one_line_and_changes_nothing(fixtures: dict[str, str], store: Path, tmp_path: Path,
                                                   case: str) -> None:
    p = sandboxer("load", "-i", _bad_input(case, fixtures, tmp_path))
    assert p.returncode == 125, p.stderr
    lines = p.stderr.splitlines()
    assert len(lines) == 2 and lines[0].startswith("sandboxer: error: ") and lines[1].startswith("hint: "), lines
    assert BAD_INPUTS[case] in lines[0]
    if case == "diff-id mismatch":
        assert "does not match its diff-id" in lines[0]
    assert not (store / "index.json").exists() or json.loads((store / "index.json").read_text())["images"] == {}
    assert os.listdir(store / "tmp") == []
    assert os.listdir(store / "layers") == []
    sandboxer("image", "prune", check=True)  # whatever blobs were copied before the check failed are orphans
    assert os.listdir(store / "blobs" / "sha256") == []


def test_usage_errors(store: Path) -> None:
    p = sandboxer("load")  # stdin is /dev/null here, not a terminal: an empty archive
    assert p.returncode == 125 and "stdin is not a tar archive" in p.stderr
    assert os.listdir(store / "tmp") == []  # the spooled copy is gone
    p = sandboxer("load", "-i", "/no/such/file")
    assert p.returncode == 125 and "cannot read /no/such/file" in p.stderr
    p = sandboxer("load", "-i", "x.tar", "--name", "a", "b")
    assert p.returncode == 125 and "usage: sandboxer load" in p.stderr
    p = sandboxer("save")
    assert p.returncode == 125 and "usage: sandboxer save" in p.stderr
