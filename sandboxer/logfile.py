"""A detached sandbox's log: written by its supervisor, read by ``sandboxer logs``.

The supervisor relays the workload's stdout and stderr through pipes
(:func:`pump`) rather than handing it the file, so that every line gets a
timestamp and the file can rotate.  One record per line, as podman's
``k8s-file`` format::

    2026-11-28T12:00:00.123456789Z stdout F the line's bytes

``F`` marks a full line, ``P`` a piece of one (the workload wrote no newline
yet; the rest follows in later records of the same stream).  When the file
would grow past ``max_size`` it becomes ``<log>.1`` (replacing the previous
one) and a new file starts: at most about twice ``max_size`` on disk.
"""

from __future__ import annotations

import os
import select
import time

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Callable, Iterable, Iterator
    from typing import BinaryIO

__all__ = ["DEFAULT_MAX_SIZE", "LogWriter", "pump", "parse_size", "Record", "read", "tail"]

#: rotate at this size unless ``--log-opt max-size=`` says otherwise
DEFAULT_MAX_SIZE = 10 * 1000 * 1000
_STREAMS = (b"stdout", b"stderr")
#: a longer line is recorded in pieces of this size (as docker does), or a quarter of max-size
_PIECE = 16384


def parse_size(text: str) -> int:
    """``10m``, ``512k``, ``1g``, ``4096`` (bytes) — docker's ``max-size`` spelling; ``-1`` for no limit."""
    from .errors import UsageError

    value = text.strip().lower()
    if value == "-1":
        return 0
    units = {"k": 1000, "m": 1000 ** 2, "g": 1000 ** 3}
    scale = units.get(value[-1:], 1)
    number = value[:-1].removesuffix("b") if value[-1:] in units else value.removesuffix("b")
    if not number.isdecimal() or int(number) * scale < 4096:
        raise UsageError(f"invalid log size {text!r}", hint="use a size of at least 4k, e.g. max-size=10m, or -1")
    return int(number) * scale


