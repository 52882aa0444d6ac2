#!/usr/bin/env python3
"""Image benchmarks against podman, in one run: pull (cold store), run IMAGE (warm), unchanged rebuild.

Run as an unprivileged user, with the Python of sandboxer's environment::

    python bench/images.py [--rounds 3] [--run-rounds 20] [--layers 10] [--layer-mb 20] [--json]

Set-up: Debian's docker-registry on 127.0.0.1 (a free port, plain HTTP);
an image of busybox plus ``--layers`` layers of ``--layer-mb`` MB of random
data each (incompressible, so ~200 MB on the wire by default) is built with
the store API and pushed with ``sandboxer push``.

* pull: ``sandboxer pull`` into a fresh store vs ``podman pull`` into a
  fresh ``--root``, interleaved, each round cold.  Peak RSS of sandboxer's
  process tree comes from ``wait4``.
* run: ``sandboxer run IMAGE true`` vs ``podman run --rm --network=none
  IMAGE true`` on the warm stores, interleaved.
* rebuild: an unchanged ``sandboxer build`` of ``images/demo`` (when the
  builder exists), second run timed.

Targets (issue 4): pull <= 0.8x podman; run <= 0.15x podman; rebuild <= 0.5 s;
pull peak RSS <= 80 MB.  The script reports; it always exits 0.
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
sys.path.insert(0, str(ROOT / "tools"))
sys.path.insert(0, str(HERE))
from local_registry import start_registry  # noqa: E402  (tools/, not a package)
from startup import PODMAN_GLOBAL, podman_env, sandboxer_argv  # noqa: E402

SANDBOXER = sandboxer_argv()


def timed(cmd: list[str], env: dict[str, str]) -> tuple[float, int, str]:
    """(seconds, peak RSS in KiB of the process tree, error line or '')."""
    start = time.perf_counter()
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    _, status, usage = os.wait4(proc.pid, 0)
    elapsed = time.perf_counter() - start
    err = proc.stderr.read().decode(errors="replace") if proc.stderr else ""
    proc.returncode = os.waitstatus_to_exitcode(status)
    if proc.returncode != 0:
        lines = [line for line in err.splitlines() if line.strip()]
        return elapsed, usage.ru_maxrss, (lines[-1] if lines else f"exit {proc.returncode}")[:160]
    return elapsed, usage.ru_maxrss, ""


def make_image(work: Path, layers: int, layer_mb: int, env: dict[str, str]) -> None:
    """busybox + random layers, as bench/big:1 in the store at env's SANDBOXER_DATA_DIR."""
    import tarfile

    subprocess.run([sys.executable, str(ROOT / "images" / "busybox.py"), str(work / "busybox.tar")], check=True)
    tarballs = [str(work / "busybox.tar")]
    for i in range(layers):
        path = work / f"layer{i}.tar"
        with tarfile.open(path, "w") as tar, open(work / "blob", "wb") as blob:
            blob.write(os.urandom(layer_mb << 20))
            blob.flush()
            tar.add(str(work / "blob"), f"data/layer{i}.bin")
        tarballs.append(str(path))
    code = ("import sys; from sandboxer.images.store import Store; from sandboxer.images.reference import "
            "parse_reference; Store().add_image(parse_reference('bench/big:1'), sys.argv[1:], {}, 'bench')")
    subprocess.run([sys.executable, "-c", code, *tarballs], env=env, check=True)
    # the base of images/demo, for the rebuild timing
    subprocess.run([*SANDBOXER, "import", tarballs[0], "sandboxer-test/busybox"], env=env, check=True,
                   stdout=subprocess.DEVNULL)
    for path in tarballs:
        os.unlink(path)
    os.unlink(work / "blob")


