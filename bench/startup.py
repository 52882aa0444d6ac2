#!/usr/bin/env python3
"""Start-up benchmark: ``sandboxer run --rm -- /bin/true`` against bwrap, podman and unshare.

Run it as an unprivileged user (the point is rootless start-up)::

    python bench/startup.py [--rounds 50] [--warmup 5] [--json] [--sandboxer PATH]

All tools are timed by the same code path -- ``os.posix_spawn`` + ``os.wait4``
around ``time.perf_counter_ns`` with stdio on /dev/null -- and interleaved
round-robin (one run of each per round), so machine noise hits all alike.
``wait4``'s ``ru_maxrss`` gives each run's peak RSS: for ``sandboxer`` that is
the largest of the caller-side Python process and the helpers it reaps.  The
kernel raises a child's maxrss at exec to the high-water mark of the mm it
replaces -- with posix_spawn (CLONE_VM) that is ours -- so a value not above
this process's own peak is only an upper bound and is shown as ``<=``.

Bytecode: the Python runs (sandboxer and the interpreter floor) get a private
``PYTHONPYCACHEPREFIX`` and no ``PYTHONDONTWRITEBYTECODE``, so warm-up fills a
bytecode cache.  Without it an unprivileged user running a root-owned
checkout recompiles every sandboxer module on every run (~30 ms here), which
an installed package never does.  ``--no-pycache-prefix`` measures the
environment as given instead.

podman (4.3, rootless, on this hybrid cgroup-v1 host without systemd) is run
as ``podman --runtime runc --cgroup-manager=cgroupfs --events-backend=file run
--rm --network=none IMAGE true``.  Here those are already podman's fallbacks
(no crun installed, no systemd), but crun refuses hybrid cgroups and without
systemd neither the systemd cgroup manager nor journald events work, so they
are spelled out.  The image is a local busybox, imported offline from the
host's static /bin/busybox (Debian's busybox-static) when missing.  Nothing
else was needed: no registries, no storage.conf.  With ``XDG_RUNTIME_DIR``
unset podman falls back to /tmp/podman-run-UID by itself; we still give it a
private 0700 dir then, so behaviour does not hinge on that fallback (an
inherited, unwritable one such as root's /run/user/0 also worked here).  Its
storage driver is whatever podman picks -- vfs here, since nothing configures
fuse-overlayfs for it -- and is printed with the results.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import shutil
import statistics
import subprocess
import sys
import tarfile
import tempfile
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

PODMAN_IMAGE = "localhost/sandboxer-bench-busybox:latest"
PODMAN_GLOBAL = ["--runtime", "runc", "--cgroup-manager=cgroupfs", "--events-backend=file"]
BUSYBOX = "/bin/busybox"
PROBE_TIMEOUT_S = 300  # the first podman run may set up storage

SANDBOXER, BWRAP, PODMAN, UNSHARE = "sandboxer", "bubblewrap", "podman", "unshare"
SANDBOXER_RO = "sandboxer --read-only"
TARGET_BWRAP_X, TARGET_PODMAN_X, TARGET_RSS_MIB = 4.0, 0.15, 30.0

_DEVNULL_ACTIONS = [
    (os.POSIX_SPAWN_OPEN, 0, os.devnull, os.O_RDONLY, 0),
    (os.POSIX_SPAWN_OPEN, 1, os.devnull, os.O_WRONLY, 0),
    (os.POSIX_SPAWN_OPEN, 2, os.devnull, os.O_WRONLY, 0),
]


@dataclass
class Tool:
    """One command under test and what was measured for it."""

    name: str
    argv: list[str]
    env: dict[str, str]
    problem: str = ""  # why it is not measured ("not installed", an error line)
    samples_ns: list[int] = field(default_factory=list)
    max_rss_kib: int = 0

    @property
    def ok(self) -> bool:
        return not self.problem


# --------------------------------------------------------------------- setup


def private_dir(tag: str) -> str:
    """A 0700 directory of ours under the temp dir, stable across runs so caches persist."""
    path = Path(tempfile.gettempdir()) / f"sandboxer-bench-{tag}-{os.getuid()}"
    path.mkdir(mode=0o700, exist_ok=True)
    st = path.stat()
    if st.st_uid != os.getuid() or st.st_mode & 0o077:
        return tempfile.mkdtemp(prefix=f"sandboxer-bench-{tag}-")
    return str(path)


def python_env(base: dict[str, str], use_prefix: bool) -> dict[str, str]:
    """Environment for Python runs: a writable bytecode cache unless told otherwise."""
    env = dict(base)
    if use_prefix:
        env.pop("PYTHONDONTWRITEBYTECODE", None)
        env["PYTHONPYCACHEPREFIX"] = private_dir("pycache")
    return env


def podman_env(base: dict[str, str]) -> dict[str, str]:
    """Rootless podman wants a runtime dir; give it a private one when none is set."""
    env = dict(base)
    if not env.get("XDG_RUNTIME_DIR"):
        env["XDG_RUNTIME_DIR"] = private_dir("xdg")
    return env


def last_line(text: str) -> str:
    lines = [ln.strip() for ln in text.strip().splitlines() if ln.strip()]
    return lines[-1] if lines else ""


def ensure_podman_image(podman: str, env: dict[str, str]) -> str:
    """Import the busybox image offline unless present; return an error line or ''."""
    exists = subprocess.run([podman, "image", "exists", PODMAN_IMAGE], env=env, capture_output=True)
    if exists.returncode == 0:
        return ""
    if not os.path.exists(BUSYBOX):
        return f"no {BUSYBOX} to build {PODMAN_IMAGE} from (apt-get install busybox-static)"
    with tempfile.TemporaryDirectory(prefix="sandboxer-bench-img-") as tmp:
        tar_path = os.path.join(tmp, "rootfs.tar")
        with tarfile.open(tar_path, "w") as tar:
            tar.add(BUSYBOX, arcname="bin/busybox")
            for applet in ("true", "sh"):
                link = tarfile.TarInfo(f"bin/{applet}")
                link.type, link.linkname = tarfile.SYMTYPE, "busybox"
                tar.addfile(link)
        imp = subprocess.run([podman, "import", tar_path, PODMAN_IMAGE], env=env,
                             capture_output=True, text=True)
    return "" if imp.returncode == 0 else f"podman import failed: {last_line(imp.stderr)}"


def find_sandboxer(explicit: str | None) -> str | None:
    """The console script of the environment we run in (not whatever PATH has)."""
    if explicit:
        return explicit if os.access(explicit, os.X_OK) else None
    candidate = Path(sys.executable).parent / "sandboxer"  # no resolve(): keep the venv
    return str(candidate) if os.access(candidate, os.X_OK) else None


def sandboxer_argv() -> list[str]:
    """How the other benchmarks run this environment's sandboxer: its console script, else ``-m``."""
    exe = find_sandboxer(None)
    return [exe] if exe else [sys.executable, "-m", "sandboxer"]


