""".containerignore / .dockerignore: which files of a build context COPY and ADD never see.

The rules are Docker's (moby's ``patternmatcher``), so an existing
``.dockerignore`` means the same here: one pattern a line, ``#`` comments,
``*`` and ``?`` within one path component, ``**`` across any number of
them, ``[...]`` classes, ``\\`` escapes, a leading ``!`` re-includes.  A
pattern that matches a directory excludes everything below it, and the
last pattern that matches a path decides.  Patterns are relative to the
context root (a leading ``/`` is dropped).
"""

from __future__ import annotations

import os
import posixpath
import re

from ..errors import UsageError

__all__ = ["IgnoreRules", "IGNORE_FILES"]

#: looked for in the context root, in this order (podman's)
IGNORE_FILES = (".containerignore", ".dockerignore")
_REGEX_SPECIALS = frozenset(".+()|{}$^")


class IgnoreRules:
    """Compiled patterns of one ignore file; :meth:`excluded` answers for a context-relative path."""

    def __init__(self, lines: list[str], source: str | None = None) -> None:
        self.source = source
        self._rules: list[tuple[bool, re.Pattern[str]]] = []
        for raw in lines:
            line = raw.strip()
            if not line or line.startswith("#"):
                continue
            exception = line.startswith("!")
            if exception:
                line = line[1:].strip()
            if not line:
                continue
            line = posixpath.normpath(line)
            if len(line) > 1 and line.startswith("/"):
                line = line.lstrip("/")
            if line == ".":
                continue  # Docker ignores a pattern for the context root itself
            self._rules.append((exception, _compile(line)))

    @classmethod
    def load(cls, context: str) -> IgnoreRules:
        """The rules of ``.containerignore`` (else ``.dockerignore``) in ``context``; none if neither exists."""
        for name in IGNORE_FILES:
            path = os.path.join(context, name)
            try:
                with open(path, encoding="utf-8", errors="surrogateescape") as f:
                    return cls(f.read().splitlines(), path)
            except FileNotFoundError:
                continue
            except OSError as e:  # unreadable, a directory: what it would exclude is unknown, so no build
                raise UsageError(f"cannot read the build's ignore file {path}: {e.strerror}",
                                 hint=f"make {name} a readable file, or remove it") from None
        return cls([])

    @property
    def has_exceptions(self) -> bool:
        """Whether some ``!pattern`` may re-include a path below an excluded directory."""
        return any(exception for exception, _ in self._rules)

    def __bool__(self) -> bool:
        return bool(self._rules)

    def excluded(self, rel: str) -> bool:
        """Whether the context-relative path ``rel`` (``/``-separated) is excluded."""
        rel = posixpath.normpath(rel)
        parents = rel.split("/")[:-1]
        matched = False
        for exception, regex in self._rules:
            if exception != matched:
                continue  # only an exception can change a match, only an exclusion a non-match
            hit = regex.match(rel) is not None
            if not hit:
                hit = any(regex.match("/".join(parents[:i])) for i in range(1, len(parents) + 1))
            if hit:
                matched = not exception
        return matched


def _compile(pattern: str) -> re.Pattern[str]:
    """A pattern as moby's patternmatcher turns it into a regular expression."""
    out = ["^"]
    i, n = 0, len(pattern)
    while i < n:
        ch = pattern[i]
        i += 1
        if ch == "*":
            if i < n and pattern[i] == "*":
                i += 1
                if i < n and pattern[i] == "/":
                    i += 1
                out.append(".*" if i >= n else "(.*/)?")
            else:
                out.append("[^/]*")
        elif ch == "?":
            out.append("[^/]")
        elif ch == "\\":
            if i < n:
                out.append(re.escape(pattern[i]))
                i += 1
            else:
                out.append(r"\\")
        elif ch == "[":
            out.append("[")
            if i < n and pattern[i] in "!^":
                out.append("^")
                i += 1
        elif ch == "]":
            out.append("]")
        elif ch in _REGEX_SPECIALS:
            out.append("\\" + ch)
        else:
            out.append(ch)
    out.append("$")
    try:
        return re.compile("".join(out), re.DOTALL)
    except re.error:
        return re.compile(re.escape(pattern) + "$")  # an unbalanced class: match it literally
