"""The build context: what COPY and ADD may read, and a digest of it for the layer cache.

Sources are resolved the way Docker resolves them: relative to the context
root, with ``*``/``?``/``[...]`` globs per path component, never outside
the context (``../x``, an absolute path, or a symlink that leads out is an
error, not a silent skip), and never what ``.containerignore`` /
``.dockerignore`` excludes.  A directory source stands for its content.

:meth:`BuildContext.digest` hashes names, types, modes, link targets and
file content of exactly what would be copied, so the cache key of a COPY
changes when any of that changes and not when an ignored file or an mtime
does (as in Docker).
"""

from __future__ import annotations

import fnmatch
import hashlib
import os
import stat

from ..errors import SandboxerError
from ..records import record
from .ignore import IgnoreRules

__all__ = ["BuildContext", "Source", "Entry", "ContextError"]

_GLOB_CHARS = frozenset("*?[")
_CHUNK = 1 << 20


class ContextError(SandboxerError):
    """A COPY/ADD source is missing, excluded, unreadable or outside the build context."""


class Entry(record("Entry", "rel path st")):
    """One file, directory or symlink below a directory source: ``rel`` is ``/``-separated, relative
    to the source; ``path`` the host path; ``st`` its ``lstat``."""

    rel: str
    path: str
    st: os.stat_result
    __slots__ = ()


class Source(record("Source", "name path st entries")):
    """A resolved source: ``name`` context-relative, ``path`` on the host, ``st`` its ``stat``
    (top-level symlinks followed), ``entries`` what a directory source holds (empty for a file)."""

    name: str
    path: str
    st: os.stat_result
    entries: list[Entry]
    __slots__ = ()

    @property
    def is_dir(self) -> bool:
        return stat.S_ISDIR(self.st.st_mode)