def _stamp() -> bytes:
    ns = time.time_ns()
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(ns // 10**9)).encode() + b".%09dZ" % (ns % 10**9)


class LogWriter:
    """Appends records to the log, rotating it at ``max_size`` bytes (0: never)."""

    __slots__ = ("path", "max_size", "fd", "size")

    def __init__(self, path: str, max_size: int = DEFAULT_MAX_SIZE) -> None:
        self.path = path
        self.max_size = max_size
        self.fd = self._open()
        self.size = os.fstat(self.fd).st_size

    def _open(self) -> int:
        return os.open(self.path, os.O_WRONLY | os.O_CREAT | os.O_APPEND | os.O_CLOEXEC, 0o600)

    def write(self, stream: int, data: bytes) -> None:
        """Record ``data`` read from stream 1 (stdout) or 2 (stderr): one record per line, long lines
        in pieces, so that no file grows past ``max_size``."""
        head = _stamp() + b" " + _STREAMS[stream - 1]
        piece = min(_PIECE, self.max_size // 4) if self.max_size else _PIECE
        batch: list[bytes] = []  # joined once: a read of 65,536 one-byte lines made bytes += quadratic
        pending = 0
        *lines, last = data.split(b"\n")
        for i, line in enumerate([*lines, last]):
            full = i < len(lines)
            if not line and not full:
                break
            while True:
                part, line = line[:piece], line[piece:]
                record = b"%s %s %s\n" % (head, b"F" if full and not line else b"P", part)
                if self.max_size and self.size + pending + len(record) > self.max_size:
                    self._append(b"".join(batch))
                    batch, pending = [], 0
                    if self.size:
                        self._rotate()
                batch.append(record)
                pending += len(record)
                if not line:
                    break
        self._append(b"".join(batch))

    def _rotate(self) -> None:
        os.close(self.fd)
        os.replace(self.path, f"{self.path}.1")
        self.fd = self._open()
        self.size = 0

    def _append(self, out: bytes) -> None:
        while out:  # a full disk drops the output rather than stopping the workload
            try:
                n = os.write(self.fd, out)
            except OSError:
                return
            self.size += n
            out = out[n:]

    def close(self) -> None:
        os.close(self.fd)


def pump(writer: LogWriter, sources: dict[int, int], until: int | None = None,
         deadline: float | None = None) -> None:
    """Copy ``sources`` (read fd → stream number) into ``writer``.

    With ``until``: return as soon as that fd is readable (the sandbox's status arrived) or at
    ``deadline``; the sources stay open.  Without: copy until every source reaches end of file
    (every writer is gone), then close them — nothing the workload wrote is lost.
    """
    while sources:
        watch = [*sources, until] if until is not None else list(sources)
        timeout = None if deadline is None else max(0.0, deadline - time.monotonic())
        try:
            ready, _, _ = select.select(watch, [], [], timeout)
        except InterruptedError:
            continue
        if not ready:
            return  # the deadline passed
        for fd in ready:
            if fd == until:
                continue
            data = os.read(fd, 65536)
            if data:
                writer.write(sources[fd], data)
            else:
                del sources[fd]
                os.close(fd)
        if until is not None and until in ready:
            return


class Record:
    """One parsed log record."""

    __slots__ = ("stamp", "stream", "partial", "data")

    def __init__(self, stamp: bytes, stream: int, partial: bool, data: bytes) -> None:
        self.stamp = stamp
        self.stream = stream      #: 1 stdout, 2 stderr
        self.partial = partial    #: no newline at its end yet
        self.data = data


def _parse(line: bytes) -> Record | None:
    parts = line.split(b" ", 3)
    if len(parts) != 4 or parts[1] not in _STREAMS:
        return None
    return Record(parts[0], 2 if parts[1] == b"stderr" else 1, parts[2] == b"P", parts[3])


def _read_file(f: BinaryIO, rest: bytes = b"") -> tuple[list[Record], bytes]:
    """Records of what ``f`` holds from where it is; an incomplete last line is returned for later."""
    left = [rest]
    return list(_scan(f, left)), left[0]


def _scan(f: BinaryIO, rest: list[bytes]) -> Iterator[Record]:
    """Records of ``f`` from where it is, read a block at a time (the writer keeps every line short, so
    memory stays small however big the file); its incomplete last line is left in ``rest[0]``."""
    pending = rest[0]
    while chunk := f.read(1 << 16):
        *lines, pending = (pending + chunk).split(b"\n")
        yield from (r for r in map(_parse, lines) if r is not None)
    rest[0] = pending


def read(path: str, last: int | None = None, running: Callable[[], bool] | None = None) -> Iterator[Record]:
    """The log's records, the rotated file's first; only those of the ``last`` lines if given.

    With ``running``, keep following the log (across rotations) until ``running()`` is false.
    Streamed: ``logs --tail 5`` holds five lines, not the log (it held both files' records).
    """
    f = _open_quiet(path)
    older = _open_quiet(f"{path}.1")
    if older is not None and f is not None and os.fstat(older.fileno()).st_ino == os.fstat(f.fileno()).st_ino:
        older.close()  # rotated between the two opens: it is the file we hold
        older = None
    current_rest = [b""]

    def everything() -> Iterator[Record]:
        if older is not None:
            with older:
                yield from _scan(older, [b""])
        if f is not None:
            yield from _scan(f, current_rest)

    yield from (everything() if last is None else tail(everything(), last))
    rest = current_rest[0]
    if running is None:
        if f is not None:
            f.close()
        return
    while True:
        more, rest = _read_file(f, rest) if f is not None else ([], b"")
        yield from more
        if more:
            continue
        if f is None or _rotated(f, path):
            if f is not None:  # what was written to it just before the rotation
                yield from _read_file(f, rest)[0]
                between = _open_quiet(f"{path}.1")
                if between is not None and os.fstat(between.fileno()).st_ino != os.fstat(f.fileno()).st_ino:
                    with between:  # it rotated twice since we looked: the file in between, whole
                        yield from _read_file(between)[0]
                elif between is not None:
                    between.close()
                f.close()
            f, rest = _open_quiet(path), b""
            if f is not None:
                continue
        if not running():
            if f is not None:  # what arrived between the last read and the end
                yield from _read_file(f, rest)[0]
                f.close()
            return
        time.sleep(0.05)


def tail(found: Iterable[Record], lines: int) -> list[Record]:
    """The records of the last ``lines`` lines (of both streams, as they were written)."""
    from collections import deque

    kept: deque[list[Record]] = deque(maxlen=max(lines, 0))
    open_line: dict[int, list[Record]] = {}
    for record in found:
        current = open_line.get(record.stream)
        if current is None:
            current = open_line[record.stream] = []
            kept.append(current)
        current.append(record)
        if not record.partial:
            del open_line[record.stream]
    return [r for line in kept for r in line]


def _open_quiet(path: str) -> BinaryIO | None:
    try:
        return open(path, "rb")
    except FileNotFoundError:
        return None


def _rotated(f: BinaryIO, path: str) -> bool:
    try:
        return os.stat(path).st_ino != os.fstat(f.fileno()).st_ino
    except FileNotFoundError:
        return False
