#!/usr/bin/env python3
"""Build the ``python`` test image's root filesystem: busybox plus the host's Debian Python, offline.

    python3 images/python.py OUT.tar             # then: sandboxer import OUT.tar sandboxer-test/python

Debian's interpreter (``/usr/bin/python3``), its standard library (without the ``test`` package,
``idlelib``, ``tkinter`` and ``ensurepip``) and every shared library that
the interpreter and its extension modules link against (found with
``ldd``) are copied in, at the host's paths, all owned by root.  The result
runs ``python3`` with the standard library — no pip, no site-packages.
"""

from __future__ import annotations

import glob
import os
import subprocess
import sys
import tarfile

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from busybox import DIRS, add_busybox  # a sibling recipe

SKIP = ("test", "idlelib", "tkinter", "ensurepip", "turtledemo", "lib2to3/tests", "site-packages",
        "dist-packages")
#: Debian's interpreter, whatever Python runs this recipe (a pyenv build would drag in its own tree)
PYTHON = "/usr/bin/python3"


def interpreter() -> tuple[str, str, str]:
    """(executable, stdlib, platstdlib) of :data:`PYTHON`."""
    code = ("import os, sys, sysconfig; print(os.path.realpath(sys.executable)); "
            "print(sysconfig.get_path('stdlib')); print(sysconfig.get_path('platstdlib'))")
    out = subprocess.run([PYTHON, "-I", "-c", code], capture_output=True, text=True, check=True).stdout.split()
    return out[0], out[1], out[2]


def shared_libraries(binaries: list[str]) -> set[str]:
    libs: set[str] = set()
    for chunk in range(0, len(binaries), 50):
        out = subprocess.run(["ldd", *binaries[chunk:chunk + 50]], capture_output=True, text=True).stdout
        for line in out.splitlines():
            parts = line.split()
            for part in parts:
                if part.startswith("/") and os.path.exists(part):
                    libs.add(part)
    return libs


def build(path: str) -> None:
    executable, stdlib, platstdlib = interpreter()
    extensions = glob.glob(os.path.join(platstdlib, "lib-dynload", "*.so"))
    # files at their real paths (a layer must not write through symlinks); the loader's own path added below
    needed = shared_libraries([executable, *extensions])
    files = sorted({os.path.realpath(p) for p in needed} | {executable})
    # the names the loader asks for (libz.so.1 -> libz.so.1.2.13), next to the files they name
    sonames = {os.path.join(os.path.realpath(os.path.dirname(p)), os.path.basename(p)): os.path.realpath(p)
               for p in needed if os.path.basename(p) != os.path.basename(os.path.realpath(p))}
    loader = "/lib64/ld-linux-x86-64.so.2"
    with tarfile.open(path, "w", format=tarfile.PAX_FORMAT) as tar:
        add_busybox(tar)

        def owned_by_root(ti: tarfile.TarInfo) -> tarfile.TarInfo | None:
            rel = os.path.relpath("/" + ti.name, stdlib)
            if not rel.startswith("..") and any(rel == s or rel.startswith(s + "/") for s in SKIP):
                return None
            ti.uid = ti.gid = 0
            ti.uname = ti.gname = "root"
            return ti

        def symlink(name: str, target: str) -> None:
            ti = tarfile.TarInfo(name)
            ti.type, ti.linkname, ti.mode = tarfile.SYMTYPE, target, 0o777
            tar.addfile(ti)

        # directories busybox already has are not added twice (podman import refuses duplicate paths)
        parents = sorted({d for f in [*files, stdlib] for d in _parents(f)} - {f"/{d}" for d in DIRS})
        for parent in parents:
            tar.add(parent, parent.lstrip("/"), recursive=False, filter=owned_by_root)
        tar.add(stdlib, stdlib.lstrip("/"), filter=owned_by_root)
        for name in files:
            tar.add(name, name.lstrip("/"), filter=owned_by_root)
        for name, target in sorted(sonames.items()):
            symlink(name.lstrip("/"), os.path.basename(target))
        symlink("lib", "usr/lib")  # merged /usr, as Debian lays it out: /lib/x86_64-linux-gnu/... resolves
        if os.path.exists(loader):
            tar.add("/usr/lib64", "lib64", recursive=False, filter=owned_by_root)
            symlink(loader.lstrip("/"), os.path.realpath(loader))
        symlink("usr/bin/python3", executable)


def _parents(path: str) -> list[str]:
    out = []
    path = os.path.dirname(path)
    while path not in ("/", ""):
        out.append(path)
        path = os.path.dirname(path)
    return out

if __name__ == "__main__":
    if len(sys.argv) != 2:
        sys.exit("usage: python.py OUT.tar")
    build(sys.argv[1])
