#!/usr/bin/env python3
"""Network benchmarks against podman, in one run: start overhead, throughput and latency through a published port.

Run as an unprivileged user, with the Python of sandboxer's environment::

    python bench/network.py [--rounds 20] [--gib 1] [--requests 1000] [--json]

Every measurement is made for each installed user-mode stack (slirp4netns,
pasta) and for a user-defined network (``sbxbench``, created for the run by
each runtime: a bridge in the per-user network namespace), for sandboxer
and for podman.

* start: ``sandboxer run --read-only [--network STACK] -- true``
  interleaved; the networking overhead is the difference of the medians
  (and the same for podman: ``--network none`` vs ``STACK``).
* throughput: a server inside (Debian's python3; for podman an image
  imported offline from images/python.py) reads ``--gib`` GiB sent from the
  host through ``-p 127.0.0.1:PORT:5000``.
* latency: ``--requests`` small request/response exchanges, each on a new
  connection through the same port; the median.

Targets (issue 5), for each stack: start overhead <= 25 ms over none;
throughput and latency at least as good as podman's default rootless network
(slirp4netns with its rootlessport proxy in podman 4).  A report: it always
exits 0.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
sys.path.insert(0, str(HERE))
from startup import PODMAN_GLOBAL, podman_env, sandboxer_argv  # noqa: E402

SANDBOXER = sandboxer_argv()
PODMAN_IMAGE = "localhost/sandboxer-bench-python:latest"

# 'T': count bytes until EOF, answer the count; 'L': answer each 64-byte request; 'Q': quit
SERVER = r"""
import socket
s = socket.socket(); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
s.bind(("0.0.0.0", 5000)); s.listen(64)
while True:
    c, _ = s.accept()
    kind = c.recv(1)
    if kind == b"Q":
        break
    if kind == b"T":
        total = 0
        while chunk := c.recv(1 << 20):
            total += len(chunk)
        c.sendall(str(total).encode())
    elif kind == b"L":
        data = c.recv(64)
        c.sendall(data)
    c.close()
