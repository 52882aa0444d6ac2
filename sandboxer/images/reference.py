"""Image references: ``[DOMAIN/]PATH[:TAG][@DIGEST]``, normalised as docker does.

``busybox`` is ``docker.io/library/busybox:latest``; a first component with
a dot or a port, or ``localhost``, is a registry domain.  The store keys its
index by the normalised form and shows the familiar short one.
"""

from __future__ import annotations

import re
from typing import NamedTuple

from ..errors import UsageError

__all__ = ["Reference", "parse_reference"]

DEFAULT_DOMAIN = "docker.io"
_PATH_COMPONENT = re.compile(r"^[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*$")
_TAG = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}$")
_DIGEST = re.compile(r"^sha256:[a-f0-9]{64}$")


class Reference(NamedTuple):
    domain: str
    path: str
    tag: str | None
    digest: str | None

    @property
    def repository(self) -> str:
        return f"{self.domain}/{self.path}"

    def __str__(self) -> str:
        out = self.repository
        if self.tag:
            out += f":{self.tag}"
        if self.digest:
            out += f"@{self.digest}"
        return out

    @property
    def familiar(self) -> str:
        """The short form users type: ``busybox:latest`` rather than ``docker.io/library/…``."""
        repo = self.repository.removeprefix(f"{DEFAULT_DOMAIN}/").removeprefix("library/")
        return f"{repo}:{self.tag}" if self.tag else repo


def parse_reference(text: str) -> Reference:
    """Parse and normalise; a bad name is a :class:`UsageError` naming the part at fault."""
    hint = "image names look like NAME[:TAG], e.g. busybox:latest or localhost:5000/team/app:1.0"
    if not text or text != text.strip():
        raise UsageError(f"invalid image name {text!r}", hint=hint)
    rest, _, digest = text.partition("@")
    if digest and not _DIGEST.match(digest):
        raise UsageError(f"invalid digest {digest!r} in image name {text!r}", hint="digests look like sha256:<64 hex>")
    slash = rest.rfind("/")
    colon = rest.rfind(":")
    tag = None
    if colon > slash:
        rest, tag = rest[:colon], rest[colon + 1:]
        if not _TAG.match(tag):
            raise UsageError(f"invalid tag {tag!r} in image name {text!r}", hint=hint)
    first, sep, remainder = rest.partition("/")
    if sep and ("." in first or ":" in first or first == "localhost"):
        domain, path = first, remainder
    else:
        domain, path = DEFAULT_DOMAIN, rest
    if domain == DEFAULT_DOMAIN and "/" not in path:
        path = f"library/{path}"
    if not path or not all(_PATH_COMPONENT.match(c) for c in path.split("/")):
        raise UsageError(f"invalid image name {text!r}", hint=hint)
    if tag is None and digest == "":
        tag = "latest"
    return Reference(domain, path, tag, digest or None)
