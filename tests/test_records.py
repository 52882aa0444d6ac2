"""sandboxer.records.record makes classes that behave as collections.namedtuple's do."""

from __future__ import annotations

import os
import pickle
import subprocess
import sys
from collections import namedtuple

import pytest

import sandboxer
from sandboxer.records import record
from sandboxer.sandbox import SandboxOptions, Volume

Mine = record("Point", "x y z", defaults=(0,))
Theirs = namedtuple("Point", "x y z", defaults=(0,))


class Named(record("Named", ("a", "b"))):
    """A subclass, as sandboxer defines them."""

    __slots__ = ()

    @property
    def total(self) -> int:
        return self.a + self.b


@pytest.mark.parametrize("args, kwargs", [
    ((1, 2, 3), {}), ((1, 2), {}), ((1,), {"y": 2}), ((), {"x": 1, "y": 2, "z": 3}), ((), {"z": 5, "y": 4, "x": 3}),
])
def test_construction_matches_namedtuple(args: tuple, kwargs: dict) -> None:
    mine, theirs = Mine(*args, **kwargs), Theirs(*args, **kwargs)
    assert mine == theirs and tuple(mine) == tuple(theirs)
    assert (mine.x, mine.y, mine.z) == (theirs.x, theirs.y, theirs.z)
    assert repr(mine) == repr(theirs)
    assert mine._asdict() == theirs._asdict()
    assert hash(mine) == hash(theirs)


@pytest.mark.parametrize("args, kwargs, message", [
    ((1, 2, 3, 4), {}, "takes 4 positional arguments but 5 were given"),
    ((1,), {}, "missing required argument: 'y'"),
    ((1, 2), {"x": 1}, "got multiple values for argument 'x'"),
    ((1, 2), {"w": 1}, "got an unexpected keyword argument 'w'"),
])
def test_bad_calls_fail_as_namedtuples_do(args: tuple, kwargs: dict, message: str) -> None:
    with pytest.raises(TypeError, match=message):
        Mine(*args, **kwargs)
    with pytest.raises(TypeError):
        Theirs(*args, **kwargs)


def test_class_attributes_and_helpers() -> None:
    assert Mine._fields == Theirs._fields == ("x", "y", "z")
    assert Mine._field_defaults == Theirs._field_defaults == {"z": 0}
    assert Mine.__match_args__ == ("x", "y", "z")
    assert Mine.__name__ == "Point" and Mine.__module__ == __name__
    point = Mine(1, 2)
    assert point._replace(z=9) == (1, 2, 9) and type(point._replace(z=9)) is Mine
    with pytest.raises(ValueError, match="unexpected field names: \\['w'\\]"):
        point._replace(w=1)
    assert point.__replace__(y=7) == (1, 7, 0)  # what copy.replace calls (Python 3.13)
    assert Mine._make([4, 5, 6]) == (4, 5, 6)
    with pytest.raises(TypeError, match="expected 3 arguments, got 2"):
        Mine._make([4, 5])
    with pytest.raises(AttributeError):
        point.x = 5  # type: ignore[misc]
    with pytest.raises(AttributeError):
        point.other = 5  # type: ignore[attr-defined]
    match point:
        case Mine(x, y, z):
            assert (x, y, z) == (1, 2, 0)


def test_subclass_keeps_its_type_and_pickles() -> None:
    named = Named(1, b=2)
    assert named.total == 3 and repr(named) == "Named(a=1, b=2)"
    assert type(named._replace(a=5)) is Named
    for proto in range(pickle.HIGHEST_PROTOCOL + 1):
        copy = pickle.loads(pickle.dumps(named, proto))
        assert copy == named and type(copy) is Named
    options = SandboxOptions(command=["true"], volumes=[Volume("/a", "/b")])
    assert pickle.loads(pickle.dumps(options)) == options
    assert options._replace(name="x").name == "x" and options._asdict()["command"] == ["true"]


def test_run_loads_no_collections() -> None:
    """The point of it all: what ``sandboxer run`` imports does not load ``collections`` (~1.4 ms)."""
    root = os.path.dirname(os.path.dirname(sandboxer.__file__))
    code = (f"import sys; sys.path.insert(0, {root!r}); "  # -S: no site, whose .pth files may load it
            "import sandboxer.cli, sandboxer.sandbox, sandboxer.images.ensure, sandboxer.images.runconfig, "
            "sandboxer.network, sandboxer.storage.fuse, sandboxer.storage.overlay, sandboxer.storage.copy, "
            "sandboxer.seccomp.cache, sandboxer.builtins; print('collections' in sys.modules)")
    out = subprocess.run([sys.executable, "-S", "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "False"