"""


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_listening(port: int, proc: subprocess.Popen[bytes], timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and proc.poll() is None:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=1) as c:
                c.sendall(b"L" + b"x" * 63)
                if c.recv(64):
                    return
        except OSError:
            time.sleep(0.02)
    raise RuntimeError("the server never answered")


def throughput(port: int, gib: float) -> float:
    """MB/s host -> sandbox."""
    chunk = b"\0" * (1 << 20)
    total = int(gib * (1 << 30))
    start = time.perf_counter()
    with socket.create_connection(("127.0.0.1", port)) as c:
        c.sendall(b"T")
        sent = 0
        while sent < total:
            c.sendall(chunk)
            sent += len(chunk)
        c.shutdown(socket.SHUT_WR)
        answer = c.recv(100)
    elapsed = time.perf_counter() - start
    assert int(answer) == sent, answer
    return sent / elapsed / 1e6


def latency(port: int, requests: int) -> float:
    """Median ms of a request on a new connection."""
    samples = []
    payload = b"L" + b"r" * 63
    for _ in range(requests):
        start = time.perf_counter()
        with socket.create_connection(("127.0.0.1", port)) as c:
            c.sendall(payload)
            c.recv(64)
        samples.append((time.perf_counter() - start) * 1000)
    return statistics.median(samples)


def serve_and_measure(cmd: list[str], port: int, env: dict[str, str], gib: float,
                      requests: int) -> dict[str, float | str]:
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        wait_listening(port, proc)
        result: dict[str, float | str] = {"throughput_mb_s": throughput(port, gib),
                                           "latency_ms": latency(port, requests)}
        with socket.create_connection(("127.0.0.1", port)) as c:
            c.sendall(b"Q")
        proc.wait(timeout=30)
        return result
    except (RuntimeError, OSError, subprocess.TimeoutExpired) as e:
        err = proc.stderr.read().decode(errors="replace").strip().splitlines() if proc.poll() is not None and \
            proc.stderr else []
        return {"error": (err[-1] if err else str(e))[:160]}
    finally:
        proc.kill()
        proc.wait()


def median_ms(cmd: list[str], env: dict[str, str], rounds: int) -> float | None:
    samples = []
    for _ in range(rounds):
        start = time.perf_counter()
        if subprocess.run(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL).returncode != 0:
            return None
        samples.append((time.perf_counter() - start) * 1000)
    return statistics.median(samples)


def ensure_podman_image(pod: list[str], env: dict[str, str], work: Path) -> str:
    if subprocess.run([*pod, "image", "exists", PODMAN_IMAGE], env=env).returncode == 0:
        return ""
    tarball = work / "python.tar"
    subprocess.run([sys.executable, str(ROOT / "images" / "python.py"), str(tarball)], check=True)
    p = subprocess.run([*pod, "import", str(tarball), PODMAN_IMAGE], env=env, capture_output=True, text=True)
    return "" if p.returncode == 0 else (p.stderr.strip().splitlines() or ["podman import failed"])[-1]


STACKS = ("slirp4netns", "pasta")
#: the user-defined network both runtimes get for the run
USER_NETWORK = "sbxbench"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    ap.add_argument("--rounds", type=int, default=20, help="start-up runs per variant (default 20)")
    ap.add_argument("--gib", type=float, default=1.0, help="GiB sent for the throughput (default 1)")
    ap.add_argument("--requests", type=int, default=1000, help="requests for the latency (default 1000)")
    ap.add_argument("--json", action="store_true")
    opts = ap.parse_args(argv)
    env = dict(os.environ)
    env.pop("PYTHONDONTWRITEBYTECODE", None)
    podman = shutil.which("podman")
    pod = [podman, *PODMAN_GLOBAL] if podman else []
    pod_env = podman_env(dict(os.environ))
    stacks = [s for s in STACKS if shutil.which(s)]
    # a user-defined network of each runtime, under the same name (a bridge in the rootless namespace)
    made = subprocess.run([*SANDBOXER, "network", "create", USER_NETWORK], env=env, capture_output=True, text=True)
    if made.returncode == 0:
        stacks.append(USER_NETWORK)
        if pod:
            subprocess.run([*pod, "network", "create", USER_NETWORK], env=pod_env, capture_output=True)
    results: dict[str, object] = {"stacks": stacks}
    try:
        _measure(opts, env, pod, pod_env, stacks, results)
    finally:
        if made.returncode == 0:
            subprocess.run([*SANDBOXER, "network", "rm", USER_NETWORK], env=env, capture_output=True)
            if pod:
                subprocess.run([*pod, "network", "rm", "-f", USER_NETWORK], env=pod_env, capture_output=True)
    print(json.dumps(results, indent=2) if opts.json else table(results))
    return 0


def _measure(opts: argparse.Namespace, env: dict[str, str], pod: list[str], pod_env: dict[str, str],
             stacks: list[str], results: dict[str, object]) -> None:
    with tempfile.TemporaryDirectory(prefix="sandboxer-bench-net-") as tmp:
        variants = {"none": [*SANDBOXER, "run", "--read-only", "--", "true"]}
        variants.update({s: [*SANDBOXER, "run", "--read-only", "--network", s, "--", "true"] for s in stacks})
        starts: dict[str, list[float]] = {name: [] for name in variants}
        for _ in range(opts.rounds):  # interleaved
            for name, cmd in variants.items():
                m = median_ms(cmd, env, 1)
                if m is not None:
                    starts[name].append(m)
        results["start_ms"] = {k: statistics.median(v) if v else None for k, v in starts.items()}
        for stack in stacks:
            port = free_port()
            results[f"sandboxer {stack}"] = serve_and_measure(
                [*SANDBOXER, "run", "--read-only", "--network", stack, "-p", f"127.0.0.1:{port}:5000", "--",
                 "python3", "-c", SERVER], port, env, opts.gib, opts.requests)
        if pod:
            error = ensure_podman_image(pod, pod_env, Path(tmp))
            if error:
                results["podman slirp4netns"] = {"error": error}
            else:
                p_none = [*pod, "run", "--rm", "--network=none", PODMAN_IMAGE, "true"]
                rounds = max(3, opts.rounds // 4)
                podman_starts: dict[str, float | None] = {"none": median_ms(p_none, pod_env, rounds)}
                for stack in stacks:
                    p_run = [*pod, "run", "--rm", f"--network={stack}", PODMAN_IMAGE, "true"]
                    podman_starts[stack] = median_ms(p_run, pod_env, rounds)
                    port = free_port()
                    results[f"podman {stack}"] = serve_and_measure(
                        [*pod, "run", "--rm", f"--network={stack}", "-p", f"127.0.0.1:{port}:5000", PODMAN_IMAGE,
                         "python3", "-c", SERVER], port, pod_env, opts.gib, opts.requests)
                results["podman_start_ms"] = podman_starts


def table(r: dict[str, object]) -> str:
    def get(section: str, key: str) -> float | None:
        value = r.get(section)
        return value.get(key) if isinstance(value, dict) and isinstance(value.get(key), float) else None

    def fmt(v: float | None) -> str:
        return "n/a" if v is None else f"{v:.2f}"

    def overhead(section: str, stack: str) -> float | None:
        none, net = get(section, "none"), get(section, stack)
        return net - none if none is not None and net is not None else None

    def verdict(ok: bool | None) -> str:
        return "N/A" if ok is None else ("PASS" if ok else "FAIL")

    listed = r.get("stacks")
    stacks = [s for s in listed if isinstance(s, str)] if isinstance(listed, list) else []
    columns = [f"{who} {s}" for s in stacks for who in ("sandboxer", "podman")]
    rows = {"start overhead over none (ms)": lambda c: overhead("start_ms" if c.startswith("sandboxer")
                                                                else "podman_start_ms", c.split()[1]),
            "throughput host->sandbox (MB/s)": lambda c: get(c, "throughput_mb_s"),
            "request latency, median (ms)": lambda c: get(c, "latency_ms")}
    lines = [f"{'':<34}" + "".join(f" {c:>21}" for c in columns)]
    for label, value in rows.items():
        lines.append(f"{label:<34}" + "".join(f" {fmt(value(c)):>21}" for c in columns))
    for c in columns:
        section = r.get(c)
        if isinstance(section, dict) and "error" in section:
            lines.append(f"error: {c}: {section['error']}")
    theirs = "podman slirp4netns"  # podman 4's default rootless network: the reference
    for stack in stacks:
        ours = f"sandboxer {stack}"
        tp, p_tp = get(ours, "throughput_mb_s"), get(theirs, "throughput_mb_s")
        lat, p_lat = get(ours, "latency_ms"), get(theirs, "latency_ms")
        over = overhead("start_ms", stack)
        lines.append(f"TARGETS ({stack}, vs {theirs}): start overhead <= 25 ms: "
                     f"{verdict(None if over is None else over <= 25)}; throughput >= podman: "
                     f"{verdict(None if tp is None or p_tp is None else tp >= p_tp)}; latency <= podman: "
                     f"{verdict(None if lat is None or p_lat is None else lat <= p_lat)}")
    return "\n".join(lines)


if __name__ == "__main__":
    sys.exit(main())
