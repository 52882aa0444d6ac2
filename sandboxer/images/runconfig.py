"""What an image's config says about running it: command, environment, directory, user.

Docker's rules: the command is ``Entrypoint`` + (the given command, else
``Cmd``); ``Env`` comes first and ``-e`` overrides it; ``WorkingDir`` and
``User`` apply unless given.  User and group names resolve in the image's
own ``/etc/passwd`` and ``/etc/group``, never the host's.
"""

from __future__ import annotations

from ..errors import UsageError
from ..records import record
from .merged import read_image_file  # at import: exec resolves users after joining the sandbox's root

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Sequence
    from typing import Any

__all__ = ["ImageDefaults", "image_defaults", "ImageAccounts"]


class ImageDefaults(record("ImageDefaults", "argv env workdir user")):
    """What the image says to run, with what, where, as whom."""

    argv: list[str]
    env: list[str]
    workdir: str
    user: str | None
    __slots__ = ()


def image_defaults(config: dict[str, Any], command: Sequence[str], name: str) -> ImageDefaults:
    entrypoint = _strings(config.get("Entrypoint"))
    argv = entrypoint + (list(command) or _strings(config.get("Cmd")))
    if not argv:
        raise UsageError(f"no command given, and image {name} has no Cmd or Entrypoint",
                         hint=f"sandboxer run {name} CMD [ARG...]")
    return ImageDefaults(argv, _strings(config.get("Env")), str(config.get("WorkingDir") or "/"),
                         str(config["User"]) if config.get("User") else None)


def _strings(value: object) -> list[str]:
    return [str(v) for v in value] if isinstance(value, list) else []


class ImageAccounts:
    """``/etc/passwd`` and ``/etc/group`` of an image, read from its layers (top first)."""

    def __init__(self, lowers: Sequence[str]) -> None:
        self._lowers = lowers

    def _entries(self, name: str) -> list[list[str]]:
        text = read_image_file(self._lowers, f"/etc/{name}") or ""
        return [line.split(":") for line in text.split("\n") if line.count(":") >= 2]  # \n only, as libc

    def user(self, name: str) -> tuple[int, int, str] | None:
        for fields in self._entries("passwd"):
            if len(fields) >= 6 and fields[0] == name and fields[2].isdecimal() and fields[3].isdecimal():
                return int(fields[2]), int(fields[3]), fields[5]
        return None

    def by_uid(self, uid: int) -> tuple[int, str] | None:
        for fields in self._entries("passwd"):
            if len(fields) >= 6 and fields[2] == str(uid) and fields[3].isdecimal():
                return int(fields[3]), fields[5]
        return None

    def group(self, name: str) -> int | None:
        for fields in self._entries("group"):
            if fields[0] == name and fields[2].isdecimal():
                return int(fields[2])
        return None
