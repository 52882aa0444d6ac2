"""The ``sandboxer`` command line.

Parsing is table-driven and hand-written rather than argparse: argparse
alone costs ~7 ms of a ~20 ms budget for ``sandboxer run``.  Each command
imports what it needs when it runs, so ``run`` never loads the doctor, the
OCI template or anything of the network stack.
"""

from __future__ import annotations

import os
import sys
from collections import namedtuple
from collections.abc import Callable

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any

__all__ = ["main"]

# option kinds
FLAG, VALUE, MULTI = "flag", "value", "multi"


class Opt(namedtuple("Opt", "names dest kind help metavar", defaults=("",))):
    """One option: its spellings, where its value goes, FLAG/VALUE/MULTI."""

    names: tuple[str, ...]
    dest: str
    kind: str
    help: str
    metavar: str
    __slots__ = ()


class Command(namedtuple("Command", "name summary usage options handler stop_at_positional",
                         defaults=(False,))):
    """A subcommand; ``stop_at_positional``: the first positional starts the command to run."""

    name: str
    summary: str
    usage: str
    options: tuple[Opt, ...]
    handler: Callable[[dict[str, Any], list[str]], int]
    stop_at_positional: bool
    __slots__ = ()


class CliUsageError(Exception):
    pass


def parse(cmd: Command, argv: list[str]) -> tuple[dict[str, Any], list[str]]:
    """Docker-style options: ``-it``, ``-eK=V``, ``--env=K=V``, ``--env K=V``, ``--``."""
    table = {name: opt for opt in cmd.options for name in opt.names}
    values: dict[str, Any] = {o.dest: ([] if o.kind == MULTI else None) for o in cmd.options}
    rest: list[str] = []
    i = 0
    while i < len(argv):
        arg = argv[i]
        i += 1
        if arg == "--":
            rest.extend(argv[i:])
            break
        if not arg.startswith("-") or arg == "-":
            rest.append(arg)
            if cmd.stop_at_positional:
                rest.extend(argv[i:])
                break
            continue
        if arg.startswith("--"):
            name, eq, glued = arg.partition("=")
            pending: list[tuple[str, str | None]] = [(name, glued if eq else None)]
        else:  # a cluster of short options; a value may be glued on
            pending = []
            for j, ch in enumerate(arg[1:], 1):
                opt = table.get(f"-{ch}")
                if opt is not None and opt.kind != FLAG and j + 1 < len(arg):
                    pending.append((f"-{ch}", arg[j + 1:].removeprefix("=")))
                    break
                pending.append((f"-{ch}", None))
        for name, inline in pending:
            opt = table.get(name)
            if opt is None:
                raise CliUsageError(f"unknown option {name} for 'sandboxer {cmd.name}'")
            if opt.kind == FLAG:
                if inline is not None:
                    if inline.lower() not in ("true", "false", "1", "0"):
                        raise CliUsageError(f"option {name} takes no value")
                    values[opt.dest] = inline.lower() in ("true", "1")
                else:
                    values[opt.dest] = True
                continue
            if inline is None:
                if i >= len(argv):
                    raise CliUsageError(f"option {name} needs a value")
                inline = argv[i]
                i += 1
            if opt.kind == MULTI:
                values[opt.dest].append(inline)
            else:
                values[opt.dest] = inline
    return values, rest


def _help(cmd: Command) -> str:
    lines = [f"Usage: sandboxer {cmd.name} {cmd.usage}", "", cmd.summary, "", "Options:"]
    for o in cmd.options:
        names = ", ".join(o.names) + (f" {o.metavar}" if o.metavar else "")
        lines.append(f"  {names:<32} {o.help}")
    lines.append(f"  {'--help':<32} show this help")
    return "\n".join(lines)


# --- run -------------------------------------------------------------------

