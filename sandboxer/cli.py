"""The ``sandboxer`` command line.

Parsing is table-driven and hand-written rather than argparse: argparse
alone costs ~7 ms of a ~20 ms budget for ``sandboxer run``.  Each command
imports what it needs when it runs, so ``run`` never loads the doctor, the
OCI template or anything of the network stack.
"""

from __future__ import annotations

import gc
import os
import sys

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Callable
    from typing import Any

__all__ = ["main"]

# option kinds
FLAG, VALUE, MULTI = "flag", "value", "multi"


class Opt:
    """One option: its spellings, where its value goes, FLAG/VALUE/MULTI.  (Plain classes, not
    namedtuples: ``collections`` is ~1.5 ms of every command's start.)"""

    __slots__ = ("names", "dest", "kind", "help", "metavar")

    def __init__(self, names: tuple[str, ...], dest: str, kind: str, help: str, metavar: str = "") -> None:
        self.names, self.dest, self.kind, self.help, self.metavar = names, dest, kind, help, metavar


class Command:
    """A subcommand; ``stop_at_positional``: the first positional starts the command to run."""

    __slots__ = ("name", "summary", "usage", "options", "handler", "stop_at_positional")

    def __init__(self, name: str, summary: str, usage: str, options: tuple[Opt, ...],
                 handler: Callable[[dict[str, Any], list[str]], int], stop_at_positional: bool = False) -> None:
        self.name, self.summary, self.usage, self.options = name, summary, usage, options
        self.handler, self.stop_at_positional = handler, stop_at_positional


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
            values["--"] = not rest  # "--" ended the options: what follows is a command, not an image
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
    Opt(("-d", "--detach"), "detach", FLAG, "run in the background under a supervisor; print the id"),
    Opt(("-i", "--interactive"), "interactive", FLAG, "keep stdin open (default: /dev/null)"),
    Opt(("-t", "--tty"), "tty", FLAG, "give the command a pseudo-terminal"),
    Opt(("--name",), "name", VALUE, "a name for the sandbox, unique per user", "NAME"),
    Opt(("--timeout",), "timeout", VALUE, "kill the sandbox after SECS seconds (exit 137, reason \"timeout\")",
        "SECS"),
    Opt(("--log-opt",), "log_opt", MULTI, "with -d: max-size=SIZE rotates the log (default 10m; -1: never)",
        "K=V"),
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
    Opt(("--network", "--net"), "network", VALUE,
        "none (default: loopback only), host, pasta, slirp4netns[:allow_host_loopback=true], or a "
        "network made with 'sandboxer network create'", "MODE"),
    Opt(("-p", "--publish"), "publish", MULTI,
        "publish a port (with pasta or slirp4netns): [HOSTIP:][HOSTPORT:]CPORT[/udp]", "PORT"),
    Opt(("-P", "--publish-all"), "publish_all", FLAG, "publish every port the image exposes on a free host port"),
    Opt(("--dns",), "dns", MULTI, "a DNS server for /etc/resolv.conf (pasta, slirp4netns; default 10.0.2.3)", "IP"),
    Opt(("--add-host",), "add_host", MULTI, "an /etc/hosts entry", "NAME:IP"),
    Opt(("--network-alias",), "network_alias", MULTI, "another name peers on a user-defined network know it by",
        "NAME"),
    Opt(("--storage-driver",), "storage_driver", VALUE, "overlay, fuse-overlayfs or copy", "NAME"),
    Opt(("--pull",), "pull", VALUE, "missing (default): pull an image not in the store; never; always", "WHEN"),
    Opt(("--platform",), "platform", VALUE, "the platform to pull", "PLATFORM"),
    Opt(("--tls-verify",), "tls_verify", VALUE, "false: the registry may be plain HTTP", "BOOL"),
    Opt(("-b", "--bundle"), "bundle", VALUE, "run the OCI bundle in DIR (then the argument is its ID)",
        "DIR"),
    Opt(("--debug",), "debug", FLAG, "print set-up steps, and tracebacks on errors"),
)


def _read_env_file(path: str) -> list[str]:
    from .errors import UsageError

    try:
        with open(path, encoding="utf-8") as f:
            lines = f.read().splitlines()
    except OSError as e:
        raise UsageError(f"cannot read env file {path}: {e.strerror}") from e
    except UnicodeDecodeError:
        raise UsageError(f"env file {path} is not UTF-8 text", hint="one NAME=VALUE per line") from None
    out = []
    for n, line in enumerate(lines, 1):
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        _check_env(line, f"{path}:{n}")
        out.append(line)
    return out


def _check_env(pair: str, where: str) -> None:
    """Refused now, not by the set-up process: an empty name, a name with blanks, or a NUL anywhere."""
    from .errors import UsageError

    key = pair.partition("=")[0]
    if not key or any(c.isspace() for c in key) or "\x00" in pair:
        raise UsageError(f"{where}: invalid environment variable {pair[:40]!r}",
                         hint="NAME=VALUE, or NAME to pass ours; the name without blanks, no NUL bytes")


def _env_list(pairs: list[str]) -> list[str]:
    """``K=V`` as is; a bare ``K`` takes our value (and is dropped if unset), as docker does."""
    out = []
    for pair in pairs:
        _check_env(pair, "-e")
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


def _image_and_command(values: dict[str, Any], rest: list[str]) -> tuple[str | None, list[str]]:
    """``run -- CMD`` is the host root; ``run IMAGE [--] [CMD]`` an image, as docker spells it."""
    if values.get("--") or not rest:
        return None, rest
    image, command = rest[0], rest[1:]
    if command[:1] == ["--"]:
        command = command[1:]
    return image, command


def _pull_if_needed(name: str, values: dict[str, Any]) -> None:
    """``--pull missing`` (docker's default): a name not in the store is pulled first."""
    from .images.ensure import ensure_image
    from .images.store import StoreError

    when = values["pull"] or "missing"
    if when not in ("missing", "never", "always"):
        raise CliUsageError("--pull takes missing, never or always")
    try:
        ensure_image(name, when, platform=values["platform"], tls_verify=_tls_verify(values),
                     progress=_progress(False))
    except StoreError as e:  # a failed pull arrives as one too
        host_hint = "to run a command on the host's root, put it after --: sandboxer run -- CMD"
        e.hint = f"{e.hint}; {host_hint}" if e.hint else host_hint
        raise