def median(values: list[float]) -> float | None:
    return statistics.median(values) if values else None


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    ap.add_argument("--rounds", type=int, default=3, help="cold pulls per tool (default 3)")
    ap.add_argument("--run-rounds", type=int, default=20, help="warm runs per tool (default 20)")
    ap.add_argument("--layers", type=int, default=10)
    ap.add_argument("--layer-mb", type=int, default=20)
    ap.add_argument("--json", action="store_true")
    opts = ap.parse_args(argv)
    podman = shutil.which("podman")
    results: dict[str, object] = {}
    with tempfile.TemporaryDirectory(prefix="sandboxer-bench-images-") as tmp:
        work = Path(tmp)
        registry, addr = start_registry(work / "registry")
        try:
            env = {**os.environ, "SANDBOXER_DATA_DIR": str(work / "source-store")}
            env.pop("PYTHONDONTWRITEBYTECODE", None)
            make_image(work, opts.layers, opts.layer_mb, env)
            ref = f"{addr}/bench/big:1"
            subprocess.run([*SANDBOXER, "push", "-q", "--tls-verify=false", "bench/big:1", ref], env=env, check=True,
                           stdout=subprocess.DEVNULL)
            pod_env = podman_env(dict(os.environ))
            pod = [podman, *PODMAN_GLOBAL] if podman else []
            pulls: dict[str, list[float]] = {"sandboxer": [], "podman": []}
            rss: list[int] = []
            errors: dict[str, str] = {}
            for i in range(opts.rounds):
                sbx_env = {**env, "SANDBOXER_DATA_DIR": str(work / f"pull-{i}")}
                seconds, peak, err = timed([*SANDBOXER, "pull", "-q", "--tls-verify=false", ref], sbx_env)
                if err:
                    errors["sandboxer pull"] = err
                else:
                    pulls["sandboxer"].append(seconds)
                    rss.append(peak)
                if pod:
                    root = work / f"podman-{i}"
                    seconds, _, err = timed([*pod, "--root", str(root / "root"), "--runroot", str(root / "run"),
                                             "pull", "-q", "--tls-verify=false", ref], pod_env)
                    if err:
                        errors["podman pull"] = err
                    else:
                        pulls["podman"].append(seconds)
            runs: dict[str, list[float]] = {"sandboxer": [], "podman": []}
            last = opts.rounds - 1
            sbx_env = {**env, "SANDBOXER_DATA_DIR": str(work / f"pull-{last}")}
            pod_root = work / f"podman-{last}"
            for _ in range(opts.run_rounds):
                seconds, _, err = timed([*SANDBOXER, "run", ref, "true"], sbx_env)
                if err:
                    errors["sandboxer run"] = err
                else:
                    runs["sandboxer"].append(seconds)
                if pod and "podman pull" not in errors:
                    seconds, _, err = timed([*pod, "--root", str(pod_root / "root"), "--runroot",
                                             str(pod_root / "run"), "run", "--rm", "--network=none", ref, "true"],
                                            pod_env)
                    if err:
                        errors["podman run"] = err
                    else:
                        runs["podman"].append(seconds)
            rebuild = None
            demo = ROOT / "images" / "demo"
            if (demo / "Containerfile").exists():
                build = [*SANDBOXER, "build", "-t", "bench/demo", str(demo)]
                for _ in range(2):
                    rebuild, _, err = timed(build, env)
                    if err:
                        errors["sandboxer build"] = err
                        rebuild = None
                        break
            results = {
                "pull_s": {k: median(v) for k, v in pulls.items()},
                "run_ms": {k: (m * 1000 if (m := median(v)) is not None else None) for k, v in runs.items()},
                "rebuild_s": rebuild, "pull_peak_rss_mb": max(rss) / 1024 if rss else None,
                "image_mb": opts.layers * opts.layer_mb, "errors": errors,
            }
        finally:
            registry.kill()
            registry.wait()
            if podman:  # podman leaves read-only files in its roots; let it remove them
                for entry in Path(tmp).glob("podman-*"):
                    subprocess.run([podman, *PODMAN_GLOBAL, "--root", str(entry / "root"), "--runroot",
                                    str(entry / "run"), "system", "reset", "-f"], env=podman_env(dict(os.environ)),
                                   capture_output=True)
    print(json.dumps(results, indent=2) if opts.json else table(results))
    return 0


def table(r: dict[str, object]) -> str:
    pull, run = r["pull_s"], r["run_ms"]
    assert isinstance(pull, dict) and isinstance(run, dict)

    def ratio(a: float | None, b: float | None) -> float | None:
        return a / b if a is not None and b else None

    def fmt(v: float | None, unit: str = "") -> str:
        return "n/a" if v is None else f"{v:.2f}{unit}"

    pull_ratio, run_ratio = ratio(pull["sandboxer"], pull["podman"]), ratio(run["sandboxer"], run["podman"])
    rss, rebuild = r["pull_peak_rss_mb"], r["rebuild_s"]
    assert isinstance(rss, float | None) and isinstance(rebuild, float | None)

    def verdict(value: float | None, limit: float) -> str:
        return "N/A" if value is None else ("PASS" if value <= limit else "FAIL")

    lines = [f"image: busybox + {r['image_mb']} MB of random layers, local registry on 127.0.0.1", "",
             f"{'':<22} {'sandboxer':>10} {'podman':>10} {'ratio':>8}",
             f"{'pull, cold store (s)':<22} {fmt(pull['sandboxer']):>10} {fmt(pull['podman']):>10} "
             f"{fmt(pull_ratio, 'x'):>8}",
             f"{'run IMAGE true (ms)':<22} {fmt(run['sandboxer']):>10} {fmt(run['podman']):>10} "
             f"{fmt(run_ratio, 'x'):>8}",
             f"{'unchanged rebuild (s)':<22} {fmt(rebuild):>10}",
             f"{'pull peak RSS (MB)':<22} {fmt(rss):>10}"]
    errors = r["errors"]
    assert isinstance(errors, dict)
    lines += [f"error: {k}: {v}" for k, v in errors.items()]
    lines.append(f"TARGETS: pull <= 0.8x podman: {verdict(pull_ratio, 0.8)}; run <= 0.15x podman: "
                 f"{verdict(run_ratio, 0.15)}; rebuild <= 0.5 s: {verdict(rebuild, 0.5)}; "
                 f"pull RSS <= 80 MB: {verdict(rss, 80)}")
    return "\n".join(lines)


if __name__ == "__main__":
    sys.exit(main())
