"""``sandboxer build``: Containerfiles built rootless into a private store, run the way a user runs them."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import signal
import subprocess
import sys
import tarfile
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from conftest import SANDBOXER, busybox_store, needs_subids, sandboxer, state_entries

ROOT = Path(__file__).resolve().parent.parent
BUSYBOX = "sandboxer-test/busybox"
DEMO = "sandboxer-test/demo"

pytestmark = pytest.mark.skipif(not os.path.exists("/bin/busybox"), reason="needs busybox-static")


@pytest.fixture(scope="module")
def store(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """A store of this module's own, holding the busybox image built from images/busybox.py."""
    with busybox_store(tmp_path_factory) as root:
        yield root / "data"


def _context(path: Path, containerfile: str, files: dict[str, str] | None = None) -> Path:
    path.mkdir(parents=True, exist_ok=True)
    (path / "Containerfile").write_text(containerfile)
    for name, text in (files or {}).items():
        (path / name).parent.mkdir(parents=True, exist_ok=True)
        (path / name).write_text(text)
    return path


def _build(*args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    return sandboxer("build", *args, check=check, timeout=120)


def _image_id(proc: subprocess.CompletedProcess[str]) -> str:
    last = proc.stdout.splitlines()[-1]
    assert last.startswith("sha256:") and len(last) == 71, proc.stdout
    return last


def _layer_members(store: Path, image: str) -> list[list[str]]:
    """The member names of each layer of ``image``, bottom first."""
    from sandboxer.images.store import Store

    s = Store(str(store))
    out = []
    for layer in s.image(image).manifest["layers"]:
        with tarfile.open(s.blob_path(layer["digest"])) as tar:
            out.append(tar.getnames())
    return out


# -- the parser ----------------------------------------------------------------------------------


def test_containerfile_syntax_as_docker_reads_it() -> None:
    from sandboxer.images.containerfile import expand_word, parse, split_words

    text = ("# syntax=docker/dockerfile:1\n"
            "ARG BASE=busybox\n"
            "from ${BASE}\n"
            "# a comment\n"
            "Env A=1 B=\"two words\" \\\n"
            "    # a comment inside a continuation\n"
            "    C=3\n"
            "RUN echo hi \\\n"
            "  && echo there\n"
            "CMD [\"sh\", \"-c\", \"echo $A\"]\n"
            "ENTRYPOINT [\"not json\"\n"
            "COPY --chown=tester:tester a b /app/\n")
    ins = parse(text, "CF")
    assert [(i.keyword, i.line) for i in ins] == [("ARG", 2), ("FROM", 3), ("ENV", 5), ("RUN", 8), ("CMD", 10),
                                                  ("ENTRYPOINT", 11), ("COPY", 12)]
    assert ins[2].args == 'A=1 B="two words"     C=3'
    assert ins[3].exec_form is None and ins[3].args == "echo hi   && echo there"
    assert ins[4].exec_form == ["sh", "-c", "echo $A"]
    assert ins[5].exec_form is None  # not valid JSON: the shell form, as Docker decides
    assert ins[6].flags == {"chown": "tester:tester"} and ins[6].args == "a b /app/"
    env = {"A": "1", "EMPTY": ""}
    cases = {"$A": "1", "${A}x": "1x", "${NOPE:-d}": "d", "${EMPTY:-d}": "d", "${EMPTY-d}": "",
             "${A:+alt}": "alt", "${NOPE:+alt}": "", "'$A'": "$A", '"$A b"': "1 b", r"\$A": "$A",
             r"a\ b": "a b", "${NOPE:-${A}x}": "1x"}
    assert {word: expand_word(word, env) for word in cases} == cases
    assert split_words("A=1 B=\"x y\" C='p q'") == ["A=1", 'B="x y"', "C='p q'"]


@pytest.mark.parametrize(("text", "message"), [
    ("FROM a\nHEALTHCHECK CMD true\n", "CF:2: HEALTHCHECK: health checks are not supported"),
    ("FROM a\nONBUILD RUN true\n", "CF:2: ONBUILD: ONBUILD triggers are not supported"),
    ("FROM a AS build\n", "CF:1: FROM: multi-stage builds (FROM ... AS NAME) are not supported"),
    ("FROM a\nCOPY --from=build /x /y\n", "CF:2: COPY --from: multi-stage builds"),
    ("FROM a\n\nFROBNICATE x\n", "CF:3: unknown instruction 'FROBNICATE'"),
    ("FROM a\nCOPY onlyone\n", "CF:2: COPY: needs at least one source and a destination"),
    ("FROM a\nENV A\n", "CF:2: ENV: 'A': a value is missing"),
    ("FROM a\nRUN echo \\\n", "CF:2: the last instruction ends with a line continuation"),
    ("FROM a\nENV A=\"unterminated\n", "CF:2: unterminated \" quote"),
    ("FROM a\nCOPY --bogus=1 x y\n", "CF:2: COPY: unknown flag --bogus"),
    ("FROM a\nRUN true\nEXPOSE 80 abc\n", "CF:3: EXPOSE: invalid port 'abc'"),  # at parse time, before any RUN
    ("FROM a\nEXPOSE 70000\n", "CF:2: EXPOSE: invalid port '70000'"),
])
def test_containerfile_errors_name_file_line_and_instruction(text: str, message: str) -> None:
    from sandboxer.images.containerfile import ContainerfileError, parse

    with pytest.raises(ContainerfileError) as err:
        parse(text, "CF")
    assert str(err.value).startswith(message), str(err.value)


def test_ignore_rules_follow_dockerignore() -> None:
    from sandboxer.images.ignore import IgnoreRules

    rules = IgnoreRules(["# comment", "*.log", "/build", "secret/", "!secret/keep.txt", "**/cache", "docs/*.md",
                         "!docs/README.md"])
    excluded = {p: rules.excluded(p) for p in (
        "a.log", "sub/a.log", "build", "build/x", "secret", "secret/key", "secret/keep.txt", "src/x/cache",
        "cache/file", "docs/a.md", "docs/README.md", "docs/x/a.md", "main.py")}
    assert excluded == {"a.log": True, "sub/a.log": False, "build": True, "build/x": True, "secret": True,
                        "secret/key": True, "secret/keep.txt": False, "src/x/cache": True, "cache/file": True,
                        "docs/a.md": True, "docs/README.md": False, "docs/x/a.md": False, "main.py": False}


# -- whole builds ---------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def demo(store: Path) -> subprocess.CompletedProcess[str]:
    """images/demo built once, with the output of that first build."""
    return _build("-t", DEMO, str(ROOT / "images" / "demo"))


@needs_subids
def test_demo_build_applies_every_instruction(store: Path, demo: subprocess.CompletedProcess[str],
                                              tmp_path: Path) -> None:
    lines = demo.stdout.splitlines()
    assert lines[0] == "STEP 1/12: FROM ${BASE}"
    assert sum(line.startswith("STEP ") for line in lines) == 12
    assert "Using cache" not in demo.stdout
    assert f"Successfully tagged {DEMO}:latest" in lines
    image_id = _image_id(demo)

    # ENTRYPOINT + CMD, USER, WORKDIR, ENV (with the ARG's default substituted)
    assert sandboxer("run", DEMO, check=True).stdout == \
        "hello from the demo: hello, world! (I am tester in /srv/app)\n"
    assert "hello, you there!" in sandboxer("run", DEMO, "you", "there", check=True).stdout

    config = json.loads(sandboxer("image", "inspect", DEMO, check=True).stdout)[0]["Config"]
    assert config["config"]["Labels"]["org.opencontainers.image.title"] == "sandboxer demo"
    assert config["config"]["ExposedPorts"] == {"8080/tcp": {}, "9000/udp": {}}
    assert config["config"]["User"] == "tester" and config["config"]["WorkingDir"] == "/srv/app"
    canonical = json.dumps(config, separators=(",", ":"), sort_keys=True).encode()
    assert image_id == f"sha256:{hashlib.sha256(canonical).hexdigest()}"
    ours = config["history"][1:]
    assert [h.get("empty_layer", False) for h in ours] == [
        True, True, True, True, False, False, False, False, True, True, True]
    assert ours[0]["created_by"] == "ARG GREETING=hello"
    assert ours[5]["created_by"] == "COPY --chown=tester:tester greet.sh /srv/app/"

    # the deletions are whiteouts in the layers of the RUN steps
    members = _layer_members(store, DEMO)
    assert "etc/.wh.hostname" in members[3]                    # a file of the base image
    assert "var/cache/demo/scratch" in members[3] and "var/cache/.wh.demo" in members[4]  # one of ours

    # look inside as root: a child image that keeps everything but the user and the entrypoint
    probe = _context(tmp_path / "probe", f"FROM {DEMO}\nUSER root\nENTRYPOINT []\nCMD [\"sh\"]\n")
    quiet = _build("-q", "-t", "sandboxer-test/demo-probe", str(probe))
    assert quiet.stdout == f"{_image_id(quiet)}\n"
    p = sandboxer("run", "sandboxer-test/demo-probe", "sh", "-c",
                  "ls -ln greet.sh build-info | awk '{print $1, $3, $4, $NF}'; cat build-info; "
                  "test -e /etc/hostname || echo hostname-gone; test -e /var/cache/demo || echo cache-gone; "
                  "echo $APP_HOME; echo ${GREETING:-no GREETING at run time}", check=True)
    assert p.stdout.splitlines() == [
        "-rw-r--r-- 1000 1000 build-info",     # chown'd by a RUN
        "-rwxr-xr-x 1000 1000 greet.sh",       # COPY --chown=tester:tester kept the mode
        "built with GREETING=hello",           # the ARG was in RUN's environment
        "hostname-gone", "cache-gone",
        "/srv/app", "no GREETING at run time",  # an ARG is not part of the image's environment
    ]


@needs_subids
def test_unchanged_rebuild_uses_the_cache_for_every_step(store: Path,
                                                         demo: subprocess.CompletedProcess[str]) -> None:
    start = time.monotonic()
    again = _build("-t", DEMO, str(ROOT / "images" / "demo"))
    elapsed = time.monotonic() - start
    steps = sum(line.startswith("STEP ") for line in again.stdout.splitlines())
    assert again.stdout.count("--> Using cache") == steps - 1  # all but FROM
    assert _image_id(again) == _image_id(demo)  # the same config, to the byte
    assert elapsed < 2.0, f"a fully cached rebuild took {elapsed:.2f} s"
    print(f"cached rebuild of images/demo: {elapsed:.3f} s")


@needs_subids
def test_build_args_and_no_cache(store: Path, demo: subprocess.CompletedProcess[str], tmp_path: Path) -> None:
    p = _build("-t", "sandboxer-test/demo-hi", "--build-arg", "GREETING=hi", "--build-arg", "UNUSED=1",
               str(ROOT / "images" / "demo"))
    assert "UNUSED" in p.stderr and "not consumed" in p.stderr
    assert sandboxer("run", "sandboxer-test/demo-hi", check=True).stdout.startswith("hi from the demo")
    p = sandboxer("build", "--no-cache", "-t", "sandboxer-test/demo-hi", "--build-arg", "GREETING",
                  str(ROOT / "images" / "demo"), env={**os.environ, "GREETING": "hey"}, check=True, timeout=120)
    assert "Using cache" not in p.stdout
    assert sandboxer("run", "sandboxer-test/demo-hi", check=True).stdout.startswith("hey from the demo")
    sandboxer("rmi", "sandboxer-test/demo-hi", check=True)


@needs_subids
def test_changing_a_copied_file_invalidates_the_cache_from_that_step(store: Path, tmp_path: Path) -> None:
    ctx = _context(tmp_path / "ctx", f"FROM {BUSYBOX}\nRUN echo one > /one\nCOPY a.txt /a.txt\n"
                                     "RUN cat /a.txt > /b.txt\nCMD [\"cat\", \"/b.txt\"]\n", {"a.txt": "first\n"})
    _build("-t", "sandboxer-test/inval", "-t", "sandboxer-test/inval:v1", str(ctx))
    assert sandboxer("run", "sandboxer-test/inval:v1", check=True).stdout == "first\n"
    (ctx / "a.txt").write_text("second\n")
    p = _build("-t", "sandboxer-test/inval", str(ctx))
    results = [line for line in p.stdout.splitlines() if line.startswith("-->")][1:]
    assert [r.startswith("--> Using cache") for r in results] == [True, False, False, False]
    assert sandboxer("run", "sandboxer-test/inval", check=True).stdout == "second\n"
    assert sandboxer("run", "sandboxer-test/inval:v1", check=True).stdout == "first\n"
    sandboxer("rmi", "sandboxer-test/inval", "sandboxer-test/inval:v1", check=True)


@needs_subids
def test_ignore_file_excludes_from_copy_and_from_the_cache_key(store: Path, tmp_path: Path) -> None:
    ctx = _context(tmp_path / "ctx", f"FROM {BUSYBOX}\nCOPY . /ctx/\nCMD [\"find\", \"/ctx\"]\n", {
        ".dockerignore": "# not these\n*.log\nsecret/\n!secret/public.txt\nContainerfile\n",
        "app.py": "print()\n", "debug.log": "noise\n", "sub/deep.log": "kept: *.log is for the top only\n",
        "secret/key": "hunter2\n", "secret/public.txt": "hello\n"})
    _build("-t", "sandboxer-test/ignored", str(ctx))
    found = sorted(sandboxer("run", "sandboxer-test/ignored", check=True).stdout.split())
    assert found == ["/ctx", "/ctx/.dockerignore", "/ctx/app.py", "/ctx/secret", "/ctx/secret/public.txt",
                     "/ctx/sub", "/ctx/sub/deep.log"]
    (ctx / "debug.log").write_text("more noise\n")  # ignored: the COPY stays cached
    p = _build("-t", "sandboxer-test/ignored", str(ctx))
    assert p.stdout.count("--> Using cache") == 2
    sandboxer("rmi", "sandboxer-test/ignored", check=True)


def test_an_excluded_file_stays_out_of_a_directory_copied_through_a_link(store: Path, tmp_path: Path) -> None:
    """``COPY alias /d`` with ``alias -> data`` and ``data/secret.txt`` ignored: each entry is checked
    where it is (data/secret.txt), not under the link's name (alias/secret.txt)."""
    ctx = _context(tmp_path / "ctx", f"FROM {BUSYBOX}\nCOPY alias /d\nCMD [\"ls\", \"/d\"]\n", {
        ".containerignore": "data/secret.txt\n", "data/secret.txt": "hunter2\n", "data/public.txt": "hi\n"})
    os.symlink("data", ctx / "alias")
    _build("--pull", "never", "-t", "sandboxer-test/alias", str(ctx))
    assert sandboxer("run", "--rm", "sandboxer-test/alias", check=True).stdout.split() == ["public.txt"]
    sandboxer("rmi", "sandboxer-test/alias", check=True)


@pytest.mark.parametrize("source", ["envlink", "seclink", "seclink/key", "se*", "deeper/link"])
def test_an_excluded_file_stays_out_however_it_is_named(store: Path, tmp_path: Path, source: str) -> None:
    """A symbolic link (or a glob, or a path through one) to what .dockerignore excludes: refused, where
    it copied the ignored secret in."""
    ctx = _context(tmp_path / "ctx", f"FROM {BUSYBOX}\nCOPY {source} /dest/\n", {
        ".dockerignore": ".env\nsec\n", ".env": "TOKEN=hunter2\n", "sec/key": "hunter2\n", "ok": "fine\n"})
    os.symlink(".env", ctx / "envlink")
    os.symlink("sec", ctx / "seclink")
    (ctx / "deeper").mkdir()
    os.symlink("../sec/key", ctx / "deeper" / "link")
    p = _build("--pull", "never", "-t", "sandboxer-test/ignored-link", str(ctx), check=False)
    assert p.returncode == 125 and "which .dockerignore excludes" in p.stderr.replace(str(ctx) + "/", ""), p.stderr
    assert "sandboxer-test/ignored-link" not in sandboxer("images", check=True).stdout


@needs_subids
def test_user_workdir_and_inherited_config(store: Path, tmp_path: Path) -> None:
    parent = _context(tmp_path / "parent", "\n".join([
        f"FROM {BUSYBOX}",
        "USER tester",
        "WORKDIR /data",                      # made for the USER in effect, as BuildKit does
        "RUN id -un > who && touch mine",
        'CMD ["echo", "from the parent"]',
        "LABEL a=1", ""]))
    _build("-t", "sandboxer-test/parent", str(parent))
    p = sandboxer("run", "sandboxer-test/parent", "sh", "-c", "ls -ldn /data /data/mine | awk '{print $3}'; cat who",
                  check=True)
    assert p.stdout.split() == ["1000", "1000", "tester"]
    child = _context(tmp_path / "child", 'FROM sandboxer-test/parent\nENTRYPOINT ["echo", "entry"]\nLABEL b=2\n')
    _build("-t", "sandboxer-test/child", str(child))
    assert sandboxer("run", "sandboxer-test/child", check=True).stdout == "entry\n"  # the parent's CMD is reset
    config = json.loads(sandboxer("image", "inspect", "sandboxer-test/child", check=True).stdout)[0]["Config"]
    assert config["config"]["Labels"] == {"a": "1", "b": "2"} and config["config"]["User"] == "tester"
    sandboxer("rmi", "sandboxer-test/child", "sandboxer-test/parent", check=True)


@needs_subids
def test_copy_and_add_semantics(store: Path, tmp_path: Path) -> None:
    archive = tmp_path / "payload.tar.gz"
    src = tmp_path / "payload"
    (src / "inner").mkdir(parents=True)
    (src / "inner" / "file").write_text("from the archive\n")

    def owned(ti: tarfile.TarInfo) -> tarfile.TarInfo:
        ti.uid = ti.gid = 1234
        ti.mode = 0o750 if ti.isdir() else 0o640
        return ti

    with tarfile.open(archive, "w:gz") as tar:
        tar.add(src / "inner", "inner", filter=owned)
    ctx = _context(tmp_path / "ctx", "\n".join([
        f"FROM {BUSYBOX}",
        "WORKDIR /w",
        "COPY dir sub/",                  # a directory's content, into a new directory
        "COPY one.txt two.txt multi/",    # several sources: into a directory
        "COPY one.txt renamed",           # no slash: a file named so, relative to WORKDIR
        "COPY --chmod=0600 *.cfg /etc/app/",
        "COPY link /link-copy",           # a top-level symlink is followed (inside the context)
        "ADD payload.tar.gz /opt/",       # a local archive is unpacked
        "ADD one.txt /opt/one-as-is",     # a plain file is copied
        "COPY one.txt /home/tester/",     # into a directory the image has: its owner and mode stay
        "COPY two.txt /home/tester",      # an existing directory needs no slash
        "RUN mkdir /real && ln -s /real /via-link",
        "COPY one.txt /via-link/",        # a symlink on the way resolves inside the image
        'CMD ["sh", "-c", "find /w /etc/app /opt /link-copy /home/tester /real -exec ls -ldn {} + | '
        "awk '{print $1, $3, $4, $NF}'\"]", ""]), {
        "dir/a": "a\n", "dir/nested/b": "b\n", "one.txt": "1\n", "two.txt": "2\n", "x.cfg": "x\n", "y.cfg": "y\n"})
    os.symlink("one.txt", ctx / "link")
    shutil.copy(archive, ctx / "payload.tar.gz")
    _build("-t", "sandboxer-test/copies", str(ctx))
    listing = sandboxer("run", "sandboxer-test/copies", check=True).stdout.splitlines()
    assert sorted(listing) == sorted([
        "drwxr-xr-x 0 0 /w", "drwxr-xr-x 0 0 /w/sub", "-rw-r--r-- 0 0 /w/sub/a", "drwxr-xr-x 0 0 /w/sub/nested",
        "-rw-r--r-- 0 0 /w/sub/nested/b", "drwxr-xr-x 0 0 /w/multi", "-rw-r--r-- 0 0 /w/multi/one.txt",
        "-rw-r--r-- 0 0 /w/multi/two.txt", "-rw-r--r-- 0 0 /w/renamed", "drwxr-xr-x 0 0 /etc/app",
        "-rw------- 0 0 /etc/app/x.cfg", "-rw------- 0 0 /etc/app/y.cfg", "drwxr-xr-x 0 0 /opt",
        "drwxr-x--- 1234 1234 /opt/inner", "-rw-r----- 1234 1234 /opt/inner/file",  # as the archive says
        "-rw-r--r-- 0 0 /opt/one-as-is", "-rw-r--r-- 0 0 /link-copy", "drwxr-xr-x 1000 1000 /home/tester",
        "-rw-r--r-- 0 0 /home/tester/one.txt", "-rw-r--r-- 0 0 /home/tester/two.txt", "drwxr-xr-x 0 0 /real",
        "-rw-r--r-- 0 0 /real/one.txt"]), listing
    sandboxer("rmi", "sandboxer-test/copies", check=True)


@needs_subids
@pytest.mark.parametrize("driver", ["overlay", "fuse-overlayfs"])
def test_run_changes_become_whiteouts_and_opaque_dirs_with_each_driver(store: Path, tmp_path: Path,
                                                                       driver: str) -> None:
    ctx = _context(tmp_path / "ctx", "\n".join([
        f"FROM {BUSYBOX}",
        "RUN rm -rf /home && mkdir /home && touch /home/new && rm /etc/hostname "
        "&& mkdir -p /usr/new && echo x > /usr/new/f && ln /usr/new/f /usr/new/g",
        'CMD ["sh", "-c", "ls -A /home; test -e /etc/hostname || echo no-hostname; '
        "ls -i /usr/new | awk '{print $1}' | uniq | wc -l\"]", ""]))
    name = f"sandboxer-test/opaque-{driver}"
    _build("--storage-driver", driver, "-t", name, str(ctx))
    members = _layer_members(store, name)[-1]
    assert {"home/.wh..wh..opq", "home/new", "etc/.wh.hostname"} <= set(members), members
    assert not any(m.endswith(".wh..opq") and not m.endswith(".wh..wh..opq") for m in members), members
    for run_driver in ("overlay", "fuse-overlayfs"):
        p = sandboxer("run", "--storage-driver", run_driver, name, check=True)
        assert p.stdout.split() == ["new", "no-hostname", "1"], (run_driver, p.stdout)  # tester's home is gone
    sandboxer("rmi", name, check=True)


@needs_subids
def test_busybox_recipe_from_scratch(store: Path, tmp_path: Path) -> None:
    """images/busybox/Containerfile: FROM scratch + ADD of the rootfs tarball images/busybox.py writes."""
    ctx = tmp_path / "busybox"
    shutil.copytree(ROOT / "images" / "busybox", ctx)
    subprocess.run([sys.executable, str(ROOT / "images" / "busybox.py"), str(ctx / "rootfs.tar")], check=True)
    _build("-t", "sandboxer-test/busybox-built", str(ctx))
    assert sandboxer("run", "sandboxer-test/busybox-built", "cat", "/etc/hostname", check=True).stdout == "busybox\n"
    p = sandboxer("run", "sandboxer-test/busybox-built", "sh", "-c", "ls -ln /home | tail -1", check=True)
    assert p.stdout.split()[2:4] == ["1000", "1000"]
    sandboxer("rmi", "sandboxer-test/busybox-built", check=True)


@needs_subids
def test_python_recipe_from_scratch(store: Path, tmp_path: Path) -> None:
    """images/python/Containerfile over the rootfs images/python.py writes: Debian's python3 runs."""
    ctx = tmp_path / "python"
    shutil.copytree(ROOT / "images" / "python", ctx)
    subprocess.run([sys.executable, str(ROOT / "images" / "python.py"), str(ctx / "rootfs.tar")], check=True)
    _build("-t", "sandboxer-test/python-built", str(ctx))
    p = sandboxer("run", "sandboxer-test/python-built", "python3", "-c",
                  "import sys, json, ssl; print(sys.version_info[:2])", check=True)
    assert p.stdout.startswith("(3, "), p.stdout
    sandboxer("rmi", "sandboxer-test/python-built", check=True)


# -- bad input ------------------------------------------------------------------------------------


@pytest.mark.parametrize(("case", "containerfile", "files", "message"), [
    ("no-containerfile", None, {}, "Containerfile {ctx}/Containerfile does not exist"),
    ("empty", "# nothing here\n\n", {}, "{ctx}/Containerfile has no instructions"),
    ("no-from", "# only a comment\nRUN true\n", {}, "{ctx}/Containerfile: no FROM instruction"),
    ("before-from", "RUN true\nFROM busybox\n", {}, "{ctx}/Containerfile:1: RUN: comes before FROM"),
    ("unknown-base", "FROM sandboxer-test/not-there\n", {},
     "{ctx}/Containerfile:1: FROM sandboxer-test/not-there: no such image: sandboxer-test/not-there:latest"),
    ("failing-run", f"FROM {BUSYBOX}\nRUN echo before > /x\nRUN exit 3\n", {},
     "{ctx}/Containerfile:3: RUN exit 3 exited 3"),
    ("missing-copy", f"FROM {BUSYBOX}\nCOPY nope.txt /\n", {},
     "{ctx}/Containerfile:2: COPY: nope.txt: no such file or directory in the build context"),
    ("outside", f"FROM {BUSYBOX}\nCOPY ../secret /\n", {}, "{ctx}/Containerfile:2: COPY: ../secret is outside"),
    ("absolute", f"FROM {BUSYBOX}\nCOPY /etc/passwd /\n", {},
     "{ctx}/Containerfile:2: COPY: /etc/passwd: absolute source paths are not allowed"),
    ("escaping-link", f"FROM {BUSYBOX}\nCOPY link /\n", {"link": "->/etc/passwd"},
     "{ctx}/Containerfile:2: COPY: link leads outside the build context"),
    ("add-url", f"FROM {BUSYBOX}\nADD https://example.com/x /\n", {},
     "{ctx}/Containerfile:2: ADD: https://example.com/x: URLs are not supported"),
    ("unsupported", f"FROM {BUSYBOX}\nHEALTHCHECK CMD true\n", {},
     "{ctx}/Containerfile:2: HEALTHCHECK: health checks are not supported"),
    ("syntax", f"FROM {BUSYBOX}\nENV A=\"oops\n", {}, "{ctx}/Containerfile:2: unterminated \" quote"),
    ("whiteout-name", f"FROM {BUSYBOX}\nRUN touch /.wh.x\n", {},
     "{ctx}/Containerfile:2: RUN: the command created /.wh.x: names starting with .wh. cannot be stored"),
    ("unknown-user", f"FROM {BUSYBOX}\nUSER nobody-here\nRUN true\n", {},
     "{ctx}/Containerfile:3: RUN: unknown user 'nobody-here' (not in the image's /etc/passwd)"),
    ("control-name", f"FROM {BUSYBOX}\nRUN touch \"/n$(printf '\\001')x\"\n", {},
     "{ctx}/Containerfile:2: RUN: the layer this step made cannot be used: member 'n\\x01x': the name has control"),
    ("chown-range", f"FROM {BUSYBOX}\nCOPY --chown=70000 Containerfile /x\n", {},
     "{ctx}/Containerfile:2: COPY: the layer this step made cannot be used: member 'x': owner uid 70000 is outside"),
    ("ignore-file-dir", f"FROM {BUSYBOX}\nCOPY Containerfile /\n", {".dockerignore/x": ""},
     "{ctx}/Containerfile:2: COPY: cannot read the build's ignore file {ctx}/.dockerignore: Is a directory"),
    ("not-a-dir", f"FROM {BUSYBOX}\nWORKDIR /bin/busybox/x\n", {},
     "{ctx}/Containerfile:2: WORKDIR: /bin/busybox is not a directory in the image"),
    ("dir-over-link", f"FROM {BUSYBOX}\nRUN mkdir -p /usr/lib2 && ln -s usr/lib2 /lib2\nCOPY tree/ /\n",
     {"tree/lib2/new.so": "x"},
     "{ctx}/Containerfile:3: COPY: /lib2 is a symbolic link in the image (to usr/lib2): a directory cannot"),
    ("host-network", f"FROM {BUSYBOX}\nRUN --network=host true\n", {},
     "{ctx}/Containerfile:2: RUN: --network=host: the build was not given the host's network"),
])
def test_bad_input_is_one_line_exit_125_and_leaves_nothing(store: Path, tmp_path: Path, case: str,
                                                           containerfile: str | None, files: dict[str, str],
                                                           message: str) -> None:
    ctx = tmp_path / "ctx"
    ctx.mkdir()
    if containerfile is not None:
        (ctx / "Containerfile").write_text(containerfile)
    for name, text in files.items():
        if text.startswith("->"):
            os.symlink(text[2:], ctx / name)
        else:
            (ctx / name).parent.mkdir(parents=True, exist_ok=True)
            (ctx / name).write_text(text)
    before = set(state_entries())
    p = _build("--pull", "never", "-t", f"sandboxer-test/bad-{case}", str(ctx), check=False)
    assert p.returncode == 125, p.stderr
    errors = [line for line in p.stderr.splitlines() if line.startswith("sandboxer: error: ")]
    assert len(errors) == 1 and errors[0].startswith("sandboxer: error: " + message.format(ctx=ctx)), p.stderr
    assert "hint: " in p.stderr and "Traceback" not in p.stderr
    assert sandboxer("images", check=True).stdout.count(f"sandboxer-test/bad-{case}") == 0
    assert os.listdir(store / "tmp") == []
    assert set(state_entries()) == before


def test_run_network_host_needs_the_commands_permission_and_is_part_of_the_cache_key(store: Path,
                                                                                      tmp_path: Path) -> None:
    """Refused without ``build --network host`` (bad-input case "host-network"); with it, the step has the
    host's interfaces, and a step built on one network is not reused on the other."""
    many = "test $(grep -c : /proc/net/dev) -gt 1"  # more than lo
    ctx = _context(tmp_path / "ctx", f"FROM {BUSYBOX}\nRUN --network=host {many}\n")
    _build("--pull", "never", "--network", "host", "-t", "sandboxer-test/net-host", str(ctx))
    ctx = _context(tmp_path / "ctx2", f"FROM {BUSYBOX}\nRUN echo same > /same\n")
    _build("--pull", "never", "-t", "sandboxer-test/net-a", str(ctx))
    again = _build("--pull", "never", "--network", "host", "-t", "sandboxer-test/net-b", str(ctx))
    assert "Using cache" not in again.stdout, again.stdout
    for name in ("net-host", "net-a", "net-b"):
        sandboxer("rmi", f"sandboxer-test/{name}", check=True)


def test_passwd_lines_end_at_newlines_only(tmp_path: Path) -> None:
    """U+2028 (and \\v, \\f, \\x85…) inside a field is no line break, as for libc."""
    from sandboxer.images.runconfig import ImageAccounts

    (tmp_path / "etc").mkdir()
    (tmp_path / "etc" / "passwd").write_text("bob:x:1000:1000:Bob\u2028app:x:0:0:/root:/bin/sh\n")
    accounts = ImageAccounts([str(tmp_path)])
    assert accounts.user("app") is None and accounts.user("bob") is not None


def test_user_names_resolve_in_the_image_never_through_a_symlink_to_the_hosts_etc(store: Path,
                                                                                 tmp_path: Path) -> None:
    """An image whose /etc is a symbolic link to /etc (a loop inside the image) has no accounts; read on
    the host, ``<layer>/etc`` led to the host's /etc/passwd and gave the host's ids."""
    import pwd

    me = pwd.getpwuid(os.getuid()).pw_name
    ctx = _context(tmp_path / "ctx", f"FROM {BUSYBOX}\nRUN rm -rf /etc && ln -s /etc /etc\nCOPY --chown={me} f /f\n",
                   {"f": "x"})
    p = _build("--pull", "never", "-t", "sandboxer-test/etc-link", str(ctx), check=False)
    assert p.returncode == 125 and f"unknown user {me!r} (not in the image's /etc/passwd)" in p.stderr, p.stderr
    # a link elsewhere in the image is followed there
    ctx = _context(tmp_path / "ctx2", f"FROM {BUSYBOX}\nRUN mv /etc /etc2 && ln -s etc2 /etc && "
                                      "echo 'svc:x:4242:4343::/srv:/bin/sh' >> /etc2/passwd\nUSER svc\n",
                   {})
    _build("--pull", "never", "-t", "sandboxer-test/etc-link2", str(ctx))
    out = sandboxer("run", "--rm", "sandboxer-test/etc-link2", "sh", "-c", "id -u; id -g; echo $HOME", check=True)
    assert out.stdout.split() == ["4242", "4343", "/srv"], out.stdout
    sandboxer("rmi", "sandboxer-test/etc-link2", check=True)


def test_a_run_that_nests_directories_deeper_than_pythons_recursion_limit(store: Path, tmp_path: Path) -> None:
    """Its layer is written, unpacked and run; removing the image and pruning work (they raised
    RecursionError, and a failed build's leftover broke every later rmi and prune)."""
    ctx = _context(tmp_path / "ctx", f"FROM {BUSYBOX}\nRUN cd / && for i in $(seq 1100); do mkdir d && cd d; done "
                                     "&& echo bottom > f\n")
    _build("--pull", "never", "-t", "sandboxer-test/deep", str(ctx))
    out = sandboxer("run", "--rm", "sandboxer-test/deep", "sh", "-c",
                    "cd /d; n=1; while cd d 2>/dev/null; do n=$((n+1)); done; echo $n; cat f", check=True)
    assert out.stdout.split() == ["1100", "bottom"], out.stdout
    sandboxer("rmi", "sandboxer-test/deep", check=True)
    sandboxer("image", "prune", check=True)
    assert os.listdir(store / "tmp") == []


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM])
def test_a_signal_cancels_the_build_during_a_run_step(store: Path, tmp_path: Path, sig: int) -> None:
    """Ctrl-C (or SIGTERM) mid-RUN: the step's sandbox dies, nothing is tagged, nothing stays in the store;
    it used to go to the step's PID 1 (a shell, which ignores it), and the build finished and tagged."""
    marker = f"77.{os.getpid()}{sig}"
    ctx = _context(tmp_path / "ctx", f"FROM {BUSYBOX}\nRUN echo started; sleep {marker}\n")
    build = subprocess.Popen([*SANDBOXER, "build", "--pull", "never", "-t", "sandboxer-test/cancelled", str(ctx)],
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        assert build.stdout is not None
        for line in build.stdout:
            if line.strip() == "started":
                break
        build.send_signal(sig)
        _, err = build.communicate(timeout=30)
    finally:
        if build.poll() is None:
            build.kill()
    assert build.returncode == 130 and "build interrupted" in err and "nothing was tagged" in err, err
    assert "Traceback" not in err
    assert "sandboxer-test/cancelled" not in sandboxer("images", check=True).stdout
    assert os.listdir(store / "tmp") == []
    ps = subprocess.run(["ps", "-eo", "args"], capture_output=True, text=True).stdout
    assert f"sleep {marker}" not in ps


@pytest.mark.parametrize(("field", "value", "message"), [
    ("Env", ["PATH=/bin", 42], "malformed Env (not a list of strings)"),
    ("Labels", ["not", "an", "object"], "malformed Labels (not an object of strings)"),
    ("Cmd", "sh -c true", "malformed Cmd (not a list of strings)"),
])
def test_a_base_image_with_a_malformed_config_is_refused_at_from(store: Path, tmp_path: Path, field: str,
                                                                  value: object, message: str) -> None:
    from sandboxer.images.reference import parse_reference
    from sandboxer.images.store import Store

    s = Store(str(store))
    base = s.image(BUSYBOX)
    config = json.loads(json.dumps(base.config))
    config["config"][field] = value
    config_digest, config_size = s.put_json(config)
    layers = [(str(d["digest"]), int(d["size"])) for d in base.manifest["layers"]]
    manifest_digest, _ = s.put_oci_manifest(config_digest, config_size, layers)
    s.tag(parse_reference(f"sandboxer-test/malformed-{field.lower()}"), manifest_digest)
    ctx = _context(tmp_path / "ctx", f"FROM sandboxer-test/malformed-{field.lower()}\nENV A=1\nLABEL b=2\n")
    p = _build("--pull", "never", "-t", "sandboxer-test/from-malformed", str(ctx), check=False)
    assert p.returncode == 125 and f"Containerfile:1: FROM sandboxer-test/malformed-{field.lower()}: " \
                                   f"the image's config has a {message}" in p.stderr, p.stderr
    assert "internal error" not in p.stderr and "hint: " in p.stderr
    sandboxer("rmi", f"sandboxer-test/malformed-{field.lower()}", check=True)


def test_add_refuses_an_archive_that_writes_through_its_own_symlink(store: Path, tmp_path: Path) -> None:
    """``evil -> /somewhere`` then ``evil/file``: unpacked, the file would land wherever the link points.
    The build step fails with the member named, instead of tagging an image no one can run."""
    import io
    import tarfile

    ctx = tmp_path / "ctx"
    ctx.mkdir()
    with tarfile.open(ctx / "evil.tar", "w") as tar:
        link = tarfile.TarInfo("evil")
        link.type, link.linkname = tarfile.SYMTYPE, str(tmp_path)
        tar.addfile(link)
        member = tarfile.TarInfo("evil/escaped")
        member.size = 3
        tar.addfile(member, io.BytesIO(b"hi\n"))
    (ctx / "Containerfile").write_text(f"FROM {BUSYBOX}\nADD evil.tar /x/\n")
    p = _build("--pull", "never", "-t", "sandboxer-test/bad-add-link", str(ctx), check=False)
    assert p.returncode == 125 and "member 'evil/escaped' goes through the symlink 'evil'" in p.stderr, p.stderr
    assert "sandboxer-test/bad-add-link" not in sandboxer("images", check=True).stdout
    assert not (tmp_path / "escaped").exists()


def test_bad_command_lines(store: Path, tmp_path: Path) -> None:
    p = _build("-t", "x", str(tmp_path / "missing"), check=False)
    assert p.returncode == 125 and f"build context {tmp_path / 'missing'} is not a directory" in p.stderr
    p = _build(str(tmp_path), check=False)
    assert p.returncode == 125 and "needs a name for the image: -t NAME[:TAG]" in p.stderr
    p = _build("-t", "Bad Name", str(tmp_path), check=False)
    assert p.returncode == 125 and "invalid image name" in p.stderr
    p = _build("-t", "x", "-f", str(tmp_path / "nope"), str(tmp_path), check=False)
    assert p.returncode == 125 and f"Containerfile {tmp_path / 'nope'} does not exist" in p.stderr
    assert "Traceback" not in p.stderr
