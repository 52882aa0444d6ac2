"""sandboxer.jsonread: the same values and the same failures as json.loads."""

from __future__ import annotations

import json
import math

import pytest

from sandboxer import jsonread

VALID = [
    '{"id": "ab12", "pid": 4242, "started_at": 1764406975.25, "exec": {"env": ["A=1", "B=é\\n"], "cwd": "/"}}',
    "[]", "{}", ' \n\t[1, -2, 3.5e-3, true, false, null] \r\n', '"\\u00e9\\ud83d\\ude00"', "0", "-0.0",
    '{"nested": [[{"a": [{}]}]], "": ""}', '"\u2028 raw non-ASCII: \u00e9"',
]


@pytest.mark.parametrize("text", VALID)
def test_same_values_as_json(text: str) -> None:
    got, want = jsonread.loads(text), json.loads(text)
    assert got == want and repr(got) == repr(want)


def test_constants_as_json_reads_them() -> None:
    nan, inf, minus_inf = jsonread.loads("[NaN, Infinity, -Infinity]")
    assert math.isnan(nan) and inf == math.inf and minus_inf == -math.inf


@pytest.mark.parametrize("text", ["", "   ", "{", '{"a": 1} x', "[1,]", '{"a" 1}', '"\\x"', "tru", "{'a': 1}",
                                  '"a\tb"', "[1] [2]", "01"])
def test_malformed_text_raises_value_error(text: str) -> None:
    with pytest.raises(ValueError):
        json.loads(text)  # the reference agrees it is malformed
    with pytest.raises(ValueError):
        jsonread.loads(text)


def test_a_record_written_by_json_reads_back() -> None:
    record = {"id": "f" * 64, "status": "running", "options": {"volumes": [["/a", "/b", True]], "env": None},
              "ports": json.dumps([{"host": 8080}])}
    assert jsonread.loads(json.dumps(record)) == record
    assert jsonread.loads(json.dumps(record, indent=2)) == record
