#!/usr/bin/env python3
"""What ``sandboxer run --rm -- /bin/true`` spends on imports, from ``python -X importtime``.

    python bench/import_profile.py [--top 25] [--module] [--cold]

Runs the same ``sandboxer`` console script that bench/startup.py times (or
``-m sandboxer`` with ``--module``) under ``-X importtime``, after one
untimed warm-up run so the numbers are imports, not byte-compiling (the same
private ``PYTHONPYCACHEPREFIX`` as startup.py; ``--cold`` skips both).  Forked
sandboxer helpers inherit the flag, so their lazy imports are counted too;
a module imported in several processes is summed.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import time
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path

from startup import python_env  # same bytecode-cache policy as the timing benchmark

SANDBOXER_ARGS = ["run", "--rm", "--", "/bin/true"]


@dataclass
class Entry:
    self_us: int = 0
    cumulative_us: int = 0
    top_level: bool = False  # imported directly by the script, not by another module


def parse_importtime(stderr: str) -> dict[str, Entry]:
    """Fold ``import time: SELF | CUMULATIVE | <indent>NAME`` lines into per-module totals."""
    entries: dict[str, Entry] = defaultdict(Entry)
    for line in stderr.splitlines():
        if not line.startswith("import time:"):
            continue
        parts = line[len("import time:"):].split("|", 2)
        if len(parts) != 3 or not parts[0].strip().isdigit():
            continue  # the header line, or a line torn by another process
        raw_name = parts[2][1:]  # one space follows the bar; the rest is nesting
        entry = entries[raw_name.strip()]
        entry.self_us += int(parts[0])
        entry.cumulative_us += int(parts[1])
        entry.top_level |= not raw_name.startswith(" ")
    return dict(entries)


def command(opts: argparse.Namespace) -> list[str]:
    """The console script when there is one: it is what users run and what startup.py times."""
    script = Path(sys.executable).parent / "sandboxer"
    if opts.module or not os.access(script, os.X_OK):
        return [sys.executable, "-X", "importtime", "-m", "sandboxer", *SANDBOXER_ARGS]
    return [sys.executable, "-X", "importtime", str(script), *SANDBOXER_ARGS]


def run(argv: list[str], env: dict[str, str]) -> tuple[subprocess.CompletedProcess[str], float]:
    start = time.perf_counter()
    res = subprocess.run(argv, env=env, stdin=subprocess.DEVNULL, capture_output=True, text=True)
    return res, (time.perf_counter() - start) * 1e3


def render(entries: dict[str, Entry], top: int, wall_ms: float) -> str:
    total_us = sum(e.cumulative_us for e in entries.values() if e.top_level)
    own = [e for name, e in entries.items() if name.split(".")[0] == "sandboxer"]
    lines = [f"{'self ms':>9}{'cumul ms':>10}  module"]
    ranked = sorted(entries.items(), key=lambda kv: kv[1].cumulative_us, reverse=True)
    lines += [f"{e.self_us / 1e3:>9.2f}{e.cumulative_us / 1e3:>10.2f}  {name}" for name, e in ranked[:top]]
    lines.append(f"total import time {total_us / 1e3:.1f} ms over {len(entries)} modules "
                 f"(sandboxer's own: {len(own)} modules, {sum(e.self_us for e in own) / 1e3:.1f} ms self); "
                 f"run wall time {wall_ms:.1f} ms")
    return "\n".join(lines)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    ap.add_argument("--top", type=int, default=25, help="modules to list (default 25)")
    ap.add_argument("--module", action="store_true", help="profile 'python -m sandboxer' instead")
    ap.add_argument("--cold", action="store_true",
                    help="no warm-up and no private bytecode cache: include compile time")
    return ap.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    opts = parse_args(argv)
    env = python_env(dict(os.environ), use_prefix=not opts.cold)
    cmd = command(opts)
    if not opts.cold:
        run(cmd, env)
    res, wall_ms = run(cmd, env)
    print("$ " + " ".join(cmd))
    if res.returncode != 0:
        print(f"(exit status {res.returncode}; the imports up to the failure follow)")
    print(render(parse_importtime(res.stderr), opts.top, wall_ms))
    return 0


if __name__ == "__main__":
    sys.exit(main())