def make_tool(name: str, exe: str | None, args: list[str], env: dict[str, str]) -> Tool:
    if exe is None:
        return Tool(name, args, env, problem="not installed")
    return Tool(name, [exe, *args], env)


def build_tools(opts: argparse.Namespace) -> list[Tool]:
    """The commands under test, in round-robin order; missing tools are marked, not dropped."""
    base = dict(os.environ)
    py_env = python_env(base, not opts.no_pycache_prefix)
    podman = shutil.which("podman")
    tools = [
        make_tool(SANDBOXER, find_sandboxer(opts.sandboxer), ["run", "--rm", "--", "/bin/true"], py_env),
        # the same without a writable layer: the host root bound read-only, no fuse-overlayfs
        make_tool(SANDBOXER_RO, find_sandboxer(opts.sandboxer), ["run", "--rm", "--read-only", "--", "/bin/true"],
                  py_env),
        make_tool(BWRAP, shutil.which("bwrap"),
                  ["--unshare-all", "--ro-bind", "/", "/", "--proc", "/proc", "--dev", "/dev",
                   "--tmpfs", "/tmp", "true"], base),
        make_tool(PODMAN, podman, [*PODMAN_GLOBAL, "run", "--rm", "--network=none", PODMAN_IMAGE, "true"],
                  podman_env(base)),
        make_tool(UNSHARE, shutil.which("unshare"), ["-Urpfmn", "--mount-proc", "true"], base),
        make_tool("python3 -c pass", sys.executable, ["-c", "pass"], py_env),
        make_tool("python3 -I -S -c pass", sys.executable, ["-I", "-S", "-c", "pass"], py_env),
    ]
    if podman is not None:
        tools[3].problem = ensure_podman_image(podman, tools[3].env)
    return tools