def cmd_run(values: dict[str, Any], rest: list[str]) -> int:
    from .sandbox import SandboxOptions, Volume, run, run_bundle

    debug = bool(values["debug"])
    timeout = _seconds(values["timeout"], "--timeout", None)
    if timeout is not None and timeout <= 0:
        raise CliUsageError("--timeout takes a positive number of seconds")
    if values["bundle"]:
        if len(rest) > 1:
            raise CliUsageError("with --bundle, give at most one argument: the sandbox ID")
        status = run_bundle(str(values["bundle"]), rest[0] if rest else None, debug=debug,
                            init=bool(values["init"]), timeout=timeout)
        return _exit_code(status, timeout)
    image, command = _image_and_command(values, rest)
    if image is not None:
        _pull_if_needed(image, values)
    seccomp, nnp = _security_opts(values["security_opt"])
    env = [e for path in values["env_file"] for e in _read_env_file(path)]
    opts = SandboxOptions(
        command=command, image=image, name=values["name"], hostname=values["hostname"],
        env=_env_list(env + values["env"]),
        workdir=values["workdir"], user=values["user"],
        volumes=[Volume.parse(v) for v in values["volume"]],
        tmpfs=values["tmpfs"], read_only=bool(values["read_only"]),
        cap_add=values["cap_add"], cap_drop=values["cap_drop"],
        seccomp=seccomp, no_new_privileges=nnp, init=bool(values["init"]),
        interactive=bool(values["interactive"]), tty=bool(values["tty"]),
        network="none" if values["network"] is None else values["network"], publish=values["publish"],
        dns=values["dns"], add_host=values["add_host"], publish_all=bool(values["publish_all"]),
        network_aliases=values["network_alias"],
        storage_driver=values["storage_driver"], debug=debug)
    if values["detach"]:
        return _run_detached(opts, _log_max_size(values["log_opt"]), timeout)
    if values["log_opt"]:
        raise CliUsageError("--log-opt applies to detached sandboxes (run -d)")
    return _exit_code(run(opts, timeout=timeout), timeout)


def _exit_code(status: Any, timeout: float | None) -> int:
    """PID 1's code; a sandbox killed by ``--timeout`` also says so on stderr (its code is 137).

    The sandbox has ended and been torn down (state, mounts, helpers): nothing of ours is left for the
    interpreter's teardown (see :func:`_exit_fast`)."""
    if status.timed_out:
        print(f"sandboxer: timed out after {timeout:g} s: the sandbox was killed", file=sys.stderr)
    _FAST_EXIT[0] = True
    return int(status.code)


def _seconds(value: str | None, option: str, default: float | None) -> float | None:
    """A number of seconds given to ``option`` (``default`` when not given)."""
    if value is None:
        return default
    try:
        seconds = float(value)
    except ValueError:
        raise CliUsageError(f"{option} takes a number of seconds") from None
    if seconds != seconds or seconds < 0 or seconds == float("inf"):
        raise CliUsageError(f"{option} takes a number of seconds")
    return seconds


def _log_max_size(opts: list[str]) -> int:
    from .logfile import DEFAULT_MAX_SIZE, parse_size

    size = DEFAULT_MAX_SIZE
    for opt in opts:
        key, eq, value = opt.partition("=")
        if key != "max-size" or not eq:
            raise CliUsageError(f"unsupported --log-opt {opt!r} (supported: max-size=SIZE)")
        size = parse_size(value)
    return size


def _run_detached(opts: Any, log_max_size: int, timeout: float | None) -> int:
    from .sandbox import _print_notice, prepare
    from .supervisor import detach

    if opts.interactive or opts.tty:
        raise CliUsageError("-d cannot be combined with -i or -t (a detached sandbox has no terminal)")
    if opts.name is not None:
        from .supervisor import claim_name_check

        claim_name_check(opts.name)
    plan = prepare(opts)
    for notice in plan.notices:
        _print_notice(notice)
    print(detach(plan, opts, log_max_size, timeout=timeout))
    _FAST_EXIT[0] = True  # nothing of ours is left to tear down: the sandbox is the supervisor's now
    return 0


# --- images --------------------------------------------------------------------

def _store() -> Any:
    from .images.store import Store

    return Store()


def cmd_images(values: dict[str, Any], rest: list[str]) -> int:
    if rest:
        raise CliUsageError("'sandboxer images' takes no arguments")
    images = _store().images()
    if values["quiet"]:
        for image in images:
            print(image.id.removeprefix("sha256:")[:12])
        return 0
    print(f"{'REPOSITORY':<40} {'TAG':<16} {'IMAGE ID':<12}  {'CREATED':<20}  SIZE")
    for image in images:
        ref = image.reference
        repo = ref.familiar.rpartition(":")[0] if ref.tag else ref.familiar
        size = sum(int(layer.get("size", 0)) for layer in image.manifest.get("layers", []))
        created = str(image.config.get("created", ""))[:19].replace("T", " ")
        print(f"{repo:<40} {ref.tag or '<none>':<16} {image.id.removeprefix('sha256:')[:12]:<12}  "
              f"{created:<20}  {_human(size)}")
    return 0


def _human(size: float) -> str:
    for unit in ("B", "kB", "MB", "GB"):
        if size < 1000 or unit == "GB":
            return f"{size:.3g} {unit}" if unit != "B" else f"{int(size)} B"
        size /= 1000
    return ""


def cmd_image_inspect(values: dict[str, Any], rest: list[str]) -> int:
    import json

    if not rest:
        raise CliUsageError("'sandboxer image inspect' needs at least one IMAGE")
    store = _store()
    out = []
    for name in rest:
        image = store.image(name)
        out.append({"Id": image.id, "RepoTags": [image.reference.familiar], "Digest": image.manifest_digest,
                    "Manifest": image.manifest, "Config": image.config,
                    "Layers": image.diff_ids})
    print(json.dumps(out, indent=2))
    return 0


def cmd_rmi(values: dict[str, Any], rest: list[str]) -> int:
    if not rest:
        raise CliUsageError("'sandboxer rmi' needs at least one IMAGE")
    store = _store()
    for name in rest:
        ref, digest = store.lookup(name)
        users = [] if values["force"] else _sandboxes_using(store, ref, digest)
        if users:
            from .errors import UsageError

            raise UsageError(f"image {ref.familiar} is used by sandbox {', '.join(users)}",
                             hint=f"remove the sandbox first (sandboxer rm -f {users[0]}), or force: "
                                  f"sandboxer rmi -f {name}")
        store.untag(ref)
        print(f"Untagged: {ref.familiar}")
    _, layers = store.prune()  # what no remaining image (or running sandbox) uses
    for layer in layers:
        print(f"Deleted: {layer}")
    return 0


def _sandboxes_using(store: Any, ref: Any, digest: str) -> list[str]:
    """Sandboxes that need the name ``ref`` (a detached one's record restarts by name, exited or not)
    or, when it is the image's last name, its layers (a running one, started in the foreground)."""
    from .errors import SandboxerError
    from .images.reference import parse_reference
    from .images.store import StoreError
    from .state import IMAGE_LAYERS, live_records
    from .supervisor import records

    users = []
    for record in records(all_=True):
        try:
            if record.get("image") and parse_reference(record["image"]) == ref:
                users.append(record.get("name") or record["id"][:12])
        except SandboxerError:
            continue
    if not users and list(store.read_index().values()).count(digest) == 1:
        try:
            chain = "\n".join(store.image_from_manifest(ref, digest).diff_ids) + "\n"
        except StoreError:
            return users
        if chain in live_records(IMAGE_LAYERS):
            users.append("(a running one)")
    return users


def cmd_tag(values: dict[str, Any], rest: list[str]) -> int:
    from .images.reference import parse_reference

    if len(rest) != 2:
        raise CliUsageError("usage: sandboxer tag SOURCE TARGET")
    store = _store()
    _, digest = store.lookup(rest[0])
    store.tag(parse_reference(rest[1]), digest)
    return 0