_RUN_OPTS = (
    Opt(("--rm",), "rm", FLAG, "remove the sandbox when it exits (always so for host-root runs)"),
    Opt(("-i", "--interactive"), "interactive", FLAG, "keep stdin open (default: /dev/null)"),
    Opt(("-t", "--tty"), "tty", FLAG, "give the command a pseudo-terminal"),
    Opt(("--name",), "name", VALUE, "a name for the sandbox, unique per user", "NAME"),
    Opt(("--hostname",), "hostname", VALUE, "hostname inside (default: the short sandbox id)", "NAME"),
    Opt(("-e", "--env"), "env", MULTI, "set an environment variable (K=V, or K to pass ours)", "K=V"),
    Opt(("--env-file",), "env_file", MULTI, "read K=V lines from a file", "FILE"),
    Opt(("-w", "--workdir"), "workdir", VALUE, "working directory inside (default /)", "DIR"),
    Opt(("-u", "--user"), "user", VALUE, "run as UID[:GID] (or a user name)", "UID[:GID]"),
    Opt(("-v", "--volume"), "volume", MULTI, "bind a host path: SRC:DST[:ro|rw]", "SRC:DST[:MODE]"),
    Opt(("--tmpfs",), "tmpfs", MULTI, "mount a fresh tmpfs at DST", "DST[:OPTS]"),
    Opt(("--read-only",), "read_only", FLAG, "mount the root filesystem read-only"),
    Opt(("--cap-add",), "cap_add", MULTI, "add a capability (e.g. NET_ADMIN, or ALL)", "CAP"),
    Opt(("--cap-drop",), "cap_drop", MULTI, "drop a capability (or ALL)", "CAP"),
    Opt(("--security-opt",), "security_opt", MULTI,
        "seccomp=unconfined|PROFILE.json, no-new-privileges[=true|false]", "OPT"),
    Opt(("--init",), "init", FLAG, "run a small init as PID 1 that reaps zombies and forwards signals"),
    Opt(("--network", "--net"), "network", VALUE, "none (default) or host", "MODE"),
    Opt(("--storage-driver",), "storage_driver", VALUE, "overlay, fuse-overlayfs or copy", "NAME"),
    Opt(("-b", "--bundle"), "bundle", VALUE, "run the OCI bundle in DIR (then the argument is its ID)",
        "DIR"),
    Opt(("--debug",), "debug", FLAG, "print set-up steps, and tracebacks on errors"),
)


def _read_env_file(path: str) -> list[str]:
    from .errors import UsageError

    try:
        with open(path) as f:
            lines = f.read().splitlines()
    except OSError as e:
        raise UsageError(f"cannot read env file {path}: {e.strerror}") from e
    out = []
    for n, line in enumerate(lines, 1):
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        key = line.partition("=")[0]
        if not key or any(c.isspace() for c in key):
            raise UsageError(f"{path}:{n}: invalid variable name {key!r}")
        out.append(line)
    return out


def _env_list(pairs: list[str]) -> list[str]:
    """``K=V`` as is; a bare ``K`` takes our value (and is dropped if unset), as docker does."""
    out = []
    for pair in pairs:
        if "=" in pair:
            out.append(pair)
        elif pair in os.environ:
            out.append(f"{pair}={os.environ[pair]}")
    return out


def _security_opts(opts: list[str]) -> tuple[str, bool]:
    from .errors import UsageError

    seccomp, nnp = "default", True
    for opt in opts:
        key, _, value = opt.partition("=" if "=" in opt else ":")
        if key == "seccomp" and value:
            seccomp = value
        elif key in ("no-new-privileges", "no_new_privileges"):
            if value not in ("", "true", "false"):
                raise UsageError(f"invalid --security-opt {opt!r}", hint="no-new-privileges[=true|false]")
            nnp = value != "false"
        else:
            raise UsageError(f"unsupported --security-opt {opt!r}",
                             hint="supported: seccomp=unconfined|PROFILE.json, no-new-privileges[=false]")
    return seccomp, nnp


def cmd_run(values: dict[str, Any], rest: list[str]) -> int:
    from .sandbox import SandboxOptions, Volume, run, run_bundle

    debug = bool(values["debug"])
    if values["bundle"]:
        if len(rest) > 1:
            raise CliUsageError("with --bundle, give at most one argument: the sandbox ID")
        status = run_bundle(str(values["bundle"]), rest[0] if rest else None, debug=debug,
                            init=bool(values["init"]))
        return status.code
    seccomp, nnp = _security_opts(values["security_opt"])
    env = [e for path in values["env_file"] for e in _read_env_file(path)]
    opts = SandboxOptions(
        command=rest, name=values["name"], hostname=values["hostname"],
        env=_env_list(env + values["env"]),
        workdir=str(values["workdir"] or "/"), user=values["user"],
        volumes=[Volume.parse(v) for v in values["volume"]],
        tmpfs=values["tmpfs"], read_only=bool(values["read_only"]),
        cap_add=values["cap_add"], cap_drop=values["cap_drop"],
        seccomp=seccomp, no_new_privileges=nnp, init=bool(values["init"]),
        interactive=bool(values["interactive"]), tty=bool(values["tty"]),
        network=str(values["network"] or "none"),
        storage_driver=values["storage_driver"], debug=debug)
    status = run(opts)
    return status.code


# --- spec, doctor, version ----------------------------------------------------

