"""The rootless layer applier: hostile layers are refused, good ones land exactly, every driver reads whiteouts.

Runs as an unprivileged user (the point) and as root.  Ownership beyond the
caller's own id needs a subordinate id range, or root.
"""

from __future__ import annotations

import importlib.util
import io
import os
import pickle
import stat
import struct
import subprocess
import sys
import tarfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from conftest import needs_subids

from sandboxer.images.layers import MAX_MEMBER_SIZE, OPAQUE_XATTR, LayerError, LayerStats, apply_layer
from sandboxer.runtime.userns import default_idmap, run_as_mapped_root
from sandboxer.state import remove_tree

MTIME = 1_600_000_000
DIR_MTIME = 1_500_000_000
HOSTILE_HINT = "malformed or hostile"
Member = tuple[tarfile.TarInfo, bytes]


# -- helpers ------------------------------------------------------------------

def member(name: str, kind: bytes = tarfile.REGTYPE, data: bytes = b"", **attrs: object) -> Member:
    """One crafted tar member; data is stored only for regular files."""
    ti = tarfile.TarInfo(name)
    ti.type = kind
    ti.mode = 0o755 if kind == tarfile.DIRTYPE else 0o644
    ti.mtime = MTIME
    ti.size = len(data)
    for key, value in attrs.items():
        setattr(ti, key, value)
    return ti, data


def write_tar(path: Path, members: list[Member], compression: str = "") -> Path:
    mode = f"w:{compression}" if compression else "w"
    with tarfile.open(path, mode, format=tarfile.PAX_FORMAT) as tf:  # type: ignore[call-overload]
        for ti, data in members:
            tf.addfile(ti, io.BytesIO(data) if ti.isreg() and data else None)
    return path


def gnu_sparse_tar(path: Path, name: str, apparent: int) -> Path:
    """An old-GNU sparse member ('S') by hand: tarfile reads them but cannot write them."""
    ti = tarfile.TarInfo(name)
    ti.size = 512
    header = bytearray(ti.tobuf(format=tarfile.GNU_FORMAT))
    header[156:157] = b"S"
    header[386:398] = b"%011o\0" % 0      # first data block: offset 0 ...
    header[398:410] = b"%011o\0" % 512    # ... 512 bytes long
    header[483:495] = b"\x80" + apparent.to_bytes(11, "big")  # the real size, base-256
    header[148:156] = b" " * 8
    header[148:155] = b"%06o\0" % sum(header)
    path.write_bytes(bytes(header) + b"x" * 512 + b"\0" * 1024)
    return path


def in_userns(fn: Callable[..., object], *args: object) -> object:
    """``fn(*args)`` as root of a user namespace mapped like a sandbox's; returns its (small) result."""
    r, w = os.pipe()

    def child() -> None:
        try:
            out: tuple[str, object] = ("ok", fn(*args))
        except BaseException as e:
            out = ("error", f"{type(e).__name__}: {e}")
        os.write(w, pickle.dumps(out))

    try:
        run_as_mapped_root(child)
    finally:
        os.close(w)
    with os.fdopen(r, "rb") as f:
        data = f.read()
    assert data, "the user namespace child died"
    status, value = pickle.loads(data)
    assert status == "ok", value
    return value


def host_id(ns_id: int) -> int:
    """Where an id of the sandbox's namespace lands on the host."""
    for m in default_idmap().uids:
        if m.container_id <= ns_id < m.container_id + m.size:
            return m.host_id + ns_id - m.container_id
    raise AssertionError(f"uid {ns_id} is not mapped")


@pytest.fixture
def work(tmp_path: Path) -> Iterator[Path]:
    """tmp_path, emptied afterwards from inside the namespace: layers hold files of subordinate ids."""
    yield tmp_path
    for entry in tmp_path.iterdir():
        remove_tree(str(entry))


def unpack(work: Path, name: str, members: list[Member], compression: str = "") -> tuple[Path, LayerStats]:
    dest = work / name
    dest.mkdir()
    layer = write_tar(work / f"{name}.tar", members, compression)
    return dest, apply_layer(str(layer), str(dest), label=f"sha256:{name}")


# -- hostile layers -----------------------------------------------------------