def cmd_image_prune(values: dict[str, Any], rest: list[str]) -> int:
    if rest:
        raise CliUsageError("'sandboxer image prune' takes no arguments")
    blobs, layers = _store().prune()
    print(f"removed {len(blobs)} blobs and {len(layers)} layers")
    return 0


def cmd_import(values: dict[str, Any], rest: list[str]) -> int:
    from .images.reference import parse_reference

    if len(rest) != 2:
        raise CliUsageError("usage: sandboxer import ROOTFS.tar[.gz] NAME[:TAG]")
    ref = parse_reference(rest[1])
    cmd = None
    if values["cmd"]:
        import shlex

        cmd = shlex.split(values["cmd"])
    image = _store().import_rootfs(rest[0], ref, cmd=cmd)
    print(image.id)
    return 0


def _tls_verify(values: dict[str, Any]) -> bool | None:
    value = values.get("tls_verify")
    if value is None:
        return None
    if str(value).lower() not in ("true", "false"):
        raise CliUsageError("--tls-verify takes true or false")
    return str(value).lower() == "true"


def _progress(quiet: bool) -> Any:
    from .images.progress import choose

    return choose(quiet)


def cmd_pull(values: dict[str, Any], rest: list[str]) -> int:
    from .images.reference import parse_reference
    from .images.registry import pull

    if len(rest) != 1:
        raise CliUsageError("usage: sandboxer pull [OPTIONS] NAME[:TAG|@DIGEST]")
    image = pull(parse_reference(rest[0]), platform=values["platform"], tls_verify=_tls_verify(values),
                 progress=_progress(bool(values["quiet"])))
    print(image.manifest_digest)
    return 0


def cmd_push(values: dict[str, Any], rest: list[str]) -> int:
    from .images.reference import parse_reference
    from .images.registry import push

    if len(rest) not in (1, 2):
        raise CliUsageError("usage: sandboxer push [OPTIONS] IMAGE [DESTINATION]")
    destination = parse_reference(rest[1]) if len(rest) == 2 else None
    digest = push(rest[0], destination, tls_verify=_tls_verify(values), progress=_progress(bool(values["quiet"])))
    print(digest)
    return 0


def cmd_login(values: dict[str, Any], rest: list[str]) -> int:
    from .images.registry import login

    if len(rest) != 1 or not values["username"]:
        raise CliUsageError("usage: sandboxer login -u USER [--password-stdin | -p PASSWORD] REGISTRY")
    password = sys.stdin.readline().rstrip("\n") if values["password_stdin"] else values["password"]
    if password is None:
        import getpass

        password = getpass.getpass("Password: ")
    path = login(rest[0], values["username"], password, tls_verify=_tls_verify(values))
    print(f"Login Succeeded (saved in {path})")
    return 0


def cmd_image(values: dict[str, Any], rest: list[str]) -> int:
    """``sandboxer image ls|inspect|rm|prune|tag|import``, as docker groups them."""
    sub = {"ls": "images", "list": "images", "inspect": "inspect", "rm": "rmi", "prune": "prune",
           "tag": "tag", "import": "import"}
    # 'image inspect' is not the sandboxes' 'inspect'
    table = {word: _IMAGE_ONLY.get(name) or COMMANDS[name] for word, name in sub.items()}
    return _subcommand(table, rest, "usage: sandboxer image ls|inspect|rm|prune|tag|import ...")


def _subcommand(table: dict[str, Command], rest: list[str], usage: str) -> int:
    """``sandboxer GROUP WORD ...``: the command ``table[WORD]`` with the rest of the arguments."""
    if not rest or rest[0] not in table:
        raise CliUsageError(usage)
    cmd = table[rest[0]]
    sub_values, sub_rest = parse(cmd, rest[1:])
    return cmd.handler(sub_values, sub_rest)


def cmd_network(values: dict[str, Any], rest: list[str]) -> int:
    """``sandboxer network create|ls|inspect|rm``, as docker groups them."""
    table = {**_NETWORK, "list": _NETWORK["ls"], "remove": _NETWORK["rm"]}
    return _subcommand(table, rest, "usage: sandboxer network create|ls|inspect|rm ...")


def cmd_network_create(values: dict[str, Any], rest: list[str]) -> int:
    from .network.networks import create

    if len(rest) != 1:
        raise CliUsageError("usage: sandboxer network create [--subnet CIDR] NAME")
    print(create(rest[0], values["subnet"]).id)
    return 0


def cmd_network_ls(values: dict[str, Any], rest: list[str]) -> int:
    from .network.networks import all_networks

    found = all_networks()
    if values["quiet"]:
        print("\n".join(n.name for n in found) if found else "", end="\n" if found else "")
        return 0
    print(f"{'NETWORK ID':<13} {'NAME':<20} {'SUBNET':<18} BRIDGE")
    for n in found:
        print(f"{n.id[:12]:<13} {n.name:<20} {n.subnet:<18} {n.bridge}")
    return 0


def cmd_network_inspect(values: dict[str, Any], rest: list[str]) -> int:
    import json

    from .network.networks import describe, load

    if not rest:
        raise CliUsageError("usage: sandboxer network inspect NAME...")
    print(json.dumps([describe(load(name)) for name in rest], indent=4))
    return 0


def cmd_network_rm(values: dict[str, Any], rest: list[str]) -> int:
    from .network.networks import remove

    if not rest:
        raise CliUsageError("usage: sandboxer network rm NAME...")
    for name in rest:
        print(remove(name).name)
    return 0


def cmd_load(values: dict[str, Any], rest: list[str]) -> int:
    """``load [-i FILE|DIR] [NAME]``: NAME (or ``--name``) names an image the archive leaves unnamed."""
    from .images.archive import load
    from .images.reference import parse_reference

    if len(rest) > 1 or (rest and values["name"]):
        raise CliUsageError("usage: sandboxer load [-i FILE|DIR] [--name NAME[:TAG]]")
    name = values["name"] or (rest[0] if rest else None)
    fallback = parse_reference(name) if name else None
    images = load(values["input"], name=name, platform=values["platform"])
    for image in images:
        print(f"Loaded image: {image.reference.familiar}")
    if fallback is not None and all(image.reference != fallback for image in images):
        print(f"note: the archive names its images; {fallback.familiar} was not used", file=sys.stderr)
    return 0


def cmd_save(values: dict[str, Any], rest: list[str]) -> int:
    from .images.archive import save

    if not rest:
        raise CliUsageError("usage: sandboxer save [-o FILE] [--format docker-archive|oci-archive] IMAGE...")
    save(rest, values["output"], values["format"] or "docker-archive")
    return 0


