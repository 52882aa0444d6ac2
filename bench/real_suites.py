#!/usr/bin/env python3
"""Real third-party test suites give the same counts under ``--sandbox-all`` as bare.

For each project of :data:`PROJECTS` (a pinned version of a small pure-Python
project whose PyPI sdist ships its tests, and whose suite runs offline), this
script:

1. downloads the sdist with pip (``--no-deps --no-binary :all:``) into a
   temporary work dir and unpacks it;
2. installs the project and its test dependencies into one venv made for this
   run with the Python running the script (no ``--system-site-packages``),
   next to a copy of the sandboxer checkout (``--sandboxer-src``, by default
   the repository holding this script) and pytest;
3. runs ``python -m pytest -q -p no:cacheprovider TESTS`` in the unpacked
   sdist, once bare and once with ``--sandbox-all`` -- same arguments, same
   environment (less ``PYTEST_ADDOPTS``, ``PYTEST_PLUGINS`` and ``PYTHONPATH``);
4. parses pytest's closing counts line of each run (passed, failed, skipped,
   xfailed, xpassed, errors, warnings, subtests, ...) and its exit status.

It prints a table -- project, version, bare counts, sandboxed counts, whether
they are the same, and the wall time of each run -- then, for every project
that differs, which counts differ and the end of the sandboxed run's output.
It exits 1 if any project differs (a run with no counts line, e.g. pytest
crashing in its terminal summary, differs), 2 if the set-up itself failed.

Run it as an unprivileged user (rootless sandboxes are the point), with the
Python to test under; only PyPI needs to be reachable::

    python3 bench/real_suites.py [--sandboxer-src DIR] [--project NAME ...] [--keep]

The checkout is copied before it is installed, so a checkout the user cannot
write (a root-owned one) works.  Sandboxed tests see their venv, the sdist
dir and the current dir read-only, and pytest's basetemp read-write: that is
the plugin's design, and these suites do not write into their source trees.

Why these projects: their sdists include the tests, their suites need no
network (a sandbox has loopback only) and run in seconds bare on two cores,
and between them they cover plain pytest functions, unittest classes,
skips and xfails (six), a ``-ra`` summary and ``filterwarnings = error``
(toolz), pytest's subtests with ~21,000 subtest reports (more-itertools), and
a hypothesis suite with ``-ra``, skips, an xfail and class-scoped state
(attrs).  Evaluated and left out: ``jmespath`` 1.1.0 (its sdist lacks
``tests/__init__.py``, so collection fails bare), ``idna`` 3.20 (~6,400 tests:
several minutes sandboxed), ``python-dateutil`` 4.0.0 (its config needs
pytest-cov's marks), ``pyparsing`` 3.3.3 (its tests need the diagram extras).
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import subprocess
import sys
import tarfile
import tempfile
import time
import zipfile
from dataclasses import dataclass, field
from pathlib import Path

#: pytest for the venv; pinned so runs compare across days
PYTEST = "pytest==9.2.0"
RUN_TIMEOUT_S = 1200.0
#: lines of a differing sandboxed run's output to show
TAIL_LINES = 12


@dataclass(frozen=True)
class Project:
    """A pinned PyPI project whose sdist ships its test suite."""

    name: str
    version: str
    #: what pytest is given, relative to the unpacked sdist
    tests: tuple[str, ...]
    #: test dependencies, pinned
    deps: tuple[str, ...] = ()


PROJECTS: tuple[Project, ...] = (
    Project("six", "1.17.0", ("test_six.py",)),
    Project("toolz", "1.2.0", ("toolz",)),
    Project("more-itertools", "11.2.1", ("tests",)),
    Project("attrs", "26.1.0", ("tests",), ("hypothesis==6.170.17", "pympler==1.1", "cloudpickle==3.1.3")),
)


@dataclass
class Run:
    """One pytest run of a suite."""

    code: int
    seconds: float
    output: str
    #: the counts line's items in pytest's order, e.g. {"passed": 184, "skipped": 16}; None: no counts line
    counts: dict[str, int] | None

    def describe(self) -> str:
        if self.counts is None:
            return f"no counts line; rc={self.code}"
        if not self.counts:
            return f"no tests ran; rc={self.code}"
        return ", ".join(f"{n} {what}" for what, n in self.counts.items()) + f"; rc={self.code}"


@dataclass
class Result:
    """Both runs of one project."""

    project: Project
    bare: Run
    sandboxed: Run
    notes: list[str] = field(default_factory=list)

    @property
    def same(self) -> bool:
        return (self.bare.counts is not None and self.bare.counts == self.sandboxed.counts
                and self.bare.code == self.sandboxed.code)


class SetupError(Exception):
    """Downloading, unpacking or installing failed."""


# "1 failed, 1376 passed, 8 skipped, 1 xfailed in 9.64s" (-q) or "==== ... in 65.2s (0:01:05) ===="
_COUNTS_LINE = re.compile(r"^=*\s*(?P<body>.*?)\s+in\s+[\d.]+s(?:\s+\([\d:.]+\))?\s*=*\s*$")
_COUNT = re.compile(r"^(\d+) ([a-z][a-z ]*)$")
_SINGULAR = {"error": "errors", "warning": "warnings"}


def parse_counts(output: str) -> dict[str, int] | None:
    """The counts of pytest's closing line (the last one that parses), or None.

    "no tests ran" gives an empty dict.  Plurals are normalised ("1 error" is
    counted under "errors"), so a run is compared by outcome, not by wording.
    """
    for line in reversed(output.splitlines()):
        match = _COUNTS_LINE.match(line.strip())
        if not match:
            continue
        body = match.group("body")
        if body == "no tests ran":
            return {}
        counts: dict[str, int] = {}
        for part in body.split(", "):
            item = _COUNT.match(part.strip())
            if item is None:
                break
            what = _SINGULAR.get(item.group(2), item.group(2))
            counts[what] = counts.get(what, 0) + int(item.group(1))
        else:
            return counts
    return None


def _check(argv: list[str], what: str, cwd: Path | None = None) -> None:
    proc = subprocess.run(argv, cwd=cwd, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                          stderr=subprocess.STDOUT, text=True)
    if proc.returncode != 0:
        raise SetupError(f"{what} failed (rc={proc.returncode}): {' '.join(argv)}\n{proc.stdout[-4000:]}")


def _copy_checkout(src: Path, dst: Path) -> Path:
    """A copy of the checkout that pip can build in (it writes build/ and *.egg-info)."""
    if not (src / "pyproject.toml").is_file():
        raise SetupError(f"{src} is not a sandboxer checkout (no pyproject.toml)")
    ignore = shutil.ignore_patterns(".git", "__pycache__", "*.pyc", ".mypy_cache", ".pytest_cache",
                                    ".ruff_cache", "build", "*.egg-info", ".tox", ".venv")
    shutil.copytree(src, dst, ignore=ignore, symlinks=True)
    return dst


def make_venv(work: Path, sandboxer_src: Path) -> Path:
    """The run's venv with the sandboxer checkout and pytest; returns its python."""
    venv = work / "venv"
    _check([sys.executable, "-m", "venv", str(venv)], "creating the venv")
    python = venv / "bin" / "python"
    checkout = _copy_checkout(sandboxer_src, work / "sandboxer-src")
    _check([str(python), "-m", "pip", "install", "-q", str(checkout), PYTEST], "installing sandboxer and pytest")
    return python