class BuildContext:
    """A context directory and its ignore rules."""

    def __init__(self, root: str) -> None:
        self.root = os.path.realpath(root)
        self.rules = IgnoreRules.load(self.root)

    def _excluded(self, rel: str) -> bool:
        return bool(self.rules) and self.rules.excluded(rel)

    def sources(self, patterns: list[str], what: str) -> list[Source]:
        """Resolve COPY/ADD source patterns; ``what`` (``FILE:LINE: COPY``) starts every error."""
        out: list[Source] = []
        for pattern in patterns:
            if pattern.startswith("/"):
                raise ContextError(f"{what}: {pattern}: absolute source paths are not allowed",
                                   hint="sources are relative to the build context directory")
            clean = os.path.normpath(pattern)
            if clean == ".." or clean.startswith("../"):
                raise ContextError(f"{what}: {pattern} is outside the build context {self.root}",
                                   hint="move the file into the context, or use a larger context directory")
            matches = self._glob(clean)
            if not matches:
                ignored = self.rules.source if self.rules else None
                raise ContextError(f"{what}: {pattern}: no such file or directory in the build context",
                                   hint=f"the context is {self.root}" + (f"; check the patterns in {ignored}"
                                                                          if ignored else ""))
            out.extend(self._source(rel, what) for rel in matches)
        return out

    def _glob(self, clean: str) -> list[str]:
        """Context-relative paths that ``clean`` names (globs expanded), ignored ones left out."""
        if clean == ".":
            return ["."]
        found = [""]
        for part in clean.split("/"):
            nxt: list[str] = []
            for base in found:
                parent = os.path.join(self.root, base)
                if not (set(part) & _GLOB_CHARS):
                    names = [part] if os.path.lexists(os.path.join(parent, part)) else []
                else:
                    try:
                        names = sorted(n for n in os.listdir(parent) if fnmatch.fnmatchcase(n, part))
                    except (NotADirectoryError, FileNotFoundError, PermissionError):
                        names = []
                nxt.extend(f"{base}/{n}" if base else n for n in names)
            found = nxt
        return [rel for rel in found if not self._excluded(rel)]

    def _inside(self, path: str) -> bool:
        return path == self.root or path.startswith(self.root.rstrip("/") + "/")

    def _source(self, rel: str, what: str) -> Source:
        path = os.path.join(self.root, rel) if rel != "." else self.root
        real = os.path.realpath(path)
        if not self._inside(real):
            raise ContextError(f"{what}: {rel} leads outside the build context (to {real})",
                               hint="a source symlink must point inside the context")
        real_rel = os.path.relpath(real, self.root)
        if real_rel != "." and real_rel != rel and self._excluded(real_rel):  # a link to what is ignored
            assert self.rules is not None
            raise ContextError(f"{what}: {rel} leads to {real_rel}, which {self.rules.source} excludes",
                               hint="an excluded file stays out of the build, however it is named")
        try:
            st = os.stat(real)
        except OSError as e:
            raise ContextError(f"{what}: cannot read {rel}: {e.strerror}") from None
        # entries are checked against the ignore rules where they are, not under a link's name
        entries = self._walk(real, "" if real_rel == "." else real_rel, what) if stat.S_ISDIR(st.st_mode) else []
        if stat.S_ISREG(st.st_mode) and not os.access(real, os.R_OK):
            raise ContextError(f"{what}: cannot read {rel}: permission denied")
        return Source(rel, real, st, entries)

    def _walk(self, top: str, top_rel: str, what: str) -> list[Entry]:
        """Everything below the directory ``top`` that is not ignored, parents before children, sorted."""
        out: list[Entry] = []

        def visit(directory: str, rel: str) -> bool:
            try:
                names = sorted(os.listdir(directory))
            except OSError as e:
                raise ContextError(f"{what}: cannot read {os.path.relpath(directory, self.root)}: "
                                   f"{e.strerror}") from None
            kept = False
            for name in names:
                path = os.path.join(directory, name)
                sub = f"{rel}/{name}" if rel else name
                ctx_rel = f"{top_rel}/{sub}" if top_rel else sub
                st = os.lstat(path)
                excluded = self._excluded(ctx_rel)
                if stat.S_ISDIR(st.st_mode):
                    if excluded and not self.rules.has_exceptions:
                        continue
                    at = len(out)
                    out.append(Entry(sub, path, st))
                    inner = visit(path, sub)
                    if excluded and not inner:
                        del out[at]  # nothing below was re-included by a !pattern
                        continue
                    kept = True
                elif not excluded:
                    if stat.S_ISREG(st.st_mode) and not os.access(path, os.R_OK):
                        raise ContextError(f"{what}: cannot read {ctx_rel}: permission denied",
                                           hint="make it readable, or exclude it in .containerignore")
                    out.append(Entry(sub, path, st))
                    kept = True
            return kept

        visit(top, "")
        return out

    @staticmethod
    def digest(sources: list[Source]) -> str:
        """sha256 over what the sources would copy: names, types, modes, link targets, content."""
        h = hashlib.sha256()
        for src in sources:
            h.update(f"source\0{src.name}\0{_describe(src.path, src.st)}\0".encode("utf-8", "surrogateescape"))
            if not src.is_dir:
                _hash_content(h, src.path, src.st)
            for e in src.entries:
                h.update(f"entry\0{e.rel}\0{_describe(e.path, e.st)}\0".encode("utf-8", "surrogateescape"))
                _hash_content(h, e.path, e.st)
        return f"sha256:{h.hexdigest()}"


def _describe(path: str, st: os.stat_result) -> str:
    kind = stat.S_IFMT(st.st_mode)
    link = os.readlink(path) if stat.S_ISLNK(st.st_mode) else ""
    return f"{kind:o}\0{stat.S_IMODE(st.st_mode):o}\0{st.st_size if stat.S_ISREG(st.st_mode) else 0}\0{link}"


def _hash_content(h: hashlib._Hash, path: str, st: os.stat_result) -> None:
    if not stat.S_ISREG(st.st_mode):
        return
    try:
        with open(path, "rb") as f:
            while chunk := f.read(_CHUNK):
                h.update(chunk)
    except OSError as e:
        raise ContextError(f"cannot read {path}: {e.strerror}") from None