def cmd_spec(values: dict[str, Any], rest: list[str]) -> int:
    from .oci.template import write_template

    if rest:
        raise CliUsageError("'sandboxer spec' takes no arguments")
    path = write_template(str(values["bundle"] or "."), rootless=bool(values["rootless"]),
                          force=bool(values["force"]))
    print(path)
    return 0


def cmd_doctor(values: dict[str, Any], rest: list[str]) -> int:
    from .doctor import main as doctor_main

    return doctor_main(["--json"] if values["json"] else [])


def cmd_version(values: dict[str, Any], rest: list[str]) -> int:
    from importlib.metadata import PackageNotFoundError, version

    try:
        v = version("sandboxer")
    except PackageNotFoundError:
        v = "unknown"
    print(f"sandboxer {v}")
    return 0


def cmd_gc(values: dict[str, Any], rest: list[str]) -> int:
    from .state import collect_garbage

    for sid in collect_garbage():
        print(f"removed leftovers of sandbox {sid[:12]}")
    return 0


COMMANDS = {c.name: c for c in (
    Command("run", "Run a command in a fresh sandbox on the host's root (or an OCI bundle).",
            "[OPTIONS] [--] CMD [ARG...]   |   run --bundle DIR [ID]", _RUN_OPTS, cmd_run,
            stop_at_positional=True),
    Command("spec", "Write a config.json template (like 'runc spec').", "[--rootless] [--bundle DIR]",
            (Opt(("--rootless",), "rootless", FLAG, "a template for an unprivileged user"),
             Opt(("-b", "--bundle"), "bundle", VALUE, "where to write config.json (default .)", "DIR"),
             Opt(("--force",), "force", FLAG, "overwrite an existing config.json"),
             Opt(("--debug",), "debug", FLAG, "tracebacks on errors")), cmd_spec),
    Command("doctor", "Check what this host can give a sandbox, and how to fix what it can't.",
            "[--json]", (Opt(("--json",), "json", FLAG, "machine-readable output"),
                         Opt(("--debug",), "debug", FLAG, "tracebacks on errors")), cmd_doctor),
    Command("gc", "Remove what crashed sandboxes left behind.", "",
            (Opt(("--debug",), "debug", FLAG, "tracebacks on errors"),), cmd_gc),
    Command("version", "Print the version.", "", (), cmd_version),
)}


def _main_help() -> str:
    lines = ["Usage: sandboxer COMMAND [OPTIONS]", "",
             "Rootless, daemonless sandboxes for running commands and tests.", "", "Commands:"]
    lines += [f"  {c.name:<10} {c.summary}" for c in COMMANDS.values()]
    lines += ["", "Run 'sandboxer COMMAND --help' for a command's options."]
    return "\n".join(lines)


def _print_error(err: BaseException) -> None:
    hint = getattr(err, "hint", None)
    print(f"sandboxer: error: {err}", file=sys.stderr)
    if hint:
        print(f"hint: {hint}", file=sys.stderr)


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if not argv or argv[0] in ("-h", "--help", "help"):
        print(_main_help())
        return 0 if argv else 125
    if argv[0] == "--version":
        return cmd_version({}, [])
    cmd = COMMANDS.get(argv[0])
    if cmd is None:
        print(f"sandboxer: error: unknown command {argv[0]!r}\nhint: see 'sandboxer --help'", file=sys.stderr)
        return 125
    if "--help" in argv[1:] and (not cmd.stop_at_positional or argv.index("--help") < _first_positional(argv)):
        print(_help(cmd))
        return 0
    debug = "--debug" in argv[1:_first_positional(argv)]
    try:
        values, rest = parse(cmd, argv[1:])
        return cmd.handler(values, rest)
    except CliUsageError as e:
        print(f"sandboxer: error: {e}\nhint: see 'sandboxer {cmd.name} --help'", file=sys.stderr)
        return 125
    except KeyboardInterrupt:
        return 130
    except Exception as e:
        from .errors import SandboxerError

        if debug:
            import traceback

            traceback.print_exc()
        if isinstance(e, SandboxerError | OSError):
            _print_error(e)
        else:  # a bug, not a usage mistake: say so, keep the traceback for --debug
            print(f"sandboxer: internal error: {type(e).__name__}: {e}", file=sys.stderr)
            if not debug:
                print("hint: run again with --debug and report the traceback", file=sys.stderr)
        return int(getattr(e, "exit_code", 125))


def _first_positional(argv: list[str]) -> int:
    """Index of the first argument that is not an option or option value (approximate)."""
    for i, arg in enumerate(argv[1:], 1):
        if arg == "--":
            return i
        if not arg.startswith("-") and not argv[i - 1].startswith("-"):
            return i
    return len(argv)


if __name__ == "__main__":
    sys.exit(main())