def _hostile_cases(outside: Path) -> dict[str, list[Member]]:
    sym, lnk, d = tarfile.SYMTYPE, tarfile.LNKTYPE, tarfile.DIRTYPE
    return {
        "absolute": [member(str(outside / "abs"), data=b"x")],
        "dotdot": [member("../escape", data=b"x")],
        "nested-dotdot": [member("a/", d), member("a/../../x", data=b"x")],
        "write-through-symlink": [member("link", sym, linkname=str(outside)), member("link/file", data=b"x")],
        "write-through-symlink-up": [member("link", sym, linkname=".."), member("link/x", data=b"x")],
        "dir-replaced-by-symlink-then-write-through": [member("d/x", data=b"x"), member("d/y", data=b"y"),
                                                      member("d", sym, linkname=str(outside)),
                                                      member("d/z", data=b"x")],
        "mkdir-through-deep-symlink": [member("d/link", sym, linkname=str(outside)), member("d/link/sub", d)],
        "hardlink-absolute": [member("h", lnk, linkname="/etc/passwd")],
        "hardlink-dotdot": [member("h", lnk, linkname="../x")],
        "hardlink-through-symlink": [member("link", sym, linkname=str(outside)),
                                     member("h", lnk, linkname="link/victim")],
        "hardlink-missing": [member("h", lnk, linkname="not/there")],
        "hardlink-to-dir": [member("d/", d), member("h", lnk, linkname="d")],
        "newline-in-name": [member("bad\nname", data=b"x")],
        "escape-sequence-in-name": [member("x\x1b[2Jy", data=b"x")],
        "nul-in-name": [member("a_b", data=b"x", pax_headers={"path": "evil\x00name"})],
        "sparse-pax-1EiB": [member("big", data=b"x" * 512,
                                   pax_headers={"GNU.sparse.map": "0,512", "GNU.sparse.size": str(1 << 60)})],
        "huge-declared-size": [member("huge", size=1 << 62)],
        "uid-4000000000": [member("f", data=b"x", uid=4_000_000_000)],
        "gid-70000": [member("f", data=b"x", gid=70_000)],
        "root-as-file": [member("./", data=b"x")],
        "root-as-symlink": [member(".", sym, linkname=str(outside))],
        "through-fifo": [member("p", tarfile.FIFOTYPE), member("p/x", data=b"x")],
        "whiteout-dotdot": [member("a/.wh...", data=b"")],
    }


HOSTILE = sorted(_hostile_cases(Path("/x")))


@pytest.mark.parametrize("case", [*HOSTILE, "sparse-gnu-1EiB"])
def test_hostile_layer_is_refused_and_nothing_escapes(work: Path, case: str) -> None:
    outside = work / "outside"
    outside.mkdir()
    (outside / "victim").write_text("orig")
    dest = work / "dest"
    dest.mkdir()
    if case == "sparse-gnu-1EiB":
        layer, name = gnu_sparse_tar(work / "layer.tar", "big", 1 << 60), "big"
    else:
        members = _hostile_cases(outside)[case]
        last = members[-1][0]
        layer, name = write_tar(work / "layer.tar", members), last.pax_headers.get("path", last.name)
    with pytest.raises(LayerError) as info:
        apply_layer(str(layer), str(dest), label="sha256:bad")
    err = info.value
    assert "sha256:bad" in str(err) and repr(name) in str(err), str(err)
    assert "\n" not in str(err) and err.hint
    assert HOSTILE_HINT in err.hint or "/etc/sub" in err.hint
    assert sorted(p.name for p in work.iterdir()) == ["dest", "layer.tar", "outside"]
    assert [p.name for p in outside.iterdir()] == ["victim"]
    assert (outside / "victim").read_text() == "orig" and (outside / "victim").stat().st_nlink == 1


def test_refusal_messages_say_what_is_wrong(work: Path) -> None:
    outside = work / "outside"
    outside.mkdir()
    cases = _hostile_cases(outside)
    expected = {"absolute": "absolute", "dotdot": "'..'", "write-through-symlink": "symlink 'link'",
                "hardlink-missing": "does not exist earlier", "sparse-pax-1EiB": "over the limit",
                "uid-4000000000": "uid 4000000000", "nul-in-name": "NUL", "root-as-file": "root directory"}
    for case, words in expected.items():
        dest = work / f"d-{case}"
        dest.mkdir()
        with pytest.raises(LayerError, match=words):
            apply_layer(str(write_tar(work / f"{case}.tar", cases[case])), str(dest))
    assert MAX_MEMBER_SIZE < 1 << 60


