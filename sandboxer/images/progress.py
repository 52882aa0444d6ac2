"""Progress of pulls and pushes: bars on a terminal (rich), plain lines elsewhere (CI logs).

The registry client reports per blob — ``start``, ``advance`` by bytes,
``finish`` with what happened — and free-form ``note`` lines; it never
knows which display is attached.  rich is imported only when a bar is
actually drawn.
"""

from __future__ import annotations

import sys

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any

__all__ = ["Progress", "Silent", "Lines", "choose"]


class Progress:
    """What the registry client calls; the base class ignores everything (``-q``)."""

    def note(self, text: str) -> None:
        pass

    def start(self, digest: str, total: int) -> None:
        pass

    def advance(self, digest: str, amount: int) -> None:
        pass

    def finish(self, digest: str, how: str) -> None:
        pass

    def close(self) -> None:
        pass


Silent = Progress


class Lines(Progress):
    """One line per event on stderr: readable in CI logs, no control characters."""

    def note(self, text: str) -> None:
        print(text, file=sys.stderr)

    def finish(self, digest: str, how: str) -> None:
        print(f"{digest[:19]}: {how}", file=sys.stderr)


class _Bars(Progress):
    """A rich bar per blob; safe to call from the download threads."""

    def __init__(self) -> None:
        import threading  # not on the run path, where a progress display is made in case of a pull

        from rich.progress import BarColumn, DownloadColumn, TextColumn
        from rich.progress import Progress as RichProgress

        self._rich = RichProgress(TextColumn("{task.description}"), BarColumn(), DownloadColumn(),
                                  transient=False)
        self._tasks: dict[str, Any] = {}  # digest -> rich TaskID
        self._lock = threading.Lock()
        self._rich.start()

    def note(self, text: str) -> None:
        self._rich.console.print(text)

    def start(self, digest: str, total: int) -> None:
        with self._lock:
            if digest not in self._tasks:
                self._tasks[digest] = self._rich.add_task(digest[:19], total=total if total >= 0 else None)

    def advance(self, digest: str, amount: int) -> None:
        task = self._tasks.get(digest)
        if task is not None:
            self._rich.advance(task, amount)

    def finish(self, digest: str, how: str) -> None:
        with self._lock:
            task = self._tasks.get(digest)
            if task is None:
                self._tasks[digest] = self._rich.add_task(f"{digest[:19]} {how}", total=1, completed=1)
            else:
                total = self._rich.tasks[task].total
                self._rich.update(task, description=f"{digest[:19]} {how}", completed=total or 1)

    def close(self) -> None:
        self._rich.stop()


def choose(quiet: bool) -> Progress:
    """Bars on a terminal when rich is there, lines otherwise, nothing with ``-q``."""
    if quiet:
        return Silent()
    if sys.stderr.isatty():
        try:
            return _Bars()
        except ImportError:
            pass
    return Lines()
