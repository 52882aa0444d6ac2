"""Image references: ``[DOMAIN/]PATH[:TAG][@DIGEST]``, normalised as docker does.

``busybox`` is ``docker.io/library/busybox:latest``; a first component with
a dot or a port, or ``localhost``, is a registry domain.  The store keys its
index by the normalised form and shows the familiar short one.
"""

from __future__ import annotations

from ..errors import UsageError
from ..records import record

__all__ = ["Reference", "parse_reference"]

DEFAULT_DOMAIN = "docker.io"
_ALNUM = frozenset("abcdefghijklmnopqrstuvwxyz0123456789")
_TAG_CHARS = frozenset("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789_.-")
_HEX = frozenset("0123456789abcdef")


def _is_component(text: str) -> bool:
    """``[a-z0-9]+`` runs joined by ``.``, ``_``, ``__`` or dashes (the distribution grammar).

    Checked by hand: importing ``re`` costs ~5 ms of ``sandboxer run IMAGE``.
    """
    if not text or text[0] not in _ALNUM or text[-1] not in _ALNUM:
        return False
    separator = ""
    for ch in text:
        if ch in _ALNUM:
            if separator not in ("", ".", "_", "__") and set(separator) != {"-"}:
                return False
            separator = ""
        else:
            separator += ch
    return True


def _is_tag(text: str) -> bool:
    return 0 < len(text) <= 128 and text[0] not in ".-" and set(text) <= _TAG_CHARS


def _is_digest(text: str) -> bool:
    algo, _, value = text.partition(":")
    return algo == "sha256" and len(value) == 64 and set(value) <= _HEX


class Reference(record("Reference", "domain path tag digest")):
    """A normalised image reference; ``str()`` is the full form, :attr:`familiar` the short one."""

    domain: str
    path: str
    tag: str | None
    digest: str | None
    __slots__ = ()

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
    if digest and not _is_digest(digest):
        raise UsageError(f"invalid digest {digest!r} in image name {text!r}", hint="digests look like sha256:<64 hex>")
    slash = rest.rfind("/")
    colon = rest.rfind(":")
    tag = None
    if colon > slash:
        rest, tag = rest[:colon], rest[colon + 1:]
        if not _is_tag(tag):
            raise UsageError(f"invalid tag {tag!r} in image name {text!r}", hint=hint)
    first, sep, remainder = rest.partition("/")
    if sep and ("." in first or ":" in first or first == "localhost"):
        domain, path = first, remainder
    else:
        domain, path = DEFAULT_DOMAIN, rest
    if domain == DEFAULT_DOMAIN and "/" not in path:
        path = f"library/{path}"
    if not path or not all(_is_component(c) for c in path.split("/")):
        raise UsageError(f"invalid image name {text!r}", hint=hint)
    if tag is None and digest == "":
        tag = "latest"
    return Reference(domain, path, tag, digest or None)