def test_unusable_input_is_a_clear_error(work: Path) -> None:
    dest = work / "dest"
    dest.mkdir()
    (dest / "junk").touch()
    good = write_tar(work / "good.tar", [member("f", data=b"x")], "gz")
    with pytest.raises(LayerError, match="not empty"):
        apply_layer(str(good), str(dest))
    (dest / "junk").unlink()
    truncated = work / "truncated.tar.gz"
    truncated.write_bytes(good.read_bytes()[:40])
    with pytest.raises(LayerError, match="corrupt or truncated") as info:
        apply_layer(str(truncated), str(dest))
    assert info.value.hint and "pull it again" in info.value.hint
    zst = work / "layer.tar.zst"
    zst.write_bytes(b"\x28\xb5\x2f\xfd" + b"\0" * 64)
    if importlib.util.find_spec("zstandard") is None:
        with pytest.raises(LayerError, match="zstandard") as info:
            apply_layer(str(zst), str(dest))
        assert info.value.hint and "pip install zstandard" in info.value.hint


# -- good layers --------------------------------------------------------------

CAP_NET_RAW_V2 = struct.pack("<IIIII", 0x02000001, 1 << 13, 0, 0, 0)


def _good_members() -> list[Member]:
    d, sym = tarfile.DIRTYPE, tarfile.SYMTYPE
    return [
        member("./", d, mode=0o700),
        member("etc/", d),
        member("etc/owned", data=b"a", uid=1000, gid=1000),
        member("etc/rootfile", data=b"r", mode=0o600),
        member("bin/su", data=b"#!", mode=0o4755,
               pax_headers={"SCHILY.xattr.user.note": "hello", "SCHILY.xattr.trusted.secret": "x",
                            "SCHILY.xattr.user.overlay.opaque": "y"}),
        member("bin/ping", data=b"p", mode=0o755,
               pax_headers={"SCHILY.xattr.security.capability": CAP_NET_RAW_V2.decode("latin-1")}),
        member("bin/sgid", data=b"g", mode=0o2755, gid=1000),
        member("bin/su-link", tarfile.LNKTYPE, linkname="bin/su"),
        member("tmp/", d, mode=0o1777),
        member("abs", sym, linkname="/etc/passwd"),
        member("rel", sym, linkname="../etc/owned"),
        member("ro/", d, mode=0o555, mtime=DIR_MTIME),
        member("ro/inside", data=b"i"),
        member("ro/sub/deeper", data=b"d"),
        member("fifo", tarfile.FIFOTYPE, mode=0o640),
        member("dev/null", tarfile.CHRTYPE, devmajor=1, devminor=3),
    ]