def _unpack(archive: Path, dest: Path) -> Path:
    """Unpack an sdist; returns its single top-level dir."""
    if archive.name.endswith(".zip"):
        with zipfile.ZipFile(archive) as zf:
            zf.extractall(dest)
    else:
        with tarfile.open(archive) as tf:
            data_filter = getattr(tarfile, "data_filter", None)  # 3.11.4+
            if data_filter is not None:
                tf.extractall(dest, filter=data_filter)
            else:
                tf.extractall(dest)
    tops = [p for p in dest.iterdir() if p.is_dir()]
    if len(tops) != 1:
        raise SetupError(f"{archive.name}: expected one top-level dir, found {[p.name for p in tops]}")
    return tops[0]


def fetch(python: Path, project: Project, work: Path) -> Path:
    """Download and unpack the project's sdist; returns the unpacked dir."""
    downloads = work / "sdists" / project.name
    downloads.mkdir(parents=True)
    _check([str(python), "-m", "pip", "download", "-q", "--no-deps", "--no-binary", ":all:", "-d",
            str(downloads), f"{project.name}=={project.version}"], f"downloading {project.name}")
    archives = [p for p in downloads.iterdir() if p.is_file()]
    if len(archives) != 1:
        raise SetupError(f"{project.name}: expected one sdist, found {[p.name for p in archives]}")
    unpacked = work / "src" / project.name
    unpacked.mkdir(parents=True)
    root = _unpack(archives[0], unpacked)
    for test in project.tests:
        if not (root / test).exists():
            raise SetupError(f"{project.name} {project.version}: the sdist has no {test}")
    return root


def install(python: Path, project: Project, root: Path) -> None:
    """The project from its unpacked sdist, with its test dependencies, into the venv."""
    _check([str(python), "-m", "pip", "install", "-q", "--use-pep517", str(root), *project.deps],
           f"installing {project.name}")


def _pytest_env() -> dict[str, str]:
    env = dict(os.environ)
    for name in ("PYTEST_ADDOPTS", "PYTEST_PLUGINS", "PYTHONPATH"):
        env.pop(name, None)
    return env


def run_pytest(python: Path, project: Project, root: Path, sandboxed: bool, log: Path,
               timeout: float) -> Run:
    argv = [str(python), "-m", "pytest", "-q", "-p", "no:cacheprovider"]
    if sandboxed:
        argv.append("--sandbox-all")
    argv += list(project.tests)
    start = time.monotonic()
    try:
        proc = subprocess.run(argv, cwd=root, env=_pytest_env(), stdin=subprocess.DEVNULL,
                              stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                              errors="replace", timeout=timeout)
        code, output = proc.returncode, proc.stdout
    except subprocess.TimeoutExpired as e:
        partial = e.output.decode(errors="replace") if isinstance(e.output, bytes) else (e.output or "")
        code, output = -1, partial + f"\n[real_suites] timed out after {timeout:.0f}s\n"
    seconds = time.monotonic() - start
    log.write_text(f"$ cd {root} && {' '.join(argv)}\n{output}")
    return Run(code=code, seconds=seconds, output=output, counts=parse_counts(output))