def cmd_build(values: dict[str, Any], rest: list[str]) -> int:
    """``build -t NAME [-f FILE] [--build-arg K=V]... CONTEXT``: see :mod:`sandboxer.images.builder`."""
    from .images.builder import BuildOptions, build

    if len(rest) != 1:
        raise CliUsageError("usage: sandboxer build -t NAME[:TAG] [-f Containerfile] [OPTIONS] CONTEXT")
    if not values["tag"]:
        raise CliUsageError("sandboxer build needs a name for the image: -t NAME[:TAG]")
    network = values["network"] or "none"
    if network not in ("none", "host"):
        raise CliUsageError("--network takes none or host")
    build_args: dict[str, str | None] = {}
    for pair in values["build_arg"]:
        key, eq, value = pair.partition("=")
        if not key:
            raise CliUsageError(f"invalid --build-arg {pair!r}: use NAME=VALUE (or NAME to pass yours)")
        build_args[key] = value if eq else None
    opts = BuildOptions(context=rest[0], containerfile=values["file"], tags=tuple(values["tag"]),
                        build_args=build_args, no_cache=bool(values["no_cache"]), network=network,
                        storage_driver=values["storage_driver"], quiet=bool(values["quiet"]))
    from . import signals

    def cancel(sig: int, _frame: object) -> None:
        raise KeyboardInterrupt(signals.name(sig))

    for sig in (signals.SIGTERM, signals.SIGHUP):  # as Ctrl-C: the step's sandbox and scratch go, nothing is tagged
        signals.signal(sig, cancel)
    try:
        print(build(opts, lambda name: _pull_if_needed(name, values)))
    except KeyboardInterrupt as e:
        print(f"sandboxer: error: build interrupted ({e or 'SIGINT'}); nothing was tagged", file=sys.stderr)
        return 130
    return 0


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

    if rest:
        raise CliUsageError("'sandboxer doctor' takes no arguments")
    return doctor_main(["--json"] if values["json"] else [])


def cmd_version(values: dict[str, Any], rest: list[str]) -> int:
    from . import __version__

    print(f"sandboxer {__version__}")  # the package's own: importlib.metadata costs ~40 ms
    return 0


def cmd_port(values: dict[str, Any], rest: list[str]) -> int:
    """``sandboxer port NAME [CPORT[/PROTO]]``: where a sandbox's published ports are on the host."""
    import json

    from .state import running_record

    if len(rest) not in (1, 2):
        raise CliUsageError("usage: sandboxer port NAME [CONTAINERPORT[/tcp|udp]]")
    text = running_record(rest[0], "ports")
    want_port, _, want_proto = rest[1].partition("/") if len(rest) == 2 else ("", "", "")
    found = False
    for m in json.loads(text) if text else []:
        if want_port and (str(m["container_port"]) != want_port or (want_proto or "tcp") != m["proto"]):
            continue
        found = True
        print(f"{m['container_port']}/{m['proto']} -> {m['host_ip']}:{m['host_port']}")
    if want_port and not found:
        from .errors import UsageError

        raise UsageError(f"sandbox {rest[0]!r} publishes no port {rest[1]}")
    return 0


def cmd_ps(values: dict[str, Any], rest: list[str]) -> int:
    import json

    from .supervisor import records, status_text

    if rest:
        raise CliUsageError("'sandboxer ps' takes no arguments")
    found = records(all_=bool(values["all"]))
    if values["format"] == "json":
        print(json.dumps(found, indent=1))
        return 0
    print(f"{'ID':<13} {'NAME':<20} {'STATUS':<40} COMMAND")
    for r in found:
        command = " ".join(([r["image"]] if r.get("image") else []) + list(r.get("command") or []))
        print(f"{r['id'][:12]:<13} {(r.get('name') or ''):<20} {status_text(r):<40} {command[:60]}")
    return 0


def _one(rest: list[str], usage: str) -> Any:
    from .supervisor import find

    if len(rest) != 1:
        raise CliUsageError(f"usage: sandboxer {usage}")
    return find(rest[0])


def _each(names: list[str], action: Callable[[str], object]) -> int:
    """``action(name)`` for every name, as docker does for rm/stop/kill/inspect: one that fails is
    reported (one line) and the others are still handled; the exit status says whether any failed."""
    from .errors import SandboxerError

    failed = False
    for name in names:
        try:
            action(name)
        except SandboxerError as e:
            _print_error(e)
            failed = True
    return 125 if failed else 0


def cmd_logs(values: dict[str, Any], rest: list[str]) -> int:
    """``logs [-f] [--tail N] [-t] NAME|ID``: stdout records to our stdout, stderr ones to our stderr."""
    from .logfile import read
    from .supervisor import refresh

    record = _one(rest, "logs [-f] [--tail N] [-t] NAME|ID")
    last = None
    if values["tail"] not in (None, "all"):
        if not str(values["tail"]).isdecimal():
            raise CliUsageError("--tail takes a number of lines (or all)")
        last = int(values["tail"])
    running = (lambda: refresh(record)["status"] == "running") if values["follow"] else None
    streams = {1: sys.stdout.buffer, 2: sys.stderr.buffer}
    line_start = {1: True, 2: True}
    for r in read(record["log"], last, running):
        out = streams[r.stream]
        if values["timestamps"] and line_start[r.stream]:
            out.write(r.stamp + b" ")
        out.write(r.data if r.partial else r.data + b"\n")
        line_start[r.stream] = not r.partial
        if running is not None:
            out.flush()
    return 0


def _each_stopped(verb: str, action: Callable[[dict[str, Any], float], object], values: dict[str, Any],
                  rest: list[str]) -> int:
    """stop and restart: ``action(record, timeout)`` on each named sandbox, printing its name as docker
    does; ``-t SECS`` is how long SIGTERM has before SIGKILL."""
    from .supervisor import find

    if not rest:
        raise CliUsageError(f"usage: sandboxer {verb} [-t SECS] NAME|ID...")
    timeout = _seconds(values["time"], "-t", 10.0)
    assert timeout is not None

    def one(name: str) -> None:
        action(find(name), timeout)
        print(name)

    return _each(rest, one)


def cmd_stop(values: dict[str, Any], rest: list[str]) -> int:
    from .supervisor import stop

    return _each_stopped("stop", stop, values, rest)


def cmd_restart(values: dict[str, Any], rest: list[str]) -> int:
    from .supervisor import restart

    return _each_stopped("restart", restart, values, rest)


def cmd_kill(values: dict[str, Any], rest: list[str]) -> int:
    """``kill [-s SIG] NAME...`` for detached sandboxes; ``kill [--all] ID [SIGNAL]`` for OCI containers
    (when ID names one, or after the OCI global options)."""
    import signal as signals

    from .oci import container
    from .supervisor import find, signal_process, stop

    if not rest:
        raise CliUsageError("usage: sandboxer kill [-s SIG] NAME|ID...   |   sandboxer kill [--all] ID [SIGNAL]")
    if _OCI_GLOBALS["oci"] or container.exists(rest[0]):
        if len(rest) not in (1, 2) or values["signal"]:
            raise CliUsageError("usage: sandboxer kill [--all] ID [SIGNAL]")
        container.kill(rest[0], container.parse_signal(rest[1] if len(rest) == 2 else "TERM"),
                       bool(values["all"]))
        return 0
    if values["all"]:
        raise CliUsageError("--all is for OCI containers (sandboxer kill --all ID [SIGNAL])")
    from .errors import UsageError

    sig = container.parse_signal(str(values["signal"] or "KILL"))

    def one(name: str) -> None:
        try:
            record = find(name)
        except UsageError as e:
            if str(e) != f"no such sandbox: {name}":
                raise
            raise UsageError(f"no such sandbox or container: {name}",
                             hint="see 'sandboxer ps -a', or 'sandboxer state ID' for OCI containers") from None
        if record["status"] != "running":
            raise UsageError(f"sandbox {name} is not running")
        if sig == signals.SIGKILL:
            stop(record, timeout=0)
        elif not signal_process(record, "supervisor", sig):  # forwarded to PID 1 by the supervisor
            raise UsageError(f"sandbox {name} is not running")

    return _each(rest, one)