# ------------------------------------------------------------------- running


def timed_run(tool: Tool) -> tuple[int, int, int]:
    """Spawn and reap once; return (wall ns, wait status, peak RSS KiB)."""
    start = time.perf_counter_ns()
    pid = os.posix_spawn(tool.argv[0], tool.argv, tool.env, file_actions=_DEVNULL_ACTIONS)
    _, status, usage = os.wait4(pid, 0)
    elapsed = time.perf_counter_ns() - start
    return elapsed, status, usage.ru_maxrss


def probe(tool: Tool) -> str:
    """One untimed run with stderr kept, so a failing tool reports why."""
    try:
        res = subprocess.run(tool.argv, env=tool.env, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                             stderr=subprocess.PIPE, text=True, timeout=PROBE_TIMEOUT_S)
    except (OSError, subprocess.TimeoutExpired) as exc:
        return str(exc)
    if res.returncode == 0:
        return ""
    return last_line(res.stderr) or f"exit status {res.returncode}"


def run_once(tool: Tool, record: bool) -> None:
    elapsed, status, rss = timed_run(tool)
    if os.waitstatus_to_exitcode(status) != 0:
        tool.problem = probe(tool) or f"exit status {os.waitstatus_to_exitcode(status)} (flaky)"
        return
    if record:
        tool.samples_ns.append(elapsed)
        tool.max_rss_kib = max(tool.max_rss_kib, rss)


def benchmark(tools: list[Tool], warmup: int, rounds: int) -> None:
    """Probe, warm up, then measure round-robin; a tool that fails drops out with its reason."""
    for tool in tools:
        if tool.ok:
            tool.problem = probe(tool)
    for n in range(warmup + rounds):
        for tool in tools:
            if tool.ok:
                run_once(tool, record=n >= warmup)


# ------------------------------------------------------------------ reporting


@dataclass(frozen=True)
class Stats:
    median_ms: float
    p90_ms: float
    min_ms: float
    max_rss_mib: float
    rss_is_upper_bound: bool  # not above our own peak, so maybe inherited (see module doc)

    @property
    def rss_text(self) -> str:
        return ("<=" if self.rss_is_upper_bound else "") + f"{self.max_rss_mib:.1f}"


def own_peak_kib() -> int:
    """Our peak RSS: the floor every spawned child's ru_maxrss inherits at exec."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss


def stats(tool: Tool, rss_floor_kib: int) -> Stats | None:
    if not tool.ok or not tool.samples_ns:
        return None
    ms = [ns / 1e6 for ns in tool.samples_ns]
    p90 = statistics.quantiles(ms, n=10, method="inclusive")[-1] if len(ms) > 1 else ms[0]
    return Stats(statistics.median(ms), p90, min(ms), tool.max_rss_kib / 1024,
                 tool.max_rss_kib <= rss_floor_kib)


def ratio(results: dict[str, Stats | None], other: str, tool: str = SANDBOXER) -> float | None:
    """``tool``'s median over another tool's; None when either was not measured."""
    mine, theirs = results.get(tool), results.get(other)
    return None if mine is None or theirs is None else mine.median_ms / theirs.median_ms


def verdict(value: float | None, limit: float) -> str:
    return "N/A" if value is None else ("PASS" if value <= limit else "FAIL")


def targets(results: dict[str, Stats | None]) -> dict[str, str]:
    sbx = results.get(SANDBOXER)
    return {
        "median_vs_bubblewrap": verdict(ratio(results, BWRAP), TARGET_BWRAP_X),
        "median_vs_podman": verdict(ratio(results, PODMAN), TARGET_PODMAN_X),
        "peak_rss": verdict(None if sbx is None else sbx.max_rss_mib, TARGET_RSS_MIB),
    }


def targets_line(tg: dict[str, str]) -> str:
    return (f"TARGETS: median <= {TARGET_BWRAP_X:g}x bubblewrap: {tg['median_vs_bubblewrap']}; "
            f"<= {TARGET_PODMAN_X:g}x podman: {tg['median_vs_podman']}; "
            f"peak RSS <= {TARGET_RSS_MIB:g} MB: {tg['peak_rss']}")


def podman_storage(tools: list[Tool]) -> str:
    """podman's graph driver (vfs vs overlay changes its numbers a lot)."""
    podman = next(t for t in tools if t.name == PODMAN)
    if not podman.ok:
        return ""
    res = subprocess.run([podman.argv[0], "info", "--format", "{{.Store.GraphDriverName}}"],
                         env=podman.env, capture_output=True, text=True)
    return res.stdout.strip()


