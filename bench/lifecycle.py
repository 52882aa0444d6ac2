#!/usr/bin/env python3
"""Detached-sandbox lifecycle against podman, in one run: ``run -d`` to running, ``exec true``, ``rm -f``.

Run as an unprivileged user, with the Python of sandboxer's environment::

    python bench/lifecycle.py [--rounds 20] [--json]

Both tools run the same image: the busybox root filesystem of
``images/busybox.py``, imported into a private sandboxer store with
``sandboxer import`` and into podman with ``podman import``.  Each round,
interleaved:

* ``sandboxer run -d --name N IMAGE sleep 100000`` (returns once PID 1 runs)
  vs ``podman run -d --network=none --name N IMAGE sleep 100000``;
* ``sandboxer exec N true`` vs ``podman exec N true``;
* ``sandboxer rm -f N`` vs ``podman rm -f -t 0 N`` (PID 1 ignores SIGTERM:
  both kill at once).

While each sandbox runs, its supervisor's memory is read from ``/proc``:
RSS (VmRSS), and USS (its private pages: what one more supervisor costs;
the Python binary's and libc's text are shared with every other Python
process) — and the same for its child, the set-up process that waits for
PID 1 (forked from the supervisor, so most of its pages are the
supervisor's), and for podman's per-container shim, conmon.

Targets (issue 7): run -d <= 0.2x podman's; exec <= 0.2x podman's;
supervisor RSS <= 15 MB.  A report: it always exits 0.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
sys.path.insert(0, str(HERE))
from startup import PODMAN_GLOBAL, podman_env, python_env, sandboxer_argv  # noqa: E402

SANDBOXER = sandboxer_argv()
SANDBOXER_IMAGE = "bench/lifecycle-busybox"
PODMAN_IMAGE = "localhost/sandboxer-bench-lifecycle:latest"
OPS = ("run -d", "exec true", "rm -f")
TARGET_RUN_X, TARGET_EXEC_X, TARGET_RSS_MB = 0.2, 0.2, 15.0


def timed(cmd: list[str], env: dict[str, str]) -> tuple[float, str, str]:
    """(seconds, stdout, error line or '') of one run, spawn to reap."""
    start = time.perf_counter()
    proc = subprocess.run(cmd, env=env, stdin=subprocess.DEVNULL, capture_output=True, text=True)
    elapsed = time.perf_counter() - start
    if proc.returncode != 0:
        lines = [line for line in proc.stderr.splitlines() if line.strip()]
        return elapsed, proc.stdout, (lines[-1] if lines else f"exit {proc.returncode}")[:160]
    return elapsed, proc.stdout, ""


def memory_kib(pid: int) -> tuple[int, int] | None:
    """(RSS, USS) of ``pid`` in KiB, or None if it is gone."""
    try:
        with open(f"/proc/{pid}/status") as f:
            rss = next(int(line.split()[1]) for line in f if line.startswith("VmRSS:"))
        with open(f"/proc/{pid}/smaps_rollup") as f:
            uss = sum(int(line.split()[1]) for line in f if line.startswith(("Private_Clean:", "Private_Dirty:")))
    except (OSError, StopIteration, ValueError):
        return None
    return rss, uss


def median(values: list[float]) -> float | None:
    return statistics.median(values) if values else None


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    ap.add_argument("--rounds", type=int, default=20, help="lifecycles per tool (default 20)")
    ap.add_argument("--json", action="store_true")
    opts = ap.parse_args(argv)
    podman = shutil.which("podman")
    pod = [podman, *PODMAN_GLOBAL] if podman else []
    times: dict[str, dict[str, list[float]]] = {t: {op: [] for op in OPS} for t in ("sandboxer", "podman")}
    memory: dict[str, list[tuple[int, int]]] = {"supervisor": [], "set-up process": [], "conmon": []}
    errors: dict[str, str] = {}
    with tempfile.TemporaryDirectory(prefix="sandboxer-bench-lifecycle-") as tmp:
        work = Path(tmp)
        env = python_env(dict(os.environ), True)
        env.update(SANDBOXER_DATA_DIR=str(work / "store"), SANDBOXER_STATE_DIR=str(work / "state"))
        tarball = work / "busybox.tar"
        subprocess.run([sys.executable, str(ROOT / "images" / "busybox.py"), str(tarball)], check=True)
        subprocess.run([*SANDBOXER, "import", str(tarball), SANDBOXER_IMAGE], env=env, check=True,
                       stdout=subprocess.DEVNULL)
        pod_env = podman_env(dict(os.environ))
        if pod:
            imported = subprocess.run([*pod, "import", str(tarball), PODMAN_IMAGE], env=pod_env,
                                      capture_output=True, text=True)
            if imported.returncode != 0:
                errors["podman import"] = imported.stderr.strip()[-160:]
                pod = []
        tag = f"bench{os.getpid()}"
        for i in range(opts.rounds + 1):  # round 0 warms caches up and is not counted
            name = f"{tag}-{i}"
            commands = {
                "sandboxer": ([*SANDBOXER, "run", "-d", "--name", name, SANDBOXER_IMAGE, "sleep", "100000"],
                              [*SANDBOXER, "exec", name, "true"], [*SANDBOXER, "rm", "-f", name], env),
                "podman": ([*pod, "run", "-d", "--network=none", "--name", name, PODMAN_IMAGE, "sleep", "100000"],
                           [*pod, "exec", name, "true"], [*pod, "rm", "-f", "-t", "0", name], pod_env),
            }
            for tool, (run, exe, rm, tool_env) in commands.items():
                if not run[0]:
                    continue
                seconds, _, err = timed(run, tool_env)
                if err:
                    errors[f"{tool} run -d"] = err
                    continue
                if i:
                    times[tool]["run -d"].append(seconds)
                _sample_memory(tool, name, tool_env, pod, memory)
                seconds, _, err = timed(exe, tool_env)
                if err:
                    errors[f"{tool} exec"] = err
                elif i:
                    times[tool]["exec true"].append(seconds)
                seconds, _, err = timed(rm, tool_env)
                if err:
                    errors[f"{tool} rm -f"] = err
                elif i:
                    times[tool]["rm -f"].append(seconds)
        if pod:
            subprocess.run([*pod, "rmi", "-f", PODMAN_IMAGE], env=pod_env, capture_output=True)
    results = {
        "ms": {tool: {op: (m * 1000 if (m := median(v)) is not None else None) for op, v in ops.items()}
               for tool, ops in times.items()},
        "memory_mb": {kind: {"rss": median([r for r, _ in v]) / 1024 if v else None,
                             "uss": median([u for _, u in v]) / 1024 if v else None} for kind, v in memory.items()},
        "rounds": opts.rounds, "errors": errors,
    }
    print(json.dumps(results, indent=2) if opts.json else table(results))
    return 0


def _sample_memory(tool: str, name: str, env: dict[str, str], pod: list[str],
                   memory: dict[str, list[tuple[int, int]]]) -> None:
    """The supervisor's (sandboxer) or conmon's (podman) RSS and USS, once the sandbox runs."""
    if tool == "sandboxer":
        cmd, kind = [*SANDBOXER, "inspect", "-f", "{{.State.SupervisorPid}}", name], "supervisor"
    else:
        cmd, kind = [*pod, "inspect", "-f", "{{.State.ConmonPid}}", name], "conmon"
    out = subprocess.run(cmd, env=env, capture_output=True, text=True).stdout.strip()
    sample = memory_kib(int(out)) if out.isdigit() else None
    if sample is not None:
        memory[kind].append(sample)
    if kind == "supervisor" and out.isdigit():  # its child, PID 1's parent: forked from it, pages shared
        try:
            with open(f"/proc/{out}/task/{out}/children") as f:
                children = [int(c) for c in f.read().split()]
        except OSError:
            children = []
        setup = memory_kib(children[0]) if children else None
        if setup is not None:
            memory["set-up process"].append(setup)


def table(r: dict[str, object]) -> str:
    ms, mem, errors = r["ms"], r["memory_mb"], r["errors"]
    assert isinstance(ms, dict) and isinstance(mem, dict) and isinstance(errors, dict)

    def ratio(op: str) -> float | None:
        a, b = ms["sandboxer"][op], ms["podman"][op]
        return a / b if a is not None and b else None

    def fmt(v: float | None, unit: str = "") -> str:
        return "n/a" if v is None else f"{v:.2f}{unit}"

    def verdict(value: float | None, limit: float) -> str:
        return "N/A" if value is None else ("PASS" if value <= limit else "FAIL")

    lines = [f"busybox image (images/busybox.py) in both; {r['rounds']} interleaved rounds; medians", "",
             f"{'':<18} {'sandboxer ms':>13} {'podman ms':>10} {'ratio':>8}"]
    for op in OPS:
        lines.append(f"{op:<18} {fmt(ms['sandboxer'][op]):>13} {fmt(ms['podman'][op]):>10} {fmt(ratio(op), 'x'):>8}")
    sup, setup, con = mem["supervisor"], mem["set-up process"], mem["conmon"]
    lines += ["", f"{'per-sandbox helpers':<24} {'RSS MB':>8} {'USS MB':>8}",
              f"{'sandboxer supervisor':<24} {fmt(sup['rss']):>8} {fmt(sup['uss']):>8}",
              f"{'sandboxer set-up process':<24} {fmt(setup['rss']):>8} {fmt(setup['uss']):>8}",
              f"{'podman conmon':<24} {fmt(con['rss']):>8} {fmt(con['uss']):>8}"]
    lines += [f"error: {k}: {v}" for k, v in errors.items()]
    lines.append(f"TARGETS: run -d <= {TARGET_RUN_X}x podman: {verdict(ratio('run -d'), TARGET_RUN_X)}; "
                 f"exec <= {TARGET_EXEC_X}x podman: {verdict(ratio('exec true'), TARGET_EXEC_X)}; "
                 f"supervisor RSS <= {TARGET_RSS_MB:.0f} MB: {verdict(sup['rss'], TARGET_RSS_MB)}")
    return "\n".join(lines)


if __name__ == "__main__":
    sys.exit(main())
