"""sandboxer.jsonc: the same values, text and failures as json.loads and json.dumps, without loading json."""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest

from sandboxer import jsonc

VALID = [
    '{"id": "ab12", "pid": 4242, "started_at": 1764406975.25, "exec": {"env": ["A=1", "B=é\\n"], "cwd": "/"}}',
    "[]", "{}", ' \n\t[1, -2, 3.5e-3, true, false, null] \r\n', '"\\u00e9\\ud83d\\ude00"', "0", "-0.0",
    '{"nested": [[{"a": [{}]}]], "": ""}', '"\u2028 raw non-ASCII: \u00e9"',
]


@pytest.mark.parametrize("text", VALID)
def test_same_values_as_json(text: str) -> None:
    got, want = jsonc.loads(text), json.loads(text)
    assert got == want and repr(got) == repr(want)


def test_constants_as_json_reads_them() -> None:
    nan, inf, minus_inf = jsonc.loads("[NaN, Infinity, -Infinity]")
    assert math.isnan(nan) and inf == math.inf and minus_inf == -math.inf


@pytest.mark.parametrize("text", ["", "   ", "{", '{"a": 1} x', "[1,]", '{"a" 1}', '"\\x"', "tru", "{'a': 1}",
                                  '"a\tb"', "[1] [2]", "01"])
def test_malformed_text_raises_value_error(text: str) -> None:
    with pytest.raises(ValueError):
        json.loads(text)  # the reference agrees it is malformed
    with pytest.raises(ValueError):
        jsonc.loads(text)


def test_a_record_written_by_json_reads_back() -> None:
    record = {"id": "f" * 64, "status": "running", "options": {"volumes": [["/a", "/b", True]], "env": None},
              "ports": json.dumps([{"host": 8080}])}
    assert jsonc.loads(json.dumps(record)) == record
    assert jsonc.loads(json.dumps(record, indent=2)) == record


DUMPABLE = [
    {"id": "ab12", "pid": 4242, "started_at": 1764406975.25, "env": ["A=1", "B=é\n\u2028\x00"], "none": None},
    [], {}, "just a string", 0, -1.5, 10**30, True, None, [[{"a": [{}]}]], {"z": 1, "a": {"y": 2, "b": 3}},
    {1: "int key", 2.5: "float key", None: "null key", False: "bool key"}, [float("inf"), float("-inf")],
]


@pytest.mark.parametrize("value", DUMPABLE)
@pytest.mark.parametrize("options", [{}, {"separators": (",", ":"), "sort_keys": True}])
def test_same_text_as_json(value: object, options: dict[str, object]) -> None:
    def outcome(dumps: Callable[..., str]) -> object:
        try:
            return dumps(value, **options)
        except TypeError as e:  # sort_keys over keys of mixed types: both refuse
            return type(e)

    assert outcome(jsonc.dumps) == outcome(json.dumps)


def test_what_json_cannot_write_fails_the_same_and_leaves_no_trace() -> None:
    shared = {"k": [1]}
    with pytest.raises(TypeError, match="set is not JSON serializable"):
        jsonc.dumps([shared, {1, 2}])
    cycle: list[object] = []
    cycle.append(cycle)
    with pytest.raises(ValueError, match="Circular reference"):
        jsonc.dumps(cycle)
    assert jsonc.dumps([shared, shared]) == '[{"k": [1]}, {"k": [1]}]'  # no stale cycle marker from before


def test_writing_and_reading_a_record_loads_no_json(tmp_path: Path) -> None:
    """A detached sandbox's supervisor writes its record before it starts the sandbox: ``import json``
    there (re, enum, functools) was ~8 ms of ``run -d``."""
    code = ("import sys; from sandboxer import supervisor; "
            "supervisor._write({'id': 'f' * 64, 'status': 'created', 'env': ['A=é']}); "
            "assert supervisor._read('f' * 64)['env'] == ['A=é']; "
            "print(*sorted({'json', 're', 'enum', 'functools'} & set(sys.modules)))")
    env = {**os.environ, "SANDBOXER_STATE_DIR": str(tmp_path / "state"),
           "PYTHONPATH": str(Path(__file__).resolve().parent.parent)}
    done = subprocess.run([sys.executable, "-S", "-c", code], env=env, capture_output=True, text=True, timeout=60)
    assert done.returncode == 0 and done.stdout == "\n", done.stderr
