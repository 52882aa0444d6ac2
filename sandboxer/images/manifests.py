"""Manifest and layer media types, and choosing this platform's manifest from an index.

Shared by the registry client and the archive loader: an image index looks
the same whether it came over HTTP or out of an OCI layout, and the loader
must not import httpx (the registry module does) just to read two constants.
"""

from __future__ import annotations

import os
from typing import Any

from ..errors import SandboxerError, UsageError
from .store import MEDIA_TYPES

__all__ = ["MANIFEST_TYPES", "INDEX_TYPES", "IMAGE_MANIFEST_TYPES", "LAYER_TYPES", "NoPlatformError",
           "parse_platform", "platform_matches", "choose_manifest"]

MANIFEST_TYPES = {
    "oci_index": "application/vnd.oci.image.index.v1+json",
    "docker_list": "application/vnd.docker.distribution.manifest.list.v2+json",
    "oci_manifest": MEDIA_TYPES["oci_manifest"],
    "docker_manifest": "application/vnd.docker.distribution.manifest.v2+json",
}
INDEX_TYPES = (MANIFEST_TYPES["oci_index"], MANIFEST_TYPES["docker_list"])
IMAGE_MANIFEST_TYPES = (MANIFEST_TYPES["oci_manifest"], MANIFEST_TYPES["docker_manifest"])
#: what the store can unpack: plain, gzip and zstd tars (zstd needs the ``zstandard`` module)
LAYER_TYPES = frozenset({
    "application/vnd.oci.image.layer.v1.tar", "application/vnd.oci.image.layer.v1.tar+gzip",
    "application/vnd.docker.image.rootfs.diff.tar.gzip",
    "application/vnd.oci.image.layer.nondistributable.v1.tar+gzip",
    "application/vnd.oci.image.layer.v1.tar+zstd", "application/vnd.docker.image.rootfs.diff.tar.zstd",
})


class NoPlatformError(SandboxerError):
    """An image index holds no manifest for the platform asked for."""


def parse_platform(text: str | None) -> tuple[str, str, str | None]:
    """``linux/amd64[/v8]``; default: this machine."""
    if not text:
        machine = os.uname().machine
        return "linux", {"x86_64": "amd64", "aarch64": "arm64"}.get(machine, machine), None
    parts = text.split("/")
    if len(parts) not in (2, 3) or not all(parts):
        raise UsageError(f"invalid platform {text!r}", hint="use OS/ARCH[/VARIANT], e.g. linux/amd64")
    return parts[0], parts[1], parts[2] if len(parts) == 3 else None


def platform_matches(entry: dict[str, Any], platform: str | None) -> bool:
    """Whether an index entry's ``platform`` is the one asked for (default: this machine's)."""
    want_os, want_arch, want_variant = parse_platform(platform)
    p = entry.get("platform") or {}
    return (p.get("os"), p.get("architecture")) == (want_os, want_arch) and want_variant in (None, p.get("variant"))


def choose_manifest(index: dict[str, Any], platform: str | None, what: str) -> dict[str, Any]:
    """The first entry of ``index`` for ``platform``; ``what`` names the image in the error."""
    entries = [e for e in index.get("manifests") or [] if isinstance(e, dict)]
    for entry in entries:
        if platform_matches(entry, platform):
            return entry
    want_os, want_arch, _ = parse_platform(platform)
    have = ", ".join(sorted({f"{p.get('os')}/{p.get('architecture')}" for p in
                             (e.get("platform") or {} for e in entries)}))
    raise NoPlatformError(f"{what} has no image for {want_os}/{want_arch}",
                          hint=f"available: {have or 'none'}; choose one with --platform")
