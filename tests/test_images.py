"""The image store and ``sandboxer run IMAGE``, run the way a user runs them (the real command)."""

from __future__ import annotations

import io
import os
import subprocess
import sys
import tarfile
from collections.abc import Iterator
from pathlib import Path

import pytest
from conftest import SANDBOXER, busybox_store, needs_subids, sandboxer

ROOT = Path(__file__).resolve().parent.parent
BUSYBOX = "sandboxer-test/busybox"

pytestmark = pytest.mark.skipif(not os.path.exists("/bin/busybox"), reason="needs busybox-static")
pytest_plugins = ["pytester"]


@pytest.fixture(scope="module")
def store(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """A store of this module's own, holding the busybox image built from images/busybox.py."""
    with busybox_store(tmp_path_factory) as root:
        yield root


def _layer(path: Path, files: dict[str, str], whiteouts: tuple[str, ...] = ()) -> str:
    with tarfile.open(path, "w") as tar:
        dirs = sorted({os.path.dirname(name) for name in (*files, *whiteouts) if os.path.dirname(name)})
        for d in dirs:
            ti = tarfile.TarInfo(d)
            ti.type, ti.mode = tarfile.DIRTYPE, 0o755
            tar.addfile(ti)
        for name, text in files.items():
            data = text.encode()
            ti = tarfile.TarInfo(name)
            ti.size, ti.mode = len(data), 0o644
            tar.addfile(ti, io.BytesIO(data))
        for name in whiteouts:
            ti = tarfile.TarInfo(os.path.join(os.path.dirname(name), ".wh." + os.path.basename(name)))
            tar.addfile(ti, io.BytesIO(b""))
    return str(path)


def test_reference_names_are_normalised_as_docker_does() -> None:
    from sandboxer.errors import UsageError
    from sandboxer.images.reference import parse_reference

    assert str(parse_reference("busybox")) == "docker.io/library/busybox:latest"
    assert parse_reference("busybox").familiar == "busybox:latest"
    assert str(parse_reference("localhost:5000/team/app:1.0")) == "localhost:5000/team/app:1.0"
    assert str(parse_reference("team/app")) == "docker.io/team/app:latest"
    for bad in ("Busybox", "a//b", "x:", "", "a:b:c", "x@sha256:123"):
        with pytest.raises(UsageError):
            parse_reference(bad)


@needs_subids
def test_run_an_imported_image(store: Path) -> None:
    listing = sandboxer("images", check=True).stdout
    assert "sandboxer-test/busybox" in listing and "latest" in listing
    p = sandboxer("run", BUSYBOX, "sh", "-c", "id -u; cat /etc/hostname; ls -ln /home | tail -1; "
                  "ls -l /bin/busybox | cut -c1-10; echo x >> /etc/passwd && echo appended", check=True)
    lines = p.stdout.splitlines()
    assert lines[0] == "0"
    assert lines[1] == "busybox"
    assert lines[2].split()[2:4] == ["1000", "1000"], lines  # ownership survived unpacking
    assert lines[3] == "-rwxr-xr-x"
    assert lines[4] == "appended"
    # the writes went to a throwaway layer
    assert sandboxer("run", BUSYBOX, "grep", "-c", "^x$", "/etc/passwd").stdout.strip() == "0"


@needs_subids
def test_image_users_workdir_and_default_command(store: Path, tmp_path: Path) -> None:
    tarball = store / "busybox.tar"
    sandboxer("import", "--cmd", "echo default command", str(tarball), "sandboxer-test/withcmd", check=True)
    assert sandboxer("run", "sandboxer-test/withcmd", check=True).stdout == "default command\n"
    # a name from the image's /etc/passwd (the host has no 'tester')
    p = sandboxer("run", "-u", "tester", "-w", "/home/tester", BUSYBOX, "sh", "-c", "id -u; id -g; pwd; touch mine",
                  check=True)
    assert p.stdout.split() == ["1000", "1000", "/home/tester"]
    sandboxer("rmi", "sandboxer-test/withcmd", check=True)


@needs_subids
@pytest.mark.parametrize("driver", ["overlay", "fuse-overlayfs", "copy"])
def test_every_storage_driver_runs_images_and_applies_whiteouts(store: Path, tmp_path: Path, driver: str) -> None:
    from sandboxer.images.reference import parse_reference
    from sandboxer.images.store import Store

    name = f"sandboxer-test/whiteouts-{driver}"
    lower = _layer(tmp_path / "l1.tar", {"a/keep": "1", "a/gone": "2", "b/old": "3"})
    upper = _layer(tmp_path / "l2.tar", {"b/new": "4"}, whiteouts=("a/gone",))
    Store().add_image(parse_reference(name), [str(store / "busybox.tar"), lower, upper],
                      {"Env": ["PATH=/bin:/usr/bin"]}, "test")
    p = sandboxer("run", "--storage-driver", driver, name, "sh", "-c",
                  "ls /a; cat /b/new; echo; test ! -e /a/gone && echo gone-is-gone; touch /a/more && echo writable",
                  check=True)
    assert p.stdout.split() == ["keep", "4", "gone-is-gone", "writable"]
    sandboxer("rmi", name, check=True)


@needs_subids
def test_sixty_layers(store: Path, tmp_path: Path) -> None:
    """More layers than fit in one page of overlay mount options."""
    from sandboxer.images.reference import parse_reference
    from sandboxer.images.store import Store

    layers = [str(store / "busybox.tar")]
    layers += [_layer(tmp_path / f"l{i}.tar", {f"layers/{i:02d}": str(i)}) for i in range(60)]
    Store().add_image(parse_reference("sandboxer-test/sixty"), layers, {}, "test")
    for driver in ("overlay", "fuse-overlayfs"):
        p = sandboxer("run", "--storage-driver", driver, "sandboxer-test/sixty", "sh", "-c", "ls /layers | wc -l",
                      check=True)
        assert p.stdout.strip() == "60", driver
    sandboxer("rmi", "sandboxer-test/sixty", check=True)


@needs_subids
def test_a_failed_import_leaves_nothing_in_the_store(store: Path, tmp_path: Path) -> None:
    from sandboxer.errors import SandboxerError
    from sandboxer.images.reference import parse_reference
    from sandboxer.images.store import Store

    s = Store()

    def contents() -> dict[str, list[str]]:
        subs = ("blobs/sha256", "layers", "tmp", "locks")
        return {sub: sorted(os.listdir(os.path.join(s.root, sub))) for sub in subs}

    before = contents()
    bad = tmp_path / "not-a-tar"
    bad.write_text("no tar here\n" * 100)
    p = sandboxer("import", str(bad), "sandboxer-test/broken")
    assert p.returncode == 125 and p.stderr.startswith("sandboxer: error: layer ")
    assert "Traceback" not in p.stderr and "not a tar archive; nothing was imported" in p.stderr, p.stderr
    assert contents() == before
    good = _layer(tmp_path / "good.tar", {"a/file": "1"})  # a layer that unpacks, then a bad one
    with pytest.raises(SandboxerError):
        s.add_image(parse_reference("sandboxer-test/broken"), [good, str(bad)], {}, "test")
    assert contents() == before
    assert sandboxer("run", "sandboxer-test/broken", "true").returncode == 125


@needs_subids
def test_import_says_which_device_nodes_it_left_out(store: Path, tmp_path: Path) -> None:
    """A rootless unpacker cannot make device nodes: it skips them, and says so (once, at unpack time)."""
    import tarfile

    tarball = tmp_path / "with-device.tar"
    with tarfile.open(tarball, "w") as tar:
        node = tarfile.TarInfo("dev/sda")
        node.type, node.devmajor, node.devminor = tarfile.BLKTYPE, 8, 0
        tar.addfile(node)
    p = sandboxer("import", str(tarball), "sandboxer-test/with-device", check=True)
    assert "dev/sda: device 8:0 skipped" in p.stderr and p.stderr.startswith("sandboxer: notice: "), p.stderr
    sandboxer("rmi", "sandboxer-test/with-device", check=True)


def test_unknown_images_and_bad_names_fail_clearly(store: Path) -> None:
    p = sandboxer("run", "nope/nothing", "true")
    assert p.returncode == 125
    assert "no such image: nope/nothing:latest" in p.stderr and "hint:" in p.stderr
    p = sandboxer("run", "sh", "-c", "true")  # a command without '--' is read as an image name
    assert p.returncode == 125 and "to run a command on the host's root, put it after --" in p.stderr
    p = sandboxer("run", "Not_Valid", "true")
    assert p.returncode == 125 and "invalid image name" in p.stderr
    assert "Traceback" not in p.stderr


@needs_subids
def test_tag_rmi_and_prune(store: Path) -> None:
    from sandboxer.images.store import Store

    sandboxer("tag", BUSYBOX, "sandboxer-test/copy:v1", check=True)
    assert sandboxer("run", "sandboxer-test/copy:v1", "true").returncode == 0
    layers = os.listdir(Store().root + "/layers")
    p = sandboxer("rmi", "sandboxer-test/copy:v1", check=True)
    assert "Untagged: sandboxer-test/copy:v1" in p.stdout
    assert os.listdir(Store().root + "/layers") == layers  # still used by the original name
    assert sandboxer("run", "sandboxer-test/copy:v1", "true").returncode == 125
    inspect = sandboxer("image", "inspect", BUSYBOX, check=True).stdout
    assert '"RepoTags"' in inspect and "sandboxer-test/busybox:latest" in inspect


@needs_subids
def test_prune_never_removes_layers_of_a_running_sandbox(store: Path) -> None:
    import time

    from sandboxer.images.store import Store

    sandboxer("tag", BUSYBOX, "sandboxer-test/running", check=True)
    marker = "sleep 3333.25"
    proc = subprocess.Popen([*SANDBOXER, "run", "sandboxer-test/running", "sh", "-c", f"{marker}; echo done"],
                            stdout=subprocess.PIPE, text=True, stdin=subprocess.DEVNULL)
    try:
        time.sleep(1.0)
        sandboxer("rmi", "sandboxer-test/running", check=True)  # another name remains: only untagged
        refused = sandboxer("rmi", BUSYBOX)  # its last name, while a sandbox runs it
        assert refused.returncode == 125 and "is used by sandbox" in refused.stderr and "rmi -f" in refused.stderr
        sandboxer("rmi", "-f", BUSYBOX, check=True)  # now no image refers to the busybox layer
        assert len(os.listdir(Store().root + "/layers")) == 1, "a running sandbox's layer was pruned"
    finally:
        proc.kill()
        proc.wait()
        sandboxer("import", str(store / "busybox.tar"), BUSYBOX, check=True)  # restore for later tests
    sandboxer("image", "prune", check=True)


def test_prune_removes_what_killed_writers_left_in_staging(store: Path) -> None:
    """A killed pull leaves ``tmp/blob-PID-…``: prune removes it once no process, or a younger one
    (the PID reused), has that PID, and keeps what a live writer is writing."""
    import time

    tmp = store / "data" / "tmp"
    dead = subprocess.Popen(["true"])
    dead.wait()
    live = subprocess.Popen(["sleep", "60"])
    try:
        killed = tmp / f"blob-{dead.pid}-{'a' * 12}"
        writing = tmp / f"blob-{live.pid}-{'b' * 12}"
        reused = tmp / f"layer-{live.pid}-{'c' * 12}"
        for path in (killed, writing, reused):
            path.write_bytes(b"partial")
        os.utime(reused, (time.time() - 120, time.time() - 120))  # written before its PID's process started
        sandboxer("image", "prune", check=True)
        assert not killed.exists() and not reused.exists()
        assert writing.exists()
    finally:
        live.kill()
        live.wait()
    sandboxer("image", "prune", check=True)
    assert not writing.exists()


def test_transient_lock_files_go_and_a_waiter_locks_the_new_one(tmp_path: Path) -> None:
    """A per-object lock's file is removed by its holder; whoever was waiting on that file then
    locks the one at the path (never the removed one, alongside a third process)."""
    import threading
    import time

    from sandboxer.state import Lock

    path = str(tmp_path / "layer-x.lock")
    held = []
    first = Lock(path, transient=True)
    first.__enter__()

    def wait_then_hold() -> None:
        with Lock(path, transient=True):
            held.append(os.path.exists(path))  # the file it holds is the one at the path
            time.sleep(0.2)

    waiter = threading.Thread(target=wait_then_hold)
    waiter.start()
    time.sleep(0.1)  # the waiter has opened the first file and blocks on it
    first.__exit__()
    while not held:
        time.sleep(0.01)
    third = Lock(path, transient=True)
    started = time.monotonic()
    with third:  # must wait for the waiter: both on the file now at the path
        assert time.monotonic() - started > 0.1
    waiter.join()
    assert held == [True]
    assert not os.path.exists(path)


def test_prune_removes_lock_files_killed_holders_left(store: Path) -> None:
    import fcntl

    locks = store / "data" / "locks"
    left = locks / f"layer-{'d' * 64}.lock"
    left.write_bytes(b"")
    busy = locks / f"blob-{'e' * 64}.lock"
    fd = os.open(busy, os.O_RDWR | os.O_CREAT)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)  # a pull under way
        sandboxer("image", "prune", check=True)
        assert not left.exists() and busy.exists()
    finally:
        os.close(fd)
    sandboxer("image", "prune", check=True)
    assert not busy.exists()


