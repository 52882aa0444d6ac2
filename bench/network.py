#!/usr/bin/env python3
"""Network benchmarks against podman, in one run: start overhead, throughput and latency through a published port.

Run as an unprivileged user, with the Python of sandboxer's environment::

    python bench/network.py [--rounds 20] [--gib 1] [--requests 1000] [--json]

* start: ``sandboxer run --read-only [--network slirp4netns] -- true``
  interleaved; the networking overhead is the difference of the medians
  (and the same for podman: ``--network none`` vs ``slirp4netns``).
* throughput: a server inside (Debian's python3; for podman an image
  imported offline from images/python.py) reads ``--gib`` GiB sent from the
  host through ``-p 127.0.0.1:PORT:5000``.
* latency: ``--requests`` small request/response exchanges, each on a new
  connection through the same port; the median.

Targets (issue 5): start overhead <= 25 ms over none; throughput >= podman's;
latency <= podman's.  A report: it always exits 0.
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
from startup import PODMAN_GLOBAL, podman_env  # noqa: E402

SANDBOXER = [str(Path(sys.executable).with_name("sandboxer"))]
if not os.path.exists(SANDBOXER[0]):
    SANDBOXER = [sys.executable, "-m", "sandboxer"]
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
    results: dict[str, object] = {}
    with tempfile.TemporaryDirectory(prefix="sandboxer-bench-net-") as tmp:
        none = [*SANDBOXER, "run", "--read-only", "--", "true"]
        slirp = [*SANDBOXER, "run", "--read-only", "--network", "slirp4netns", "--", "true"]
        starts = {"sandboxer none": [], "sandboxer slirp4netns": []}  # type: dict[str, list[float]]
        for _ in range(opts.rounds):  # interleaved
            for name, cmd in (("sandboxer none", none), ("sandboxer slirp4netns", slirp)):
                m = median_ms(cmd, env, 1)
                if m is not None:
                    starts[name].append(m)
        results["start_ms"] = {k: statistics.median(v) if v else None for k, v in starts.items()}
        port = free_port()
        results["sandboxer"] = serve_and_measure(
            [*SANDBOXER, "run", "--read-only", "--network", "slirp4netns", "-p", f"127.0.0.1:{port}:5000", "--",
             "python3", "-c", SERVER], port, env, opts.gib, opts.requests)
        if pod:
            error = ensure_podman_image(pod, pod_env, Path(tmp))
            if error:
                results["podman"] = {"error": error}
            else:
                p_none = [*pod, "run", "--rm", "--network=none", PODMAN_IMAGE, "true"]
                p_slirp = [*pod, "run", "--rm", "--network=slirp4netns", PODMAN_IMAGE, "true"]
                results["podman_start_ms"] = {"none": median_ms(p_none, pod_env, max(3, opts.rounds // 4)),
                                              "slirp4netns": median_ms(p_slirp, pod_env, max(3, opts.rounds // 4))}
                port = free_port()
                results["podman"] = serve_and_measure(
                    [*pod, "run", "--rm", "--network=slirp4netns", "-p", f"127.0.0.1:{port}:5000", PODMAN_IMAGE,
                     "python3", "-c", SERVER], port, pod_env, opts.gib, opts.requests)
    print(json.dumps(results, indent=2) if opts.json else table(results))
    return 0


def table(r: dict[str, object]) -> str:
    def get(section: str, key: str) -> float | None:
        value = r.get(section)
        return value.get(key) if isinstance(value, dict) and isinstance(value.get(key), float) else None

    def fmt(v: float | None) -> str:
        return "n/a" if v is None else f"{v:.2f}"

    none, slirp = get("start_ms", "sandboxer none"), get("start_ms", "sandboxer slirp4netns")
    overhead = slirp - none if none is not None and slirp is not None else None
    p_none, p_slirp = get("podman_start_ms", "none"), get("podman_start_ms", "slirp4netns")
    p_overhead = p_slirp - p_none if p_none is not None and p_slirp is not None else None
    s_tp, p_tp = get("sandboxer", "throughput_mb_s"), get("podman", "throughput_mb_s")
    s_lat, p_lat = get("sandboxer", "latency_ms"), get("podman", "latency_ms")

    def verdict(ok: bool | None) -> str:
        return "N/A" if ok is None else ("PASS" if ok else "FAIL")

    lines = [f"{'':<34} {'sandboxer':>10} {'podman':>10}",
             f"{'start overhead of slirp4netns (ms)':<34} {fmt(overhead):>10} {fmt(p_overhead):>10}",
             f"{'throughput host->sandbox (MB/s)':<34} {fmt(s_tp):>10} {fmt(p_tp):>10}",
             f"{'request latency, median (ms)':<34} {fmt(s_lat):>10} {fmt(p_lat):>10}"]
    for side in ("sandboxer", "podman"):
        section = r.get(side)
        if isinstance(section, dict) and "error" in section:
            lines.append(f"error: {side}: {section['error']}")
    lines.append("TARGETS: start overhead <= 25 ms: "
                 f"{verdict(None if overhead is None else overhead <= 25)}; throughput >= podman: "
                 f"{verdict(None if s_tp is None or p_tp is None else s_tp >= p_tp)}; latency <= podman: "
                 f"{verdict(None if s_lat is None or p_lat is None else s_lat <= p_lat)}")
    return "\n".join(lines)


if __name__ == "__main__":
    sys.exit(main())