def _describe(root: str) -> dict[str, object]:
    """What the namespace's root sees of an unpacked layer."""
    out: dict[str, object] = {}
    for dirpath, dirnames, filenames in os.walk(root):
        for name in dirnames + filenames:
            path = os.path.join(dirpath, name)
            st = os.lstat(path)
            rel = os.path.relpath(path, root)
            info: dict[str, object] = {"uid": st.st_uid, "gid": st.st_gid, "mode": st.st_mode,
                                       "mtime": st.st_mtime_ns // 10**9, "ino": st.st_ino, "nlink": st.st_nlink}
            if stat.S_ISLNK(st.st_mode):
                info["target"] = os.readlink(path)
            else:
                info["xattrs"] = {x: os.getxattr(path, x) for x in os.listxattr(path)}
            out[rel] = info
    return out


@needs_subids
@pytest.mark.parametrize("compression", ["", "gz", "bz2", "xz"])
def test_good_layer_keeps_owners_modes_links_xattrs_and_times(work: Path, compression: str) -> None:
    dest, stats = unpack(work, "layer", _good_members(), compression)
    seen = in_userns(_describe, str(dest))
    assert isinstance(seen, dict)
    assert seen["etc/owned"]["uid"] == seen["etc/owned"]["gid"] == 1000
    assert os.lstat(dest / "etc/owned").st_uid == host_id(1000)  # e.g. 100999 with the range 100000:65536
    assert os.lstat(dest / "etc/rootfile").st_uid == os.getuid()
    assert seen["etc/rootfile"]["uid"] == 0 and stat.S_IMODE(seen["etc/rootfile"]["mode"]) == 0o600
    assert stat.S_IMODE(seen["bin/su"]["mode"]) == 0o4755
    assert stat.S_IMODE(seen["bin/sgid"]["mode"]) == 0o2755 and seen["bin/sgid"]["gid"] == 1000
    assert stat.S_IMODE(seen["tmp"]["mode"]) == 0o1777
    assert seen["bin/su"]["xattrs"] == {"user.note": b"hello"}  # not trusted.*, not the drivers' own
    caps = seen["bin/ping"]["xattrs"]["security.capability"]
    assert struct.unpack_from("<I", caps, 4)[0] == 1 << 13  # still CAP_NET_RAW, as v2 or v3
    assert seen["bin/su-link"]["ino"] == seen["bin/su"]["ino"] and seen["bin/su"]["nlink"] == 2
    assert seen["abs"]["target"] == "/etc/passwd" and seen["rel"]["target"] == "../etc/owned"
    assert stat.S_IMODE(seen["ro"]["mode"]) == 0o555 and "ro/sub/deeper" in seen
    assert seen["ro"]["mtime"] == DIR_MTIME
    assert {seen[p]["mtime"] for p in ("etc/owned", "bin/su", "abs", "fifo", "etc")} == {MTIME}
    assert stat.S_ISFIFO(seen["fifo"]["mode"]) and stat.S_IMODE(seen["fifo"]["mode"]) == 0o640
    assert "dev/null" not in seen
    assert stat.S_IMODE(dest.stat().st_mode) == 0o755 and dest.stat().st_uid == os.getuid()  # "./" left alone
    assert (stats.files, stats.dirs, stats.symlinks, stats.hardlinks, stats.skipped_devices) == (8, 3, 2, 1, 1)
    notes = " ".join(stats.notes)
    assert "dev/null" in notes and "trusted.secret" in notes and "user.overlay.opaque" in notes


def test_whiteouts_and_opaque_dirs_on_disk(work: Path) -> None:
    d = tarfile.DIRTYPE
    dest, stats = unpack(work, "layer", [
        member("a/.wh.gone"),
        member("b/.wh..wh..opq"),
        member("b/new", data=b"n"),
        member(".wh.x"), member("x/", d),              # deleted below, made anew here: opaque
        member("y/", d), member(".wh.y"),              # the same, in the other order
        member("z", data=b"z"), member(".wh.z"),       # a file hides the lower one anyway
        member(".wh.w"), member("w/f", data=b"f"),     # through a whiteout as an implicit parent
        member(".wh..wh.plnk"),                        # aufs metadata
    ])
    gone = os.lstat(dest / "a/gone")
    assert stat.S_ISCHR(gone.st_mode) and gone.st_rdev == 0
    for opaque in ("b", "x", "y", "w"):
        assert os.getxattr(dest / opaque, OPAQUE_XATTR) == b"y", opaque
    assert (dest / "z").read_text() == "z" and (dest / "w/f").read_text() == "f"
    assert OPAQUE_XATTR not in os.listxattr(dest / "a")
    assert not (dest / ".wh.plnk").exists() and not any(p.name.startswith(".wh.") for p in dest.rglob("*"))
    assert (stats.whiteouts, stats.opaque_dirs) == (5, 4)


def test_later_duplicates_replace_earlier_entries(work: Path) -> None:
    d, sym = tarfile.DIRTYPE, tarfile.SYMTYPE
    dest, _ = unpack(work, "layer", [
        member("f", data=b"one"), member("f", data=b"two"),
        member("d/", d, mode=0o700), member("d/a", data=b"a"), member("d/", d, mode=0o750),
        member("x/", d), member("x/inner", data=b"i"), member("x", sym, linkname="/nowhere"),
        member("s", sym, linkname="/nowhere"), member("s", data=b"s"),
        member("t", data=b"t"), member("t/", d, mode=0o711),
    ])
    assert (dest / "f").read_text() == "two"
    assert (dest / "d/a").read_text() == "a" and stat.S_IMODE((dest / "d").stat().st_mode) == 0o750
    assert os.readlink(dest / "x") == "/nowhere"
    assert (dest / "s").read_text() == "s" and not (dest / "s").is_symlink()
    assert (dest / "t").is_dir() and stat.S_IMODE((dest / "t").stat().st_mode) == 0o711


def test_odd_but_harmless_members_are_accepted(work: Path) -> None:
    dest, stats = unpack(work, "layer", [
        member("./a//b/./c", data=b"c", mtime=10**30),  # absurd mtime: clamped, not an error
        member("old", data=b"o", mtime=-86400),
        member("caf\udcff", data=b"latin-1"),           # not UTF-8: kept as bytes
        member("self", data=b"s"), member("self", tarfile.LNKTYPE, linkname="./self"),
        member("label", b"V"),                          # a GNU volume label
    ])
    assert (dest / "a/b/c").read_text() == "c" and os.lstat(dest / "old").st_mtime == -86400
    assert b"caf\xff" in os.listdir(bytes(dest)) and (dest / "self").read_text() == "s"
    assert not (dest / "label").exists() and any("unsupported member type" in n for n in stats.notes)


def test_sparse_member_keeps_its_holes(work: Path) -> None:
    size = 64 << 20
    dest, _ = unpack(work, "layer", [member("sparse", data=b"x" * 512, pax_headers={
        "GNU.sparse.map": f"0,256,{size - 256},256", "GNU.sparse.size": str(size)})])
    st = (dest / "sparse").stat()
    assert st.st_size == size and st.st_blocks * 512 < 1 << 20
    with open(dest / "sparse", "rb") as f:
        assert f.read(256) == b"x" * 256 and f.read(256) == b"\0" * 256
        f.seek(size - 256)
        assert f.read() == b"x" * 256


# -- whiteouts through real mounts ---------------------------------------------

def _mount_and_look(driver_name: str, lowers: list[str], scratch: str, target: str) -> dict[str, object]:
    """In a private mount namespace: mount the layers with the driver, report what shows."""
    from sandboxer import syscalls
    from sandboxer.storage.copy import CopySnapshotter
    from sandboxer.storage.fuse import FuseOverlay
    from sandboxer.storage.overlay import KernelOverlay

    syscalls.unshare(syscalls.CLONE_NEWNS)
    syscalls.mount(None, "/", None, syscalls.MS_REC | syscalls.MS_PRIVATE)
    driver = {"overlay": KernelOverlay, "fuse-overlayfs": FuseOverlay, "copy": CopySnapshotter}[driver_name]()
    driver.unusable_reason("layers")
    os.mkdir(scratch)
    os.mkdir(target)
    driver.mount(lowers, scratch, target)
    seen: dict[str, object] = {p: os.path.lexists(os.path.join(target, p))
                               for p in ("a/keep", "a/gone", "b/old", "b/new", "c/file", "c/old")}
    seen["keep"] = open(os.path.join(target, "a/keep")).read()
    seen["c-is-dir"] = stat.S_ISDIR(os.lstat(os.path.join(target, "c")).st_mode)
    return seen


@pytest.mark.parametrize("driver", ["overlay", "fuse-overlayfs", "copy"])
def test_whiteouts_and_opaque_dirs_through_a_real_mount(work: Path, driver: str) -> None:
    from sandboxer.storage import RootfsKind
    from sandboxer.storage.fuse import FuseOverlay
    from sandboxer.storage.overlay import KernelOverlay

    usable = {"overlay": KernelOverlay, "fuse-overlayfs": FuseOverlay}.get(driver)
    if usable is not None and (reason := usable().unusable_reason(RootfsKind.LAYERS)):
        pytest.skip(reason)
    outside = work / "outside"
    outside.mkdir()
    sym = tarfile.SYMTYPE
    l1, _ = unpack(work, "l1", [member("a/keep", data=b"kept"), member("a/gone", data=b"x"),
                                member("b/old", data=b"x"), member("c", sym, linkname=str(outside))])
    l2, _ = unpack(work, "l2", [member("a/.wh.gone"), member("b/.wh..wh..opq"), member("b/new", data=b"n"),
                                member("c/file", data=b"f")])
    seen = in_userns(_mount_and_look, driver, [str(l2), str(l1)], str(work / "scratch"), str(work / "target"))
    assert seen == {"a/keep": True, "a/gone": False, "b/old": False, "b/new": True, "c/file": True,
                    "c/old": False, "keep": "kept", "c-is-dir": True}
    assert list(outside.iterdir()) == []


def _merge_and_describe(lowers: list[str], scratch: str) -> dict[str, object]:
    from sandboxer.storage.copy import merge_layer

    os.mkdir(scratch)
    for layer in reversed(lowers):
        merge_layer(layer, scratch)
    return _describe(scratch)


@needs_subids
def test_copy_snapshotter_keeps_what_the_layers_say(work: Path) -> None:
    d = tarfile.DIRTYPE
    l1, _ = unpack(work, "l1", _good_members())
    l2, _ = unpack(work, "l2", [member("ro/", d, mode=0o500, uid=1000, mtime=DIR_MTIME),
                                member("ro/inside", data=b"new", uid=1000, mode=0o4711)])
    seen = in_userns(_merge_and_describe, [str(l2), str(l1)], str(work / "merged"))
    assert isinstance(seen, dict)
    assert seen["etc/owned"]["uid"] == 1000 and stat.S_IMODE(seen["bin/su"]["mode"]) == 0o4755
    assert seen["bin/su-link"]["ino"] == seen["bin/su"]["ino"]
    assert seen["bin/su"]["xattrs"] == {"user.note": b"hello"}
    assert stat.S_IMODE(seen["ro"]["mode"]) == 0o500 and seen["ro"]["uid"] == 1000
    assert seen["ro"]["mtime"] == DIR_MTIME and "ro/sub/deeper" in seen
    assert stat.S_IMODE(seen["ro/inside"]["mode"]) == 0o4711 and seen["ro/inside"]["uid"] == 1000
    assert stat.S_ISFIFO(seen["fifo"]["mode"])


# -- streaming and speed ------------------------------------------------------

class _Zeros(io.RawIOBase):
    """``size`` zero bytes, produced on demand."""

    def __init__(self, size: int) -> None:
        self.left = size

    def readable(self) -> bool:
        return True

    def readinto(self, b: bytearray | memoryview) -> int:  # type: ignore[override]
        n = min(len(b), self.left)
        b[:n] = bytes(n)
        self.left -= n
        return n


_PEAK_RSS = """
import resource, sys
from sandboxer.images.layers import apply_layer
apply_layer(sys.argv[1], sys.argv[2])
print(resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss)
"""


def test_a_200mb_layer_is_streamed(work: Path) -> None:
    size = 200 << 20
    ti = tarfile.TarInfo("big")
    ti.size = size
    layer = work / "big.tar.gz"
    with tarfile.open(layer, "w:gz", compresslevel=1) as tf:
        tf.addfile(ti, io.BufferedReader(_Zeros(size), 1 << 20))
    dest = work / "dest"
    dest.mkdir()
    out = subprocess.run([sys.executable, "-c", _PEAK_RSS, str(layer), str(dest)],
                         capture_output=True, text=True, timeout=60, check=True)
    peak_kib = int(out.stdout.split()[-1])
    assert peak_kib < 80 * 1024, f"the unpacker peaked at {peak_kib} KiB"
    assert (dest / "big").stat().st_size == size


def test_ten_thousand_files_unpack_in_seconds(work: Path) -> None:
    layer = write_tar(work / "layer.tar.gz", [member(f"d{i // 100}/f{i}", data=b"x" * (i % 300))
                                              for i in range(10_000)], "gz")
    dest = work / "dest"
    dest.mkdir()
    start = time.monotonic()
    stats = apply_layer(str(layer), str(dest))
    took = time.monotonic() - start
    assert stats.files == 10_000 and stats.dirs == 0
    assert took < 10, f"10k files took {took:.1f} s (about 1 s on an idle 2-core VM)"