@needs_subids
def test_rmi_refuses_an_image_a_detached_sandbox_restarts_from(store: Path) -> None:
    """As docker's: a detached sandbox, exited or not, restarts by its image's name, so ``rmi`` of that
    name is refused (naming the sandbox) unless forced."""
    name = f"rmi-user-{os.getpid()}"
    sandboxer("tag", BUSYBOX, "sandboxer-test/kept", check=True)
    sandboxer("run", "-d", "--name", name, "sandboxer-test/kept", "true", check=True)
    try:
        sandboxer("wait", name, check=True)
        p = sandboxer("rmi", "sandboxer-test/kept")
        assert p.returncode == 125 and f"used by sandbox {name}" in p.stderr, p.stderr
        assert sandboxer("restart", name).returncode == 0
    finally:
        sandboxer("rm", "-f", name, check=True)
    sandboxer("rmi", "sandboxer-test/kept", check=True)


@needs_subids
def test_corrupt_blob_is_detected_and_never_used(store: Path) -> None:
    from sandboxer.images.store import Store

    s = Store()
    sandboxer("tag", BUSYBOX, "sandboxer-test/corrupt", check=True)
    image = s.image("sandboxer-test/corrupt")
    path = s.blob_path(image.id)
    os.chmod(path, 0o600)
    with open(path, "ab") as f:
        f.write(b" ")
    p = sandboxer("run", "sandboxer-test/corrupt", "true")
    assert p.returncode == 125
    assert "was corrupt and has been removed" in p.stderr
    assert not os.path.exists(path)
    sandboxer("rmi", "sandboxer-test/corrupt", check=True)
    sandboxer("import", str(store / "busybox.tar"), BUSYBOX, check=True)  # the config blob is shared: restore


