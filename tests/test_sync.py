"""sandboxer.runtime.sync: a message always arrives whole, whatever its fields hold."""

from __future__ import annotations

import os

from sandboxer.errors import SetupError
from sandboxer.runtime import sync


def test_a_long_error_arrives_cut_but_whole() -> None:
    """A 4,200-character path in an error (a WORKDIR too long to chdir to) was cut with the line: its
    newline and the hint were lost, and the caller saw no error at all."""
    r, w = os.pipe()
    try:
        err = SetupError("chdir to /" + "é" * 4200, "File name too long", hint="the working directory must exist")
        sync.send_error(w, err)
        sync.send(w, "pid", 42)
        os.close(w)
        reader = sync.Reader(r)
        first = reader.recv()
        assert first is not None and first[0] == "error" and len(first) == 5
        raised = sync.error_from_fields(first)
        assert raised.hint == "the working directory must exist" and raised.exit_code == 125
        assert str(raised).startswith("chdir to /éé") and "…" in str(raised) and len(str(raised).encode()) < 4096
        assert reader.recv() == ["pid", "42"] and reader.recv() is None
    finally:
        os.close(r)


def test_tabs_and_newlines_in_a_field_cannot_forge_another() -> None:
    r, w = os.pipe()
    try:
        sync.send(w, "error", "step", "a\tb\nerror\tforged", "", 3)
        os.close(w)
        reader = sync.Reader(r)
        assert reader.recv() == ["error", "step", "a b error forged", "", "3"] and reader.recv() is None
    finally:
        os.close(r)
