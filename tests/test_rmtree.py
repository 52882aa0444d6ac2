"""sandboxer.rmtree: any depth, never through a symbolic link, what it can't remove left in place."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from sandboxer.rmtree import rmtree


def _deep(top: Path, depth: int) -> None:
    """``depth`` nested directories ``d`` with a file in each, made relative to an open directory
    (the full path is longer than PATH_MAX)."""
    top.mkdir()
    fd = os.open(top, os.O_RDONLY | os.O_DIRECTORY)
    for _ in range(depth):
        os.mkdir("d", dir_fd=fd)
        child = os.open("d", os.O_RDONLY | os.O_DIRECTORY, dir_fd=fd)
        os.close(os.open("f", os.O_CREAT | os.O_WRONLY, 0o644, dir_fd=child))
        os.close(fd)
        fd = child
    os.close(fd)


def test_a_tree_deeper_than_the_recursion_limit_and_path_max(tmp_path: Path) -> None:
    _deep(tmp_path / "deep", 2500)  # shutil.rmtree: RecursionError; a path-based walk: ENAMETOOLONG
    rmtree(str(tmp_path / "deep"))
    assert os.listdir(tmp_path) == []


def test_symbolic_links_are_removed_never_followed(tmp_path: Path) -> None:
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "keep").write_text("x")
    tree = tmp_path / "tree"
    for i in range(300):
        (tree / f"s{i}").mkdir(parents=True)
        (tree / f"s{i}" / "file").write_text("x")
    os.symlink(outside, tree / "link")
    os.symlink(outside, tree / "s7" / "link")
    rmtree(str(tree))
    assert sorted(os.listdir(tmp_path)) == ["outside"] and os.listdir(outside) == ["keep"]
    os.symlink(outside, tmp_path / "top-link")  # the path itself a link: the link goes
    rmtree(str(tmp_path / "top-link"))
    assert os.listdir(outside) == ["keep"] and not (tmp_path / "top-link").exists()


def test_a_file_a_missing_path_and_dir_fd(tmp_path: Path) -> None:
    (tmp_path / "file").write_text("x")
    rmtree(str(tmp_path / "file"))
    rmtree(str(tmp_path / "missing"))
    (tmp_path / "sub" / "a").mkdir(parents=True)
    fd = os.open(tmp_path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        rmtree("sub", dir_fd=fd)
    finally:
        os.close(fd)
    assert os.listdir(tmp_path) == []


@pytest.mark.skipif(os.geteuid() == 0, reason="root reads and writes any directory")
def test_what_cannot_be_removed_stays_with_ignore_errors_and_raises_without(tmp_path: Path) -> None:
    locked = tmp_path / "tree" / "locked"
    (locked / "inner").mkdir(parents=True)
    (tmp_path / "tree" / "free").mkdir()
    locked.chmod(0o500)  # its entries can't be unlinked
    try:
        with pytest.raises(PermissionError):
            rmtree(str(tmp_path / "tree"))
        rmtree(str(tmp_path / "tree"), ignore_errors=True)
        assert sorted(os.listdir(tmp_path / "tree")) == ["locked"] and os.listdir(locked) == ["inner"]
    finally:
        locked.chmod(0o700)
    rmtree(str(tmp_path / "tree"))
    assert os.listdir(tmp_path) == []


def test_a_directory_gone_or_moved_meanwhile(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A subdirectory removed by someone else is no error; one moved away stops the walk (with
    ignore_errors quietly), and nothing outside the tree is touched."""
    import sandboxer.rmtree as rm

    (tmp_path / "t" / "a" / "b").mkdir(parents=True)
    (tmp_path / "t" / "gone").mkdir()
    real_open = os.open

    def vanishing(path: str, flags: int, mode: int = 0o777, *, dir_fd: int | None = None) -> int:
        if path == "gone":
            os.rmdir("gone", dir_fd=dir_fd)
        return real_open(path, flags, mode, dir_fd=dir_fd)

    monkeypatch.setattr(rm.os, "open", vanishing)
    rmtree(str(tmp_path / "t"))
    monkeypatch.undo()
    assert os.listdir(tmp_path) == []

    (tmp_path / "t" / "a" / "b").mkdir(parents=True)
    (tmp_path / "t" / "a" / "b" / "f").write_text("x")
    (tmp_path / "away").mkdir()

    def moving(path: str, flags: int, mode: int = 0o777, *, dir_fd: int | None = None) -> int:
        fd = real_open(path, flags, mode, dir_fd=dir_fd)
        if path == "b":  # inside t/a/b now: move t/a out of the tree
            os.rename(tmp_path / "t" / "a", tmp_path / "away" / "a")
        return fd

    monkeypatch.setattr(rm.os, "open", moving)
    rmtree(str(tmp_path / "t"), ignore_errors=True)
    monkeypatch.undo()
    assert os.path.isdir(tmp_path / "away" / "a")  # not followed out: the walk stopped