def cmd_exec(values: dict[str, Any], rest: list[str]) -> int:
    """``sandboxer exec [-i] [-t] [-e K=V] [-w DIR] [-u USER[:GROUP]] NAME CMD...``: join a detached sandbox;
    or runc's ``exec [--process FILE] [-d] [--pid-file F] [--console-socket S] ID [CMD...]`` for an OCI
    container (when ID names one, one of those options is given, or after the OCI global options)."""
    from .errors import UsageError
    from .oci import container
    from .runtime.enter import ExecOptions, enter
    from .supervisor import find

    oci_only = ("process", "detach", "pid_file", "console_socket")
    if _OCI_GLOBALS["oci"] or any(values[k] for k in oci_only) or (rest and container.exists(rest[0])):
        if not rest:
            raise CliUsageError("usage: sandboxer exec [--process FILE] [-d] [--pid-file F] ID [CMD [ARG...]]")
        code = container.exec_process(
            rest[0], rest[1:], process=values["process"], cwd=values["workdir"], env=tuple(_env_list(values["env"])),
            user=values["user"], tty=bool(values["tty"]), console_socket=values["console_socket"],
            detach=bool(values["detach"]), pid_file=values["pid_file"])
        _FAST_EXIT[0] = True
        return code
    if len(rest) < 2:
        raise CliUsageError("usage: sandboxer exec [OPTIONS] NAME|ID CMD [ARG...]")
    record = find(rest[0])
    if record["status"] != "running" or "exec" not in record:
        raise UsageError(f"sandbox {rest[0]} is not running", hint="see 'sandboxer ps -a'")
    identity = dict(record["exec"])
    env = list(identity["env"])
    if values["tty"] and not any(e.startswith("TERM=") for e in env):
        env.append("TERM=" + os.environ.get("TERM", "xterm"))
    opts = ExecOptions(stdin_null=not values["interactive"], tty=bool(values["tty"]), user=values["user"],
                       env=tuple(_env_list(values["env"])))
    pid = int(record["pid"])
    code = enter(pid, identity, rest[1:], env, values["workdir"] or identity["cwd"], opts,
                 started=record.get("pid_start"))
    if code == 137 and _pid1_ending(pid, record.get("pid_start")):
        print(f"sandboxer: the command was killed: sandbox {rest[0]} stopped", file=sys.stderr)
    _FAST_EXIT[0] = True  # the command has ended and been reaped: nothing of ours is left open
    return code


def _pid1_ending(pid: int, started: int | None) -> bool:
    """Whether a sandbox's PID 1 is gone or going: it finishes dying only after every other
    process of its namespace (an exec'd command killed with it) has been reaped."""
    import time

    from .procfs import same_process

    deadline = time.monotonic() + 1.0
    while time.monotonic() < deadline:
        if not same_process(pid, started):
            return True
        time.sleep(0.01)
    return False


def cmd_inspect(values: dict[str, Any], rest: list[str]) -> int:
    """``sandboxer inspect [--format {{.State.Pid}}] NAME|ID...``."""
    import json

    from .supervisor import find, inspect

    if not rest:
        raise CliUsageError("usage: sandboxer inspect [--format TEMPLATE] NAME|ID...")
    facts: list[dict[str, Any]] = []
    code = _each(rest, lambda name: facts.append(inspect(find(name))))  # as docker: what exists, and errors
    if values["format"]:
        for fact in facts:
            print(_template(values["format"], fact))
    elif facts or not code:
        print(json.dumps(facts, indent=2))
    return code


def _template(text: str, facts: dict[str, Any]) -> str:
    """Go-template field access for the common case: ``{{.State.Pid}}`` (several per line are fine)."""
    import json

    from .errors import UsageError

    out, rest = "", text
    while "{{" in rest:
        before, _, after = rest.partition("{{")
        field, sep, rest = after.partition("}}")
        path = field.strip()
        if not sep or not path.startswith("."):
            raise UsageError(f"unsupported --format {text!r}", hint="use field paths such as {{.State.Pid}}")
        value: Any = facts
        for key in filter(None, path[1:].split(".")):
            value = value.get(key) if isinstance(value, dict) else None
        if value is None:
            text_value = "<no value>"  # as Go templates print a missing key
        elif isinstance(value, (dict, list, bool)):
            text_value = json.dumps(value)  # true/false, as Go prints booleans
        else:
            text_value = str(value)
        out += before + text_value
    return out + rest


def cmd_wait(values: dict[str, Any], rest: list[str]) -> int:
    from .supervisor import wait

    record = wait(_one(rest, "wait NAME|ID"))
    print(record.get("exit_code"))
    return 0


def cmd_rm(values: dict[str, Any], rest: list[str]) -> int:
    from .supervisor import find, remove

    if not rest:
        raise CliUsageError("usage: sandboxer rm [-f] NAME|ID...")

    def one(name: str) -> None:
        remove(find(name), force=bool(values["force"]))
        print(name)

    code = _each(rest, one)
    _FAST_EXIT[0] = True  # records, logs and state are gone, synchronously
    return code


def cmd_cp(values: dict[str, Any], rest: list[str]) -> int:
    """``cp SRC NAME:DST`` or ``cp NAME:SRC DST``."""
    from .cp import copy, split_target
    from .supervisor import find

    if len(rest) != 2:
        raise CliUsageError("usage: sandboxer cp SRC NAME|ID:DST  |  sandboxer cp NAME|ID:SRC DST")
    (src_box, src), (dst_box, dst) = split_target(rest[0]), split_target(rest[1])
    if (src_box is None) == (dst_box is None):
        raise CliUsageError("give exactly one side as NAME|ID:PATH (one path in the sandbox, one on the host)")
    box = src_box or dst_box
    assert box is not None
    copy(find(box), src, dst, into=dst_box is not None)
    return 0


def cmd_top(values: dict[str, Any], rest: list[str]) -> int:
    """``top NAME|ID``: the processes of a running sandbox's PID namespace, ``ps``-style."""
    from .errors import UsageError
    from .procfs import describe, pid_namespace_members, same_process
    from .runtime.userns import read_idmap

    record = _one(rest, "top NAME|ID")
    pid = int(record.get("pid") or 0)
    if record["status"] != "running" or not same_process(pid, record.get("pid_start")):
        raise UsageError(f"sandbox {rest[0]} is not running", hint="see 'sandboxer ps -a'")
    uids = read_idmap(pid).uids
    print(f"{'UID':<8} {'PID':>8} {'PPID':>8} {'NSPID':>6} {'STAT':<4} {'TIME':>8} CMD")
    found = [(member, facts) for member in pid_namespace_members(pid) if (facts := describe(member))]
    for member, facts in sorted(found, key=lambda m: int(m[1]["NSpid"] or 0)):
        host_uid = int(facts["Uid"] or -1)
        uid = next((str(m.container_id + host_uid - m.host_id) for m in uids
                    if m.host_id <= host_uid < m.host_id + m.size), facts["Uid"])
        print(f"{uid:<8} {member:>8} {facts['PPid']:>8} {facts['NSpid']:>6} {facts['State']:<4} "
              f"{facts['Time']:>8} {facts['Cmd']}")
    return 0


