"""Extension points: a third-party plugin found through the ``sandboxer`` entry points."""

from __future__ import annotations

import os
import textwrap

import pytest
from conftest import sandboxer

PLUGIN = '''
from sandboxer.plugins import hookimpl
from sandboxer.storage.fuse import FuseOverlay


class LoggingFuse(FuseOverlay):
    """fuse-overlayfs under another name, preferred over every built-in."""

    name = "test-fuse"
    priority = 1


@hookimpl
def sandboxer_snapshotters():
    return [LoggingFuse()]


@hookimpl
def sandboxer_configure(plan):
    plan.env.append("FROM_PLUGIN=yes")


@hookimpl
def sandboxer_attach(plan, pid):
    with open(plan.annotations.get("log", "/dev/null"), "a") as f:
        f.write(f"attach {pid}\\n")
'''


@pytest.fixture
def plugin_env(tmp_path: os.PathLike[str]) -> dict[str, str]:
    """PYTHONPATH with a module and the dist-info that registers it."""
    site = os.path.join(str(tmp_path), "site")
    os.makedirs(os.path.join(site, "sbx_test_plugin-1.0.dist-info"))
    with open(os.path.join(site, "sbx_test_plugin.py"), "w") as f:
        f.write(textwrap.dedent(PLUGIN))
    info = os.path.join(site, "sbx_test_plugin-1.0.dist-info")
    with open(os.path.join(info, "METADATA"), "w") as f:
        f.write("Metadata-Version: 2.1\nName: sbx-test-plugin\nVersion: 1.0\n")
    with open(os.path.join(info, "entry_points.txt"), "w") as f:
        f.write("[sandboxer]\ntestplugin = sbx_test_plugin\n")
    return dict(os.environ, PYTHONPATH=site, XDG_CACHE_HOME=os.path.join(str(tmp_path), "cache"))


def test_third_party_plugin_is_found_and_used(plugin_env: dict[str, str]) -> None:
    p = sandboxer("run", "--debug", "--", "sh", "-c", "echo $FROM_PLUGIN", env=plugin_env)
    assert p.returncode == 0, p.stderr
    assert p.stdout.strip() == "yes"
    assert "storage driver test-fuse" in p.stderr
    # a second run uses the entry-point cache and finds the same plugin
    p = sandboxer("run", "--debug", "--", "true", env=plugin_env)
    assert "storage driver test-fuse" in p.stderr


def test_without_plugins_builtins_serve(tmp_path: os.PathLike[str]) -> None:
    env = dict(os.environ, XDG_CACHE_HOME=os.path.join(str(tmp_path), "cache"))
    p = sandboxer("run", "--debug", "--", "true", env=env)
    assert "storage driver fuse-overlayfs" in p.stderr


def test_builtin_fast_path_matches_pluggy() -> None:
    """The direct built-in dispatch returns what pluggy would."""
    from sandboxer import plugins

    direct = [type(d).__name__ for group in plugins._call_builtins("sandboxer_snapshotters", {}) for d in group]
    via_pluggy = [type(d).__name__ for group in plugins.plugin_manager().hook.sandboxer_snapshotters()
                  for d in group]
    assert direct == via_pluggy


def test_hookspecs_are_documented() -> None:
    from sandboxer import hookspecs

    for name in dir(hookspecs):
        if name.startswith("sandboxer_"):
            assert getattr(hookspecs, name).__doc__, name


def test_entry_point_cache_keeps_several_environments(tmp_path: os.PathLike[str],
                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    """pytest's sys.path and the command line's differ: neither evicts the other's cached scan."""
    import sys

    from sandboxer import plugins

    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    first, second = os.path.join(str(tmp_path), "a"), os.path.join(str(tmp_path), "b")
    os.mkdir(first)
    os.mkdir(second)
    for extra in (first, second, first):
        monkeypatch.setattr(sys, "path", [extra, *sys.path])
        monkeypatch.setattr(plugins, "_memo", None)
        assert plugins.external_entry_points() == []
        monkeypatch.undo()
        monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    with open(os.path.join(str(tmp_path), "sandboxer", "entry-points")) as f:
        keys = [block.splitlines()[0] for block in f.read().split("\n\n") if block.strip()]
    # newest first; the third look-up found the first environment's scan and wrote nothing
    assert len(keys) == 2 and keys[0].startswith(f"2|{second}:") and keys[1].startswith(f"2|{first}:")
