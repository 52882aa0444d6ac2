"""Resolving a path's symbolic links inside a root, as if that root were ``/``.

A sandbox's root (its bind mounts' destinations) and an image's layers
(COPY, WORKDIR, /etc/passwd) both hold links written by someone else: an
absolute one, or one that climbs out with ``..``, must stay inside.  The
walk is the same for both; only how one component is looked at differs.
"""

from __future__ import annotations

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Callable

__all__ = ["follow_links", "MAX_LINKS"]

#: as the kernel's limit on the links one path lookup follows
MAX_LINKS = 40


def _parts(path: str) -> list[str]:
    return [p for p in path.split("/") if p not in ("", ".")]


def follow_links(path: str, link_at: Callable[[list[str], str, bool], str | None],
                 too_many: Callable[[], Exception]) -> list[str]:
    """The components of ``path`` with every link resolved inside the root (``..`` stops at it).

    ``link_at(done, part, last)`` looks at component ``part`` below the resolved ``done``
    (``last``: nothing follows it) and returns the target of a link to follow there, or None;
    it may raise to refuse the component.  More than :data:`MAX_LINKS` links raise ``too_many()``.
    """
    todo = _parts(path)
    done: list[str] = []
    hops = 0
    while todo:
        part = todo.pop(0)
        if part == "..":
            if done:
                done.pop()
            continue
        target = link_at(done, part, not todo)
        if target is None:
            done.append(part)
            continue
        hops += 1
        if hops > MAX_LINKS:
            raise too_many()
        if target.startswith("/"):
            done = []
        todo = _parts(target) + todo
    return done