def cmd_system(values: dict[str, Any], rest: list[str]) -> int:
    """``system prune``: exited sandboxes, crashed sandboxes' leftovers and unused image data."""
    from .supervisor import prune

    if rest != ["prune"]:
        raise CliUsageError("usage: sandboxer system prune")
    records, leftovers = prune()
    for sid in records:
        print(f"removed sandbox {sid[:12]}")
    for sid in leftovers:
        print(f"removed leftovers of crashed sandbox {sid[:12]}")
    from .network.networks import prune_leases

    for network, address in prune_leases():
        print(f"freed address {address} of network {network}")
    blobs, layers = _store().prune()
    for layer in layers:
        print(f"removed image layer {layer}")
    print(f"removed {len(records)} sandboxes, {len(leftovers)} leftovers, {len(blobs)} blobs and "
          f"{len(layers)} layers")
    return 0


def cmd_gc(values: dict[str, Any], rest: list[str]) -> int:
    from .state import collect_garbage

    for sid in collect_garbage():
        print(f"removed leftovers of sandbox {sid[:12]}")
    return 0


# --- the OCI runtime command line (runc's verbs) --------------------------------

#: the global options before the verb (``sandboxer --root R --log L --log-format json create ...``)
_OCI_GLOBALS: dict[str, Any] = {"oci": False, "log": None, "log_format": "text", "debug": False}
#: runc's global options that change nothing here, accepted and ignored (see README)
_IGNORED_GLOBALS = {"--systemd-cgroup": False, "--rootless": True}
#: runc's global options refused, with why
_REFUSED_GLOBALS = {"--criu": "checkpoint/restore is not supported"}


def _oci_id(rest: list[str], verb: str, usage: str = "ID") -> str:
    if len(rest) != 1:
        raise CliUsageError(f"usage: sandboxer {verb} {usage}")
    return rest[0]


def cmd_create(values: dict[str, Any], rest: list[str]) -> int:
    from .oci.container import create

    cid = _oci_id(rest, "create", "--bundle DIR [--pid-file FILE] [--console-socket SOCK] ID")
    if values["no_pivot"]:
        raise CliUsageError("--no-pivot is refused: the container always gets pivot_root")
    if values["preserve_fds"] not in (None, "0"):
        raise CliUsageError("--preserve-fds is not supported (only 0)")
    create(cid, str(values["bundle"] or "."), pid_file=values["pid_file"], console_socket=values["console_socket"],
           debug=bool(values["debug"] or _OCI_GLOBALS["debug"]))
    return 0


def cmd_start(values: dict[str, Any], rest: list[str]) -> int:
    from .oci.container import start

    start(_oci_id(rest, "start"))
    return 0


def cmd_state(values: dict[str, Any], rest: list[str]) -> int:
    import json

    from .oci.container import state

    print(json.dumps(state(_oci_id(rest, "state")), indent=2))
    return 0


def cmd_delete(values: dict[str, Any], rest: list[str]) -> int:
    from .oci.container import delete

    delete(_oci_id(rest, "delete", "[--force] ID"), force=bool(values["force"]))
    return 0


def cmd_features(values: dict[str, Any], rest: list[str]) -> int:
    import json

    from .oci.container import features

    if rest:
        raise CliUsageError("'sandboxer features' takes no arguments")
    print(json.dumps(features(), indent=2))
    return 0


def _parse_globals(argv: list[str]) -> list[str]:
    """Take runc's global options off the front of ``argv``; returns the rest (the verb onwards)."""
    from .errors import UsageError

    i = 0
    while i < len(argv) and argv[i].startswith("--") and argv[i] not in ("--help", "--version"):
        name, eq, value = argv[i].partition("=")
        i += 1
        if name in ("--root", "--log", "--log-format"):
            if not eq:
                if i >= len(argv):
                    raise CliUsageError(f"option {name} needs a value")
                value = argv[i]
                i += 1
            if name == "--root":
                from .state import use_state_root

                use_state_root(value)
            elif name == "--log":
                _OCI_GLOBALS["log"] = os.path.abspath(value)
            elif value not in ("text", "json"):
                raise CliUsageError("--log-format takes text or json")
            else:
                _OCI_GLOBALS["log_format"] = value
        elif name == "--debug":
            _OCI_GLOBALS["debug"] = True
            continue  # not by itself a sign of a runc-style caller (see cmd_kill)
        elif name in _IGNORED_GLOBALS:
            if _IGNORED_GLOBALS[name] and not eq and i < len(argv) and argv[i] in ("true", "false", "auto"):
                i += 1  # --rootless takes a value
        elif name in _REFUSED_GLOBALS:
            raise UsageError(f"{name} is refused: {_REFUSED_GLOBALS[name]}")
        else:
            raise CliUsageError(f"unknown global option {name}")
        _OCI_GLOBALS["oci"] = True
    return argv[i:]


def _log_error(message: str) -> None:
    """With ``--log``, errors also go to that file (``--log-format json``: runc's logrus lines)."""
    path = _OCI_GLOBALS["log"]
    if not path:
        return
    import time

    stamp = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
    if _OCI_GLOBALS["log_format"] == "json":
        import json

        line = json.dumps({"level": "error", "msg": message, "time": stamp})
    else:
        line = f'time="{stamp}" level=error msg="{message}"'
    try:
        with open(path, "a") as f:
            f.write(line + "\n")
    except OSError as e:  # said once on stderr, beside the error it was to record
        print(f"sandboxer: warning: cannot write --log {path}: {e.strerror}", file=sys.stderr)


_CREATE_OPTS = (
    Opt(("-b", "--bundle"), "bundle", VALUE, "the bundle directory (default .)", "DIR"),
    Opt(("--pid-file",), "pid_file", VALUE, "write the container process's PID there", "FILE"),
    Opt(("--console-socket",), "console_socket", VALUE,
        "with process.terminal: send the pty master to this unix socket", "SOCK"),
    Opt(("--no-new-keyring",), "no_new_keyring", FLAG, "accepted: no session keyring is created anyway"),
    Opt(("--no-pivot",), "no_pivot", FLAG, "refused"),
    Opt(("--preserve-fds",), "preserve_fds", VALUE, "only 0 is supported", "N"),
)


_DEBUG = Opt(("--debug",), "debug", FLAG, "tracebacks on errors")
_TLS = Opt(("--tls-verify",), "tls_verify", VALUE, "false: allow plain HTTP and unverified TLS", "BOOL")
_PLATFORM = Opt(("--platform",), "platform", VALUE, "OS/ARCH[/VARIANT] from a multi-platform image", "PLATFORM")

