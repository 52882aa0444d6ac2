#!/usr/bin/env python3
"""Build the ``busybox`` test image's root filesystem from the host's busybox-static, offline.

    python3 images/busybox.py OUT.tar            # then: sandboxer import OUT.tar sandboxer-test/busybox

The tarball is written with ``tarfile`` and carries its ownership in the
headers (root's files, a ``tester`` user 1000:1000 with a home), so building
it needs no root and no user namespace.  Applets are symlinks to
``/bin/busybox``, as Debian's busybox-static lays them out.
"""

from __future__ import annotations

import io
import subprocess
import sys
import tarfile
import time

BUSYBOX = "/bin/busybox"
PASSWD = ("root:x:0:0:root:/root:/bin/sh\n"
          "tester:x:1000:1000:tester:/home/tester:/bin/sh\n"
          "nobody:x:65534:65534:nobody:/nonexistent:/bin/false\n")
GROUP = "root:x:0:\ntty:x:5:\ntester:x:1000:\nnogroup:x:65534:\n"
DIRS = {"bin": 0o755, "sbin": 0o755, "usr": 0o755, "usr/bin": 0o755, "usr/sbin": 0o755, "etc": 0o755,
        "dev": 0o755, "proc": 0o555, "sys": 0o555, "tmp": 0o1777, "var": 0o755, "var/tmp": 0o1777,
        "run": 0o755, "root": 0o700, "home": 0o755}


def applets() -> list[str]:
    out = subprocess.run([BUSYBOX, "--list-full"], capture_output=True, text=True, check=True).stdout
    return sorted({line.strip() for line in out.splitlines() if line.strip() and line.strip() != "bin/busybox"})


def build(path: str) -> None:
    with tarfile.open(path, "w", format=tarfile.PAX_FORMAT) as tar:
        add_busybox(tar)


def add_busybox(tar: tarfile.TarFile) -> None:
    """The busybox root filesystem's entries (other recipes build on it)."""
    now = int(time.time())

    def info(name: str, kind: bytes, mode: int, uid: int = 0, gid: int = 0) -> tarfile.TarInfo:
        ti = tarfile.TarInfo(name)
        ti.type, ti.mode, ti.uid, ti.gid, ti.mtime = kind, mode, uid, gid, now
        return ti

    for name, mode in DIRS.items():
        tar.addfile(info(name, tarfile.DIRTYPE, mode))
    tar.addfile(info("home/tester", tarfile.DIRTYPE, 0o755, 1000, 1000))
    with open(BUSYBOX, "rb") as f:
        ti = info("bin/busybox", tarfile.REGTYPE, 0o755)
        f.seek(0, 2)
        ti.size = f.tell()
        f.seek(0)
        tar.addfile(ti, f)
    for applet in applets():
        link = info(applet, tarfile.SYMTYPE, 0o777)
        link.linkname = "/bin/busybox"
        tar.addfile(link)
    for name, text in (("etc/passwd", PASSWD), ("etc/group", GROUP), ("etc/hostname", "busybox\n")):
        data = text.encode()
        ti = info(name, tarfile.REGTYPE, 0o644)
        ti.size = len(data)
        tar.addfile(ti, io.BytesIO(data))


if __name__ == "__main__":
    if len(sys.argv) != 2:
        sys.exit("usage: busybox.py OUT.tar")
    build(sys.argv[1])