@needs_subids
def test_a_layer_is_checked_against_its_diff_id_as_it_unpacks(store: Path, tmp_path: Path) -> None:
    """The unpacker hashes the uncompressed tar as it reads it (end-of-archive blocks included): a gzip'd
    layer unpacks under the diff-id of its tar; a config naming another diff-id is refused after the
    unpack, from the same read, and nothing of the layer stays in the store."""
    import gzip
    import hashlib
    import shutil

    from sandboxer.images.store import Store, StoreError

    s = Store()
    plain = _layer(tmp_path / "layer.tar", {"etc/checked": "yes\n"})
    with open(plain, "rb") as src, gzip.open(tmp_path / "layer.tar.gz", "wb") as dst:
        shutil.copyfileobj(src, dst)
    with open(plain, "rb") as f:
        diff_id = "sha256:" + hashlib.sha256(f.read()).hexdigest()
    with open(tmp_path / "layer.tar.gz", "rb") as f:
        blob, _ = s.put_blob(f)
    wrong = "sha256:" + "0" * 64

    def layers_and_staging() -> tuple[list[str], list[str]]:
        return sorted(os.listdir(os.path.join(s.root, "layers"))), sorted(os.listdir(os.path.join(s.root, "tmp")))

    before = layers_and_staging()
    with pytest.raises(StoreError, match=f"unpacks to {diff_id[:19]}…, not {wrong[:19]}…"):
        s.ensure_layer(wrong, blob)
    assert layers_and_staging() == before
    path = s.ensure_layer(diff_id, blob)
    assert open(os.path.join(path, "etc", "checked")).read() == "yes\n"
    assert layers_and_staging()[0] == sorted([*before[0], diff_id.removeprefix("sha256:")])
    s.prune()
    # a blob that is gzip only in its first bytes: a store error naming the layer (as when a pass of its
    # own decompressed it first), and nothing left
    from sandboxer.images.layers import CORRUPT_HINT

    with open(tmp_path / "layer.tar.gz", "rb") as f:
        head = f.read(64)
    broken, _ = s.put_blob(io.BytesIO(head + b"\x00" * 4096))
    with pytest.raises(StoreError, match=f"layer {diff_id[:19]}: the tar stream is corrupt or truncated") as failed:
        s.ensure_layer(diff_id, broken)
    assert failed.value.hint == CORRUPT_HINT
    assert layers_and_staging() == before
    s.prune()