def _differences(result: Result) -> list[str]:
    bare, sandboxed = result.bare, result.sandboxed
    lines = []
    if bare.counts is None:
        lines.append("the bare run has no counts line")
    if sandboxed.counts is None:
        lines.append("the sandboxed run has no counts line")
    if bare.counts is not None and sandboxed.counts is not None:
        for what in dict.fromkeys([*bare.counts, *sandboxed.counts]):
            b, s = bare.counts.get(what, 0), sandboxed.counts.get(what, 0)
            if b != s:
                lines.append(f"{what}: bare {b}, sandboxed {s}")
    if bare.code != sandboxed.code:
        lines.append(f"exit status: bare {bare.code}, sandboxed {sandboxed.code}")
    return lines


def print_table(results: list[Result]) -> None:
    header = ("project", "version", "bare", "sandboxed", "same?", "bare s", "sandboxed s")
    rows = [(r.project.name, r.project.version, r.bare.describe(), r.sandboxed.describe(),
             "yes" if r.same else "NO", f"{r.bare.seconds:.1f}", f"{r.sandboxed.seconds:.1f}") for r in results]
    widths = [max(len(row[i]) for row in (header, *rows)) for i in range(len(header))]
    numeric = {5, 6}

    def fmt(row: tuple[str, ...]) -> str:
        cells = zip(row, widths, strict=True)
        return " | ".join(c.rjust(w) if i in numeric else c.ljust(w) for i, (c, w) in enumerate(cells)).rstrip()

    print(fmt(header))
    print("-+-".join("-" * w for w in widths))
    for row in rows:
        print(fmt(row))


def print_differences(results: list[Result], logs: Path | None) -> None:
    for result in results:
        if result.same:
            continue
        print(f"\n{result.project.name} {result.project.version} differs:")
        for line in _differences(result):
            print(f"  {line}")
        tail = result.sandboxed.output.rstrip().splitlines()[-TAIL_LINES:]
        print(f"  last {len(tail)} lines of the sandboxed run:")
        for line in tail:
            print(f"    {line}")
        if logs is not None:
            print(f"  full logs: {logs / result.project.name}-bare.log, {logs / result.project.name}-sandboxed.log")


def main(argv: list[str] | None = None) -> int:
    here = Path(__file__).resolve().parent.parent
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument("--sandboxer-src", type=Path, default=here,
                        help="the sandboxer checkout to install (default: %(default)s)")
    parser.add_argument("--project", action="append", choices=[p.name for p in PROJECTS], metavar="NAME",
                        help="only this project (repeatable; default: all of "
                             f"{', '.join(p.name for p in PROJECTS)})")
    parser.add_argument("--timeout", type=float, default=RUN_TIMEOUT_S,
                        help="seconds before one pytest run is killed (default: %(default)s)")
    parser.add_argument("--keep", action="store_true", help="keep the work dir (venv, sources, logs) and print it")
    args = parser.parse_args(argv)

    projects = [p for p in PROJECTS if not args.project or p.name in args.project]
    work = Path(tempfile.mkdtemp(prefix="real-suites-"))
    logs = work / "logs"
    logs.mkdir()
    results: list[Result] = []
    try:
        print(f"python {sys.version.split()[0]} ({sys.executable}); work dir {work}", flush=True)
        python = make_venv(work, args.sandboxer_src.resolve())
        for project in projects:
            root = fetch(python, project, work)
            install(python, project, root)
            runs = []
            for sandboxed in (False, True):
                label = "sandboxed" if sandboxed else "bare"
                print(f"{project.name} {project.version}: {label} ...", end=" ", flush=True)
                run = run_pytest(python, project, root, sandboxed, logs / f"{project.name}-{label}.log",
                                 args.timeout)
                print(f"{run.describe()} ({run.seconds:.1f}s)", flush=True)
                runs.append(run)
            results.append(Result(project, runs[0], runs[1]))
    except SetupError as e:
        print(f"\nset-up failed: {e}", file=sys.stderr)
        return 2
    finally:
        if not args.keep:
            shutil.rmtree(work, ignore_errors=True)
    print()
    print_table(results)
    print_differences(results, logs if args.keep else None)
    if args.keep:
        print(f"\nwork dir kept: {work}")
    differing = [r.project.name for r in results if not r.same]
    print(f"\n{len(results) - len(differing)}/{len(results)} projects give the same counts sandboxed"
          + (f"; differ: {', '.join(differing)}" if differing else ""))
    return 1 if differing else 0


if __name__ == "__main__":
    sys.exit(main())