COMMANDS = {c.name: c for c in (
    Command("run", "Run a command in a fresh sandbox: on the host's root, an image, or an OCI bundle.",
            "[OPTIONS] -- CMD [ARG...]   |   run [OPTIONS] IMAGE [CMD [ARG...]]   |   run --bundle DIR [ID]",
            _RUN_OPTS, cmd_run, stop_at_positional=True),
    Command("images", "List the images in the store.", "[-q]",
            (Opt(("-q", "--quiet"), "quiet", FLAG, "only image ids"), _DEBUG), cmd_images),
    Command("image", "Manage images: ls, inspect, rm, prune, tag, import.", "SUBCOMMAND ...", (_DEBUG,),
            cmd_image, stop_at_positional=True),
    Command("rmi", "Remove image names; layers no other image or sandbox uses go too.", "[-f] IMAGE...",
            (Opt(("-f", "--force"), "force", FLAG, "even when a sandbox uses it (as its record or while it runs)"),
             _DEBUG), cmd_rmi),
    Command("tag", "Give an image another name.", "SOURCE TARGET", (_DEBUG,), cmd_tag),
    Command("pull", "Fetch an image from a registry into the store.", "[OPTIONS] NAME[:TAG|@DIGEST]",
            (_PLATFORM, _TLS, Opt(("-q", "--quiet"), "quiet", FLAG, "no progress lines"), _DEBUG), cmd_pull),
    Command("push", "Upload an image from the store to a registry.", "[OPTIONS] IMAGE [DESTINATION]",
            (_TLS, Opt(("-q", "--quiet"), "quiet", FLAG, "no progress lines"), _DEBUG), cmd_push),
    Command("login", "Save credentials for a registry (checked first).", "-u USER [--password-stdin] REGISTRY",
            (Opt(("-u", "--username"), "username", VALUE, "user name", "USER"),
             Opt(("-p", "--password"), "password", VALUE, "password (prefer --password-stdin)", "PASSWORD"),
             Opt(("--password-stdin",), "password_stdin", FLAG, "read the password from stdin"), _TLS, _DEBUG),
            cmd_login),
    Command("import", "Make a one-layer image from a root filesystem tarball.", "ROOTFS.tar[.gz] NAME[:TAG]",
            (Opt(("--cmd",), "cmd", VALUE, "the image's default command (shell words)", "CMD"), _DEBUG),
            cmd_import),
    Command("build", "Build an image from a Containerfile (rootless, no daemon).",
            "-t NAME[:TAG] [-f Containerfile] [--build-arg K=V]... [OPTIONS] CONTEXT",
            (Opt(("-t", "--tag"), "tag", MULTI, "name the image (may be repeated)", "NAME[:TAG]"),
             Opt(("-f", "--file"), "file", VALUE, "the Containerfile (default: CONTEXT/Containerfile or "
                                                   "CONTEXT/Dockerfile)", "FILE"),
             Opt(("--build-arg",), "build_arg", MULTI, "set an ARG (NAME alone: take our value)", "K=V"),
             Opt(("--no-cache",), "no_cache", FLAG, "build every step again"),
             Opt(("--network",), "network", VALUE,
                 "RUN steps' network: none (default) or host (for RUN --network=host)", "MODE"),
             Opt(("--storage-driver",), "storage_driver", VALUE, "overlay or fuse-overlayfs for RUN steps", "NAME"),
             Opt(("--pull",), "pull", VALUE, "missing (default): pull a base image not in the store; never; always",
                 "WHEN"),
             _PLATFORM, _TLS, Opt(("-q", "--quiet"), "quiet", FLAG, "print only the image id"), _DEBUG),
            cmd_build),
    Command("load", "Load images from a docker-archive, an oci-archive or an OCI layout directory.",
            "[-i FILE|DIR] [--name NAME[:TAG]]",
            (Opt(("-i", "--input"), "input", VALUE, "the archive or layout directory (default: stdin)", "FILE"),
             Opt(("--name",), "name", VALUE, "a name for an image the archive leaves unnamed", "NAME"),
             _PLATFORM, _DEBUG), cmd_load),
    Command("save", "Write images to a docker-archive or an oci-archive.",
            "[-o FILE] [--format docker-archive|oci-archive] IMAGE...",
            (Opt(("-o", "--output"), "output", VALUE, "the archive to write (default: stdout)", "FILE"),
             Opt(("--format",), "format", VALUE, "docker-archive (default) or oci-archive", "FORMAT"), _DEBUG),
            cmd_save),
    Command("spec", "Write a config.json template (like 'runc spec').", "[--rootless] [--bundle DIR]",
            (Opt(("--rootless",), "rootless", FLAG, "a template for an unprivileged user"),
             Opt(("-b", "--bundle"), "bundle", VALUE, "where to write config.json (default .)", "DIR"),
             Opt(("--force",), "force", FLAG, "overwrite an existing config.json"),
             Opt(("--debug",), "debug", FLAG, "tracebacks on errors")), cmd_spec),
    Command("doctor", "Check what this host can give a sandbox, and how to fix what it can't.",
            "[--json]", (Opt(("--json",), "json", FLAG, "machine-readable output"),
                         Opt(("--debug",), "debug", FLAG, "tracebacks on errors")), cmd_doctor),
    Command("ps", "List detached sandboxes.", "[-a] [--format json]",
            (Opt(("-a", "--all"), "all", FLAG, "include exited ones"),
             Opt(("--format",), "format", VALUE, "json for machines", "FORMAT"), _DEBUG), cmd_ps),
    Command("logs", "Print a detached sandbox's output.", "[-f] [--tail N] [-t] NAME|ID",
            (Opt(("-f", "--follow"), "follow", FLAG, "keep printing until it exits"),
             Opt(("-n", "--tail"), "tail", VALUE, "only the last N lines (default all)", "N"),
             Opt(("-t", "--timestamps"), "timestamps", FLAG, "prefix each line with when it was written"),
             _DEBUG), cmd_logs),
    Command("stop", "Stop detached sandboxes: SIGTERM, then SIGKILL after -t seconds.", "[-t SECS] NAME|ID...",
            (Opt(("-t", "--time"), "time", VALUE, "seconds to wait before SIGKILL (default 10)", "SECS"), _DEBUG),
            cmd_stop),
    Command("restart", "Stop detached sandboxes and start them again as they were started (same id and name).",
            "[-t SECS] NAME|ID...",
            (Opt(("-t", "--time"), "time", VALUE, "seconds to wait before SIGKILL (default 10)", "SECS"), _DEBUG),
            cmd_restart),
    Command("kill", "Send a signal to a detached sandbox (default KILL), or to an OCI container "
            "(default TERM).", "[-s SIG] NAME|ID...   |   kill [--all] ID [SIGNAL]",
            (Opt(("-s", "--signal"), "signal", VALUE, "a name (TERM, SIGHUP) or a number", "SIG"),
             Opt(("-a", "--all"), "all", FLAG, "OCI: every process of the container"), _DEBUG),
            cmd_kill),
    Command("wait", "Wait for a detached sandbox to exit; print its exit code.", "NAME|ID", (_DEBUG,), cmd_wait),
    Command("inspect", "Show a detached sandbox as JSON (state, namespaces, capabilities, seccomp, ports).",
            "[--format TEMPLATE] NAME|ID...",
            (Opt(("-f", "--format"), "format", VALUE, "field paths, e.g. {{.State.Pid}}", "TEMPLATE"), _DEBUG),
            cmd_inspect),
    Command("exec", "Run a command in a running detached sandbox, as its workload runs.",
            "[OPTIONS] NAME|ID CMD [ARG...]",
            (Opt(("-i", "--interactive"), "interactive", FLAG, "keep stdin open"),
             Opt(("-t", "--tty"), "tty", FLAG, "give the command a pseudo-terminal"),
             Opt(("-e", "--env"), "env", MULTI, "set an environment variable", "K=V"),
             Opt(("-w", "--workdir", "--cwd"), "workdir", VALUE, "working directory inside", "DIR"),
             Opt(("-u", "--user"), "user", VALUE, "run as a user (names from the sandbox's /etc/passwd)",
                 "USER[:GROUP]"),
             Opt(("--process",), "process", VALUE, "OCI: the process.json to run (args, env, cwd, user, "
                 "terminal)", "FILE"),
             Opt(("-d", "--detach"), "detach", FLAG, "OCI: return once it runs (it is your reaper's)"),
             Opt(("--pid-file",), "pid_file", VALUE, "OCI: write its host PID here", "FILE"),
             Opt(("--console-socket",), "console_socket", VALUE, "OCI: send its terminal's master here", "SOCK"),
             _DEBUG),
            cmd_exec, stop_at_positional=True),
    Command("top", "List the processes of a running detached sandbox (UID as inside; host PIDs; NSPID inside).",
            "NAME|ID", (_DEBUG,), cmd_top),
    Command("cp", "Copy files and directories between the host and a running sandbox.",
            "SRC NAME|ID:DST  |  cp NAME|ID:SRC DST", (_DEBUG,), cmd_cp),
    Command("rm", "Remove exited detached sandboxes (-f: running ones too).", "[-f] NAME|ID...",
            (Opt(("-f", "--force"), "force", FLAG, "stop it first if it runs"), _DEBUG), cmd_rm),
    Command("network", "Manage user-defined networks: create, ls, inspect, rm.", "SUBCOMMAND ...", (_DEBUG,),
            cmd_network, stop_at_positional=True),
    Command("port", "Show where a running sandbox's published ports are on the host.",
            "NAME [CONTAINERPORT[/PROTO]]", (_DEBUG,), cmd_port),
    Command("create", "OCI: set up a container from a bundle; it waits for 'start'.",
            "--bundle DIR [--pid-file FILE] [--console-socket SOCK] ID", (*_CREATE_OPTS, _DEBUG), cmd_create),
    Command("start", "OCI: run a created container's process.", "ID", (_DEBUG,), cmd_start),
    Command("state", "OCI: print a container's state JSON.", "ID", (_DEBUG,), cmd_state),
    Command("delete", "OCI: remove a stopped (or created) container; --force kills a running one.",
            "[--force] ID", (Opt(("-f", "--force"), "force", FLAG, "kill it first if it runs"), _DEBUG),
            cmd_delete),
    Command("features", "OCI: what this runtime implements, as JSON (runtime-spec features.md).", "",
            (_DEBUG,), cmd_features),
    Command("system", "system prune: remove exited sandboxes (records, logs), what crashed ones left, and "
                      "image data no image uses.", "prune", (_DEBUG,), cmd_system),
    Command("gc", "Remove what crashed sandboxes left behind.", "",
            (Opt(("--debug",), "debug", FLAG, "tracebacks on errors"),), cmd_gc),
    Command("version", "Print the version.", "", (), cmd_version),
)}