@needs_subids
def test_eight_parallel_imports_leave_one_consistent_copy(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    tarball = tmp_path / "busybox.tar"
    subprocess.run([sys.executable, str(ROOT / "images" / "busybox.py"), str(tarball)], check=True)
    data = tmp_path / "data"
    monkeypatch.setenv("SANDBOXER_DATA_DIR", str(data))
    procs = [subprocess.Popen([*SANDBOXER, "import", str(tarball), f"sandboxer-test/p{i % 2}"],
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for i in range(8)]
    results = [(p.wait(), p.stderr.read() if p.stderr else "") for p in procs]
    assert all(code == 0 for code, _ in results), results
    assert len(os.listdir(data / "layers")) == 1  # unpacked once
    from sandboxer.images.store import Store

    store = Store(str(data))
    layer_blobs = {str(store.image(f"sandboxer-test/p{i}").manifest["layers"][0]["digest"]) for i in (0, 1)}
    assert len(layer_blobs) == 1 and store.has_blob(layer_blobs.pop())
    assert os.listdir(data / "tmp") == []
    assert sandboxer("run", "sandboxer-test/p1", "true").returncode == 0


@needs_subids
def test_pytest_marker_and_fixture_with_an_image(store: Path, pytester: pytest.Pytester) -> None:
    pytester.makepyfile(f"""
        import os, subprocess, pytest

        @pytest.mark.sandbox(image="{BUSYBOX}")
        def test_in_image():
            assert os.path.exists("/bin/busybox")
            assert not os.path.exists("/etc/debian_version")   # the host's root is not there
            out = subprocess.run(["cat", "/etc/hostname"], capture_output=True, text=True).stdout
            assert out == "busybox\\n"
            import json, decimal   # the test's own Python still imports (its library is bound in)

        def test_fixture(sandbox_factory):
            box = sandbox_factory(image="{BUSYBOX}")
            box.write_file("/root/note", "kept between commands")
            assert box.run(["cat", "/root/note"], text=True).stdout == "kept between commands"
            assert box.run(["cat", "/etc/hostname"], text=True).stdout == "busybox\\n"

        @pytest.mark.sandbox(image="sandboxer-test/not-there")
        def test_missing_image():
            pass
    """)
    pytester.makeini("[pytest]\nsandbox_unavailable = skip\n")  # a missing image fails all the same
    result = pytester.runpytest_subprocess("-p", "no:cacheprovider")
    assert result.parseoutcomes() == {"passed": 2, "failed": 1}, result.stdout.str()
    assert "no such image: sandboxer-test/not-there:latest" in result.stdout.str()


def test_bad_image_keyword_is_a_collection_error(pytester: pytest.Pytester) -> None:
    pytester.makepyfile("""
        import pytest

        @pytest.mark.sandbox(image="Not An Image")
        def test_x():
            pass
    """)
    result = pytester.runpytest_subprocess("-p", "no:cacheprovider")
    assert result.ret == 4
    assert "image" in result.stderr.str()


@needs_subids
def test_python_image_from_the_recipe(store: Path) -> None:
    tarball = store / "python.tar"
    subprocess.run([sys.executable, str(ROOT / "images" / "python.py"), str(tarball)], check=True)
    try:
        sandboxer("import", str(tarball), "sandboxer-test/python", check=True)
    finally:
        tarball.unlink()
    p = sandboxer("run", "sandboxer-test/python", "python3", "-c",
                  "import sys, json, sqlite3, ssl, ctypes; print(sys.version_info[:2]); open('/etc/x', 'w')",
                  check=True)
    assert p.stdout.startswith("(3, "), p.stdout  # Debian's python3, whatever runs these tests
    sandboxer("rmi", "sandboxer-test/python", check=True)


@pytest.mark.skipif(os.getuid() == 0, reason="the unprivileged user's own mount namespace makes the small disk")
def test_a_full_disk_is_one_clear_line_and_changes_nothing(store: Path, tmp_path: Path) -> None:
    disk = tmp_path / "disk"
    disk.mkdir()
    script = (f'mount -t tmpfs -o size=512k tmpfs "{disk}" && SANDBOXER_DATA_DIR="{disk}/store" '
              f'{" ".join(SANDBOXER)} import "{store / "busybox.tar"}" sandboxer-test/full; echo "rc=$?"; '
              f'ls "{disk}/store/tmp" "{disk}/store/blobs/sha256"; test -e "{disk}/store/index.json" && echo indexed')
    p = subprocess.run(["unshare", "-rm", "sh", "-c", script], capture_output=True, text=True, timeout=60)
    assert "rc=125" in p.stdout, p.stdout + p.stderr
    assert "no space left on the device of the image store" in p.stderr and "hint:" in p.stderr
    assert "Traceback" not in p.stderr
    assert "indexed" not in p.stdout  # nothing was named
    listed = p.stdout.split("rc=125", 1)[1].split()
    assert [entry for entry in listed if not entry.endswith(":")] == []  # no partial blob, nothing staged