def header(opts: argparse.Namespace, floor_kib: int, storage: str) -> dict[str, object]:
    return {"rounds": opts.rounds, "warmup": opts.warmup, "uid": os.getuid(), "kernel": platform.release(),
            "python": sys.executable, "pycache_prefix": not opts.no_pycache_prefix,
            "podman_storage": storage, "rss_floor_mib": floor_kib / 1024}


def as_json(tools: list[Tool], results: dict[str, Stats | None], head: dict[str, object]) -> str:
    out = dict(head)
    out["tools"] = {t.name: {"argv": t.argv, "problem": t.problem,
                             **(asdict(st) if (st := results[t.name]) else {}),
                             "samples_ms": [ns / 1e6 for ns in t.samples_ns]} for t in tools}
    out["ratios"] = {f"sandboxer/{o}": ratio(results, o) for o in (BWRAP, PODMAN, UNSHARE)}
    out["targets"] = targets(results)
    return json.dumps(out, indent=2)


def as_table(tools: list[Tool], results: dict[str, Stats | None], head: dict[str, object]) -> str:
    lines = [f"uid {head['uid']}, kernel {head['kernel']}, {head['rounds']} rounds after {head['warmup']} "
             f"warm-up, bytecode cache prefix: {'yes' if head['pycache_prefix'] else 'no'}, "
             f"podman storage: {head['podman_storage'] or '-'}",
             f"{'tool':<24}{'median ms':>10}{'p90 ms':>10}{'min ms':>10}{'peak RSS MiB':>14}"]
    for tool in tools:
        st = results[tool.name]
        if st is None:
            lines.append(f"{tool.name:<24}  {tool.problem or 'no samples'}")
        else:
            lines.append(f"{tool.name:<24}{st.median_ms:>10.2f}{st.p90_ms:>10.2f}{st.min_ms:>10.2f}"
                         f"{st.rss_text:>14}")
    for mine in (SANDBOXER, SANDBOXER_RO):
        lines.append(f"ratios of '{mine}' (median): " + ", ".join(
            f"/{o} " + (f"{r:.2f}x" if (r := ratio(results, o, mine)) is not None else "n/a")
            for o in (BWRAP, PODMAN, UNSHARE)))
    lines.append(f"(RSS '<=X': not above this benchmark's own peak of {head['rss_floor_mib']:.1f} MiB, "
                 "which the kernel copies into a spawned child's maxrss)")
    lines.append(targets_line(targets(results)))
    return "\n".join(lines)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    ap.add_argument("--rounds", type=int, default=50, help="measured rounds (default 50)")
    ap.add_argument("--warmup", type=int, default=5, help="uncounted rounds first (default 5)")
    ap.add_argument("--sandboxer", help="sandboxer executable (default: next to sys.executable)")
    ap.add_argument("--json", action="store_true", help="print the results as JSON")
    ap.add_argument("--no-pycache-prefix", action="store_true",
                    help="do not give Python runs a private bytecode cache")
    return ap.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    opts = parse_args(argv)
    if os.geteuid() == 0:
        print("note: running as root; the benchmark is meant for an unprivileged user", file=sys.stderr)
    tools = build_tools(opts)
    benchmark(tools, opts.warmup, opts.rounds)
    floor = own_peak_kib()
    results = {t.name: stats(t, floor) for t in tools}
    head = header(opts, floor, podman_storage(tools))
    if opts.json:  # stdout stays pure JSON; the verdict line goes to stderr
        print(as_json(tools, results, head))
        print(targets_line(targets(results)), file=sys.stderr)
    else:
        print(as_table(tools, results, head))
    return 0


if __name__ == "__main__":
    sys.exit(main())