_IMAGE_ONLY = {
    "inspect": Command("image inspect", "Show images as JSON.", "IMAGE...", (_DEBUG,), cmd_image_inspect),
    "prune": Command("image prune", "Remove blobs and layers no image or running sandbox uses.", "",
                     (_DEBUG,), cmd_image_prune),
}


_NETWORK = {
    "create": Command("network create", "Define a network: a bridge its sandboxes share (rootless).",
                      "[--subnet CIDR] NAME",
                      (Opt(("--subnet",), "subnet", VALUE, "its IPv4 subnet (default: a free 10.89.N.0/24)", "CIDR"),
                       _DEBUG), cmd_network_create),
    "ls": Command("network ls", "List the networks.", "[-q]",
                  (Opt(("-q", "--quiet"), "quiet", FLAG, "only names"), _DEBUG), cmd_network_ls),
    "inspect": Command("network inspect", "Show networks as JSON, with their sandboxes.", "NAME...", (_DEBUG,),
                       cmd_network_inspect),
    "rm": Command("network rm", "Remove networks no sandbox uses, running or exited.", "NAME...", (_DEBUG,),
                  cmd_network_rm),
}


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
    _log_error(str(err))


#: set by a command whose work is done and closed when it returns (see :func:`_exit_fast`)
_FAST_EXIT = [False]


def _exit_fast(code: int) -> None:
    """End the process without the interpreter's teardown — 5-20 ms of freeing every module and
    object, a large part of ``run -d`` — once the command said its work is done and nothing
    registered needs the teardown: no atexit callback (logging, weakref.finalize, temporary
    directories register one), no thread but ours.  Output is flushed first."""
    import atexit

    threading = sys.modules.get("threading")
    if atexit._ncallbacks() or (threading is not None and threading.active_count() > 1):
        return
    try:
        sys.stdout.flush()
        sys.stderr.flush()
    except (OSError, ValueError):
        return  # the ordinary exit reports it
    os._exit(code)


#: objects allocated between two collections of the youngest generation, in a command's process
_GC_THRESHOLD = 50_000


def main(argv: list[str] | None = None) -> int:
    """The command line; ``argv`` None: this process is the command (and may end without teardown)."""
    if argv is None:
        # a command makes few reference cycles, and the collector's default pace (every 700 new
        # objects) ran it 6 times while run loaded and planned: ~1.2 ms; it still runs in long commands
        gc.set_threshold(_GC_THRESHOLD)
        code = main(sys.argv[1:])
        if _FAST_EXIT[0]:
            _exit_fast(code)
        return code
    if argv and argv[0].startswith("--") and argv[0] not in ("--help", "--version"):
        try:
            argv = _parse_globals(argv)
        except CliUsageError as e:
            print(f"sandboxer: error: {e}\nhint: see README, 'OCI runtime command line'", file=sys.stderr)
            return 125
        except Exception as e:
            _print_error(e)
            return int(getattr(e, "exit_code", 125))
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
    debug = "--debug" in argv[1:_first_positional(argv)] or bool(_OCI_GLOBALS["debug"])
    try:
        values, rest = parse(cmd, argv[1:])
        return cmd.handler(values, rest)
    except CliUsageError as e:
        print(f"sandboxer: error: {e}\nhint: see 'sandboxer {cmd.name} --help'", file=sys.stderr)
        _log_error(str(e))
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
