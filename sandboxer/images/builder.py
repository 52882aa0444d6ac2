"""``sandboxer build``: a Containerfile executed rootless, without a daemon, into the image store.

Each instruction is one step.  Config-only steps (ENV, LABEL, USER, CMD,
…) change the image config; RUN, COPY, ADD and (when it creates a
directory) WORKDIR add a layer:

- RUN runs in a sandbox (:func:`sandboxer.sandbox.run`) of the image so
  far.  That image is never tagged: it is an in-memory
  :class:`~sandboxer.images.store.Image` over layer blobs already in the
  store, which ``SandboxOptions(image=...)`` accepts as well as a name.
  The sandbox's writable layer goes to a directory of ours
  (``upper_dir``); afterwards its overlay upper dir is turned into a layer
  tar as mapped root (:mod:`.layerwriter`).
- COPY/ADD write their layer tar directly from the build context, no
  sandbox needed (as mapped root too: the parents it writes into must be
  looked up in layers the user cannot always read).

Every step has a cache key: the previous step's key + the instruction after
variable substitution + its inputs (a digest of the copied files for
COPY/ADD, the build arguments in effect for RUN).  ``<store>/build-cache.json``
maps keys to the step's layer and creation time, so an unchanged rebuild
starts no sandbox, writes no layer and yields the very same image id.
The cache's layers are ordinary blobs: ``image prune`` may remove those no
image uses, and a cache entry whose blob is gone is simply a miss.
"""

from __future__ import annotations

import hashlib
import json
import os
import sys
import time
from collections.abc import Callable
from typing import Any

from ..errors import SandboxerError, UsageError
from ..records import record
from ..runtime.process import env_dict
from .containerfile import (
    ContainerfileError,
    Instruction,
    chmod_flag,
    expand_word,
    expose_ports,
    name_values,
    split_words,
)
from .reference import Reference, parse_reference
from .store import Image, Store, StoreError, _architecture

TYPE_CHECKING = False
if TYPE_CHECKING:
    from .context import BuildContext

__all__ = ["BuildOptions", "BuildError", "build"]

#: Docker's predefined build arguments: usable without an ARG, never warned about
PREDEFINED_ARGS = frozenset({"HTTP_PROXY", "http_proxy", "HTTPS_PROXY", "https_proxy", "FTP_PROXY", "ftp_proxy",
                             "NO_PROXY", "no_proxy", "ALL_PROXY", "all_proxy"})
DEFAULT_SHELL = ("/bin/sh", "-c")
DEFAULT_PATH_ENV = "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
CACHE_FILE = "build-cache.json"
#: cache entries kept (newest first); each is ~200 bytes
_CACHE_LIMIT = 20000


class BuildError(SandboxerError):
    """A build step failed; the message starts with ``FILE:LINE`` of the instruction."""


class BuildOptions(record("BuildOptions", "context containerfile tags build_args no_cache network "
                                          "storage_driver quiet",
                          defaults=(None, (), {}, False, "none", None, False))):
    """``context`` dir, ``containerfile`` (default: Containerfile or Dockerfile in the context), ``tags``,
    ``build_args`` (a None value: take it from our environment), ``no_cache``, ``network`` for RUN
    (``none``/``host``), ``storage_driver`` for RUN, ``quiet`` (no step lines; RUN output to stderr)."""

    context: str
    containerfile: str | None
    tags: tuple[str, ...]
    build_args: dict[str, str | None]
    no_cache: bool
    network: str
    storage_driver: str | None
    quiet: bool
    __slots__ = ()


class _Layer(record("_Layer", "digest size diff_id")):
    digest: str
    size: int
    diff_id: str
    __slots__ = ()


def build(opts: BuildOptions, ensure_image: Callable[[str], None]) -> str:
    """Build and tag; returns the image id.  ``ensure_image(name)`` makes a base image present (pulls it)."""
    from .containerfile import default_containerfile, parse_file

    if not os.path.isdir(opts.context):
        raise UsageError(f"build context {opts.context} is not a directory",
                         hint="give the directory whose files COPY may use, e.g. sandboxer build -t NAME .")
    if not opts.tags:
        raise UsageError("no image name given", hint="sandboxer build -t NAME[:TAG] CONTEXT")
    refs = [parse_reference(tag) for tag in opts.tags]
    path = opts.containerfile or default_containerfile(opts.context)
    instructions = parse_file(path)
    builder = _Builder(Store(), opts, refs, path, ensure_image)
    return builder.run(instructions)


def _now() -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())


def _short(digest: str) -> str:
    return digest.removeprefix("sha256:")[:12]


def _quote(value: str) -> str:
    return json.dumps(value) if not value or any(c.isspace() or c in "\"'\\$" for c in value) else value


class _Cache:
    """The step cache: key -> {"created", "layer": [digest, size, diff_id] | None}, in ``<store>/build-cache.json``.

    Read without a lock (the file is replaced atomically); new entries are
    merged in under the ``build-cache`` lock, so parallel builds lose nothing.
    """

    def __init__(self, store: Store) -> None:
        self.store = store
        self.entries = self._load()
        self.new: dict[str, dict[str, Any]] = {}

    def _load(self) -> dict[str, dict[str, Any]]:
        data = self.store.read_json_file(CACHE_FILE)
        entries = data.get("entries") if isinstance(data, dict) and data.get("version") == 1 else None
        return entries if isinstance(entries, dict) else {}

    def get(self, key: str) -> tuple[str, _Layer | None] | None:
        entry = self.new.get(key) or self.entries.get(key)
        if not isinstance(entry, dict) or not isinstance(entry.get("created"), str):
            return None
        raw = entry.get("layer")
        if raw is None:
            return entry["created"], None
        try:
            layer = _Layer(str(raw[0]), int(raw[1]), str(raw[2]))
            present = self.store.has_blob(layer.digest, layer.size)
        except (TypeError, ValueError, IndexError, StoreError):
            return None
        return (entry["created"], layer) if present else None

    def put(self, key: str, created: str, layer: _Layer | None) -> None:
        self.new[key] = {"created": created, "layer": list(layer) if layer else None}

    def save(self) -> None:
        if not self.new:
            return
        with self.store.lock("build-cache"):
            entries = self._load()
            entries.update(self.new)
            if len(entries) > _CACHE_LIMIT:
                newest = sorted(entries, key=lambda k: str(entries[k].get("created")), reverse=True)
                entries = {k: entries[k] for k in newest[:_CACHE_LIMIT]}
            self.store.write_json_file(CACHE_FILE, {"version": 1, "entries": entries})
        self.new = {}


class _Builder:
    """The state of one build: the image so far, the variables in scope, the cache chain."""

    def __init__(self, store: Store, opts: BuildOptions, refs: list[Reference], path: str,
                 ensure_image: Callable[[str], None]) -> None:
        self.store = store
        self.opts = opts
        self.refs = refs
        self.path = path
        self.ensure_image = ensure_image
        self.cache = _Cache(store)
        self.build_args = {k: (v if v is not None else os.environ.get(k)) for k, v in opts.build_args.items()}
        self.meta_args: dict[str, str | None] = {}
        self.args: dict[str, str | None] = {}
        self.layers: list[_Layer] = []
        self.base: dict[str, Any] = {}
        self.config: dict[str, Any] = {}
        self.history: list[dict[str, Any]] = []
        self.key = ""
        self.shell = list(DEFAULT_SHELL)
        self.cmd_set = False
        self.work: str | None = None
        self._context: BuildContext | None = None
        self._driver: str | None = None
        self._steps = 0

    # -- the whole build ---------------------------------------------------------------------

    def run(self, instructions: list[Instruction]) -> str:
        steps = self._check_structure(instructions)
        self._warn_unused_args(instructions)
        try:
            for n, ins in enumerate(steps, 1):
                self._say(f"STEP {n}/{len(steps)}: {ins}")
                try:
                    getattr(self, f"_do_{ins.keyword.lower()}")(ins)
                except ContainerfileError:
                    raise
                except SandboxerError as e:
                    if e.message.startswith(ins.where):
                        raise
                    raise BuildError(f"{ins.where}: {ins.keyword}: {e.message}", hint=e.hint) from None
            image_id = self._commit()
        finally:
            self._save_cache()
            if self.work is not None:
                from ..state import remove_tree

                remove_tree(self.work)
        return image_id

    def _save_cache(self) -> None:
        """What was built is reused next time, even if a later step failed; a cache that cannot be
        written costs speed only, so it is a warning."""
        try:
            self.cache.save()
        except (SandboxerError, OSError) as e:
            print(f"sandboxer: warning: the build cache was not saved: {e}", file=sys.stderr)

    def _check_structure(self, instructions: list[Instruction]) -> list[Instruction]:
        """Meta ARGs, then one FROM, then the steps; returns the steps (FROM first)."""
        if not instructions:
            raise ContainerfileError(f"{self.path} has no instructions",
                                     hint="a Containerfile starts with FROM IMAGE (or FROM scratch)")
        first = next((i for i, ins in enumerate(instructions) if ins.keyword == "FROM"), None)
        if first is None:
            raise ContainerfileError(f"{self.path}: no FROM instruction",
                                     hint="a Containerfile starts with FROM IMAGE (or FROM scratch)")
        for ins in instructions[:first]:
            if ins.keyword != "ARG":
                raise ins.error("comes before FROM (only ARG may)", hint="move it after the FROM line")
            self._declare(ins, self.meta_args, meta=True)
        for ins in instructions[first + 1:]:
            if ins.keyword == "FROM":
                raise ins.error("a second FROM: multi-stage builds are not supported",
                                hint="use one FROM per Containerfile")
        return instructions[first:]

    def _warn_unused_args(self, instructions: list[Instruction]) -> None:
        declared = {w.partition("=")[0] for ins in instructions if ins.keyword == "ARG"
                    for w in split_words(ins.args, ins.where)}
        unused = sorted(set(self.build_args) - declared - PREDEFINED_ARGS)
        if unused:
            print(f"sandboxer: warning: build argument(s) {', '.join(unused)} not consumed by any ARG in "
                  f"{self.path}", file=sys.stderr)

    def _say(self, text: str) -> None:
        if not self.opts.quiet:
            print(text, flush=True)

    # -- variables -----------------------------------------------------------------------------

    def _vars(self) -> dict[str, str]:
        """What ``$VAR`` sees: build arguments in scope, overridden by the image's environment."""
        values = {k: v for k, v in self.args.items() if v is not None}
        values.update(env_dict(self.config.get("Env") or []))
        return values

    def _expand(self, ins: Instruction, text: str) -> str:
        return expand_word(text, self._vars(), ins.where)

    def _words(self, ins: Instruction) -> list[str]:
        raw = ins.exec_form if ins.exec_form is not None else split_words(ins.args, ins.where)
        return [self._expand(ins, w) for w in raw]

    def _declare(self, ins: Instruction, scope: dict[str, str | None], meta: bool = False) -> None:
        env = {k: v for k, v in scope.items() if v is not None} if meta else self._vars()
        for word in split_words(ins.args, ins.where):
            name, eq, default = word.partition("=")
            if name in self.build_args and self.build_args[name] is not None:
                scope[name] = self.build_args[name]
            elif eq:
                scope[name] = expand_word(default, env, ins.where)
            elif not meta and name in self.meta_args:
                scope[name] = self.meta_args[name]
            else:
                scope[name] = None

    def _arg_env(self) -> list[str]:
        """Build arguments a RUN sees as environment variables (ENV wins over ARG, as in Docker)."""
        env_names = set(env_dict(self.config.get("Env") or []))
        values = {k: v for k, v in self.args.items() if v is not None and k not in env_names}
        for name in PREDEFINED_ARGS & set(self.build_args):
            if self.build_args[name] is not None and name not in env_names:
                values[name] = str(self.build_args[name])
        return [f"{k}={v}" for k, v in sorted(values.items())]

    # -- the step protocol -------------------------------------------------------------------------

    def _step(self, created_by: str, inputs: object = None,
              make: Callable[[int], _Layer | None] | None = None) -> None:
        """Advance the cache chain by one step; ``make(mtime)`` builds its layer on a cache miss."""
        key = "sha256:" + hashlib.sha256(json.dumps([self.key, created_by, inputs]).encode()).hexdigest()
        hit = None if self.opts.no_cache else self.cache.get(key)
        if hit is not None:
            created, layer = hit
            self._say(f"--> Using cache {_short(key)}")
        else:
            mtime = int(time.time())
            created = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(mtime))
            layer = make(mtime) if make is not None else None
            if layer is not None:
                self._check_unpacks(layer)
            self.cache.put(key, created, layer)
            self._say(f"--> {_short(key)}")
        self.key = key
        entry: dict[str, Any] = {"created": created, "created_by": created_by}
        if layer is None:
            entry["empty_layer"] = True
        else:
            self.layers.append(layer)
        self.history.append(entry)

    def _check_unpacks(self, layer: _Layer) -> None:
        """Unpack a new layer now, as the next step or ``run`` would: what the unpacker refuses (a name
        with control characters, an owner outside the mapped ids, a hardlink out of the layer) fails this
        step, instead of the next one as "malformed or hostile", or an image tagged that cannot run."""
        from .layers import LayerError

        try:
            self.store.ensure_layer(layer.diff_id, layer.digest)
        except LayerError as e:
            raise BuildError(f"the layer this step made cannot be used: {e.problem}",
                             hint="an image layer cannot hold this; change the step (nothing was cached)") from None

    def _image(self) -> Image:
        """The image so far, untagged: what RUN's sandbox starts from and where names resolve."""
        manifest = {"layers": [{"digest": layer.digest, "size": layer.size} for layer in self.layers]}
        run_config = {k: self.config[k] for k in ("Env", "WorkingDir", "User") if self.config.get(k)}
        diff_ids = [layer.diff_id for layer in self.layers]
        config = {"config": run_config, "rootfs": {"type": "layers", "diff_ids": diff_ids}}
        return Image(self.refs[0], "", manifest, config, diff_ids)

    def _lowers(self) -> list[str]:
        return self.store.layer_dirs(self._image())

    def _workdir(self) -> str:
        return str(self.config.get("WorkingDir") or "/")

    def _scratch(self, name: str) -> str:
        """A path in our private directory under the store's ``tmp/`` (removed when the build ends)."""
        if self.work is None:
            self.work = os.path.join(self.store.root, "tmp", f"build-{os.getpid()}-{os.urandom(6).hex()}")
            os.mkdir(self.work, 0o700)
        self._steps += 1
        return os.path.join(self.work, f"{self._steps}-{name}")

    def _layer_from(self, write: Callable[[int], int]) -> _Layer | None:
        """Run ``write(fd)`` (as mapped root) into a staging tar and store it as a layer blob; None if empty."""
        tar = self._scratch("layer.tar")
        fd = os.open(tar, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o600)
        try:
            count = write(fd)
        finally:
            os.close(fd)
        try:
            if count == 0:
                return None
            with open(tar, "rb") as f:
                digest, size = self.store.put_blob(f)
            return _Layer(digest, size, digest)  # an uncompressed tar: its digest is its diff-id
        finally:
            os.unlink(tar)

    # -- instructions ----------------------------------------------------------------------------

    def _do_from(self, ins: Instruction) -> None:
        name = expand_word(ins.args, {k: v for k, v in self.meta_args.items() if v is not None}, ins.where)
        if name == "scratch":
            self.base = {"architecture": _architecture(), "os": "linux"}
            self.config = {"Env": [DEFAULT_PATH_ENV]}
            self.key = "sha256:" + hashlib.sha256(b"scratch").hexdigest()
            return
        try:
            self.ensure_image(name)
            image = self.store.image(name)
        except StoreError as e:
            raise BuildError(f"{ins.where}: FROM {name}: {e.message}",
                             hint="import, load or pull the base image first ('sandboxer images' lists the "
                                  "store)") from None
        self.base = image.config
        self.config = _checked_run_config(image.run_config, f"{ins.where}: FROM {name}")
        history = image.config.get("history")
        self.history = list(history) if isinstance(history, list) else []
        descriptors = image.manifest.get("layers") or []
        self.layers = [_Layer(str(d["digest"]), int(d.get("size", 0)), diff_id)
                       for d, diff_id in zip(descriptors, image.diff_ids, strict=True)]
        self.key = image.id
        self._say(f"--> {_short(image.id)}")

    def _do_arg(self, ins: Instruction) -> None:
        self._declare(ins, self.args)
        self._step(str(ins))

    def _do_env(self, ins: Instruction) -> None:
        env = env_dict(self.config.get("Env") or [])
        pairs = name_values(ins, lambda text: self._expand(ins, text))
        for key, value in pairs:
            env.pop(key, None)  # re-set variables move to the end, as Docker orders them
            env[key] = value
        self.config["Env"] = [f"{k}={v}" for k, v in env.items()]
        self._step("ENV " + " ".join(f"{k}={_quote(v)}" for k, v in pairs))

    def _do_label(self, ins: Instruction) -> None:
        pairs = name_values(ins, lambda text: self._expand(ins, text))
        labels = dict(self.config.get("Labels") or {})
        labels.update(pairs)
        self.config["Labels"] = labels
        self._step("LABEL " + " ".join(f"{_quote(k)}={_quote(v)}" for k, v in pairs))

    def _do_expose(self, ins: Instruction) -> None:
        ports = dict(self.config.get("ExposedPorts") or {})
        names = []
        for word in self._words(ins):
            for port in expose_ports(word, ins):
                ports[port] = {}
                names.append(port)
        self.config["ExposedPorts"] = ports
        self._step("EXPOSE " + " ".join(names))

    def _do_user(self, ins: Instruction) -> None:
        user = self._expand(ins, ins.args.strip())
        if not user:
            raise ins.error("the user is empty after substitution", hint="USER NAME[:GROUP] or UID[:GID]")
        self.config["User"] = user
        self._step(f"USER {user}")

    def _do_workdir(self, ins: Instruction) -> None:
        path = self._expand(ins, ins.args.strip())
        if not path:
            raise ins.error("the directory is empty after substitution", hint="WORKDIR /PATH")
        path = os.path.normpath(os.path.join(self._workdir(), path))
        self.config["WorkingDir"] = path

        def make(mtime: int) -> _Layer | None:
            from .layerwriter import as_mapped_root, write_workdir

            lowers = self._lowers()
            user = self.config.get("User")
            owner = self._owner(str(user), lowers, docker_chown=False) if user else (0, 0)
            return self._layer_from(lambda fd: as_mapped_root(write_workdir, path, owner, mtime, lowers, fd,
                                                              f"{ins.where}: WORKDIR"))

        self._step(f"WORKDIR {path}", None, make)

    def _do_cmd(self, ins: Instruction) -> None:
        self.config["Cmd"] = self._command(ins)
        self.cmd_set = True
        self._step(f"CMD {json.dumps(self.config['Cmd'])}")

    def _do_entrypoint(self, ins: Instruction) -> None:
        self.config["Entrypoint"] = self._command(ins)
        if not self.cmd_set:
            self.config.pop("Cmd", None)  # Docker: an inherited CMD does not survive a new ENTRYPOINT
        self._step(f"ENTRYPOINT {json.dumps(self.config['Entrypoint'])}")

    def _command(self, ins: Instruction) -> list[str]:
        if ins.exec_form is not None:
            return list(ins.exec_form)
        return [*self.shell, ins.args] if ins.args else []

    def _do_shell(self, ins: Instruction) -> None:
        assert ins.exec_form is not None
        self.shell = list(ins.exec_form)
        self.config["Shell"] = list(ins.exec_form)
        self._step(f"SHELL {json.dumps(self.shell)}")

    def _do_volume(self, ins: Instruction) -> None:
        volumes = dict(self.config.get("Volumes") or {})
        for path in self._words(ins):
            volumes[path] = {}
        self.config["Volumes"] = volumes
        self._step("VOLUME " + json.dumps(sorted(volumes)))

    def _do_stopsignal(self, ins: Instruction) -> None:
        self.config["StopSignal"] = self._expand(ins, ins.args.strip())
        self._step(f"STOPSIGNAL {self.config['StopSignal']}")

    def _do_maintainer(self, ins: Instruction) -> None:
        self.base = {**self.base, "author": ins.args.strip()}
        self._step(f"MAINTAINER {ins.args.strip()}")

    # -- RUN ----------------------------------------------------------------------------------------

    def _do_run(self, ins: Instruction) -> None:
        argv = self._command(ins)
        asked = ins.flags.get("network", "default")
        if asked == "host" and self.opts.network != "host":  # as BuildKit's network.host entitlement
            raise ins.error("--network=host: the build was not given the host's network",
                            hint="a Containerfile cannot widen what the build command allows: "
                                 "add --network host to 'sandboxer build' if you trust it")
        network = self.opts.network if asked == "default" else asked
        arg_env = self._arg_env()
        shown = json.dumps(argv) if ins.exec_form is not None else " ".join(argv)
        # the network is an input: a step built with the host's may differ from one without
        self._step(f"RUN {shown}", [arg_env, network], lambda _mtime: self._run(ins, argv, arg_env, network))

    def _run(self, ins: Instruction, argv: list[str], env: list[str], network: str) -> _Layer | None:
        from ..sandbox import SandboxOptions, run
        from ..state import remove_tree
        from .layerwriter import as_mapped_root, write_upper_diff

        if not self.layers:
            raise ins.error("the image is still empty (FROM scratch): there is nothing to run",
                            hint="COPY a static binary in first, or start FROM an image with a shell")
        user = self.config.get("User") or None
        if user:
            self._owner(str(user), self._lowers(), docker_chown=False)  # an unknown USER: say so in build terms
        upper = self._scratch("run")
        os.mkdir(upper, 0o700)
        try:
            opts = SandboxOptions(command=argv, image=self._image(), env=env, workdir=self._workdir(),
                                  user=user, network=network,
                                  storage_driver=self._storage_driver(), upper_dir=upper)
            devnull = os.open(os.devnull, os.O_RDONLY | os.O_CLOEXEC)
            try:
                stdio = (devnull, 2, 2) if self.opts.quiet else (devnull, 1, 2)
                status = run(opts, stdio=stdio, forward_signals=False)  # Ctrl-C cancels the build
            finally:
                os.close(devnull)
            if status.code != 0:
                what = " ".join(argv[len(self.shell):]) if ins.exec_form is None else json.dumps(argv)
                outcome = f"exited {status.code}" if status.signal is None else status.describe()
                raise BuildError(f"{ins.where}: RUN {_clip(what)} {outcome}",
                                 hint="the build stopped here; nothing was tagged")
            fuse = opts.storage_driver == "fuse-overlayfs"
            return self._layer_from(lambda fd: as_mapped_root(write_upper_diff, os.path.join(upper, "upper"), fd,
                                                              fuse))
        finally:
            remove_tree(upper)

    def _storage_driver(self) -> str:
        """The driver for RUN: an overlay, whose upper dir is the step's changes ("copy" has none)."""
        if self._driver is None:
            from .. import storage

            driver = storage.choose(storage.RootfsKind.LAYERS, self.opts.storage_driver)
            if driver.name == "copy":
                raise BuildError("RUN needs an overlay storage driver (overlay or fuse-overlayfs); "
                                 "'copy' cannot tell what a command changed",
                                 hint="see 'sandboxer doctor', or pick --storage-driver overlay|fuse-overlayfs")
            self._driver = driver.name
        return self._driver

    # -- COPY and ADD -----------------------------------------------------------------------------------

    def _do_copy(self, ins: Instruction) -> None:
        self._copy(ins, extract=False)

    def _do_add(self, ins: Instruction) -> None:
        self._copy(ins, extract=True)

    def _copy(self, ins: Instruction, extract: bool) -> None:
        from .context import BuildContext

        words = self._words(ins)
        sources, dest = words[:-1], words[-1]
        for src in sources:
            if "://" in src or src.startswith("git@"):
                raise ins.error(f"{src}: URLs are not supported (sandboxer builds offline)",
                                hint="download the file into the build context and COPY it")
        if len(sources) > 1 and not dest.endswith("/"):
            raise ins.error(f"several sources need a directory as destination, not {dest!r}",
                            hint=f"end it with a slash: {dest}/")
        dest = _destination(dest, self._workdir())
        if self._context is None:
            self._context = BuildContext(self.opts.context)
        context = self._context
        resolved = context.sources(sources, f"{ins.where}: {ins.keyword}")
        chown = self._expand(ins, ins.flags["chown"]) if "chown" in ins.flags else None
        mode = chmod_flag(ins)
        flags = "".join(f"--{k}={v} " for k, v in (("chown", chown), ("chmod", ins.flags.get("chmod"))) if v)
        created_by = f"{ins.keyword} {flags}{' '.join(sources)} {dest}"

        def make(mtime: int) -> _Layer | None:
            from .layerwriter import CopyJob, as_mapped_root, write_copy

            lowers = self._lowers()
            owner = self._owner(chown, lowers, docker_chown=True) if chown else None
            job = CopyJob(resolved, dest, owner, mode, extract, mtime)
            return self._layer_from(lambda fd: as_mapped_root(write_copy, job, lowers, fd,
                                                              f"{ins.where}: {ins.keyword}"))

        self._step(created_by, context.digest(resolved), make)

    def _owner(self, spec: str, lowers: list[str], docker_chown: bool) -> tuple[int, int]:
        """``USER``/``--chown`` to ids, names from the image's /etc/passwd and /etc/group.

        ``--chown=NAME`` without a group takes the uid as gid (Docker's rule);
        a USER without a group takes the user's primary group.
        """
        from .runconfig import ImageAccounts

        accounts = ImageAccounts(lowers)
        user, _, group = spec.partition(":")
        if user.isdecimal():
            uid = int(user)
            primary = accounts.by_uid(uid)
            gid = uid if docker_chown or primary is None else primary[0]
        else:
            found = accounts.user(user)
            if found is None:
                raise UsageError(f"unknown user {user!r} (not in the image's /etc/passwd)",
                                 hint="use a numeric UID[:GID]")
            uid = found[0]
            gid = uid if docker_chown else found[1]
        if group:
            if group.isdecimal():
                gid = int(group)
            else:
                found_gid = accounts.group(group)
                if found_gid is None:
                    raise UsageError(f"unknown group {group!r} (not in the image's /etc/group)",
                                     hint="use a numeric UID:GID")
                gid = found_gid
        return uid, gid

    # -- the image -------------------------------------------------------------------------------------

    def _commit(self) -> str:
        created = self.history[-1]["created"] if self.history else _now()
        config: dict[str, Any] = {k: self.base[k] for k in ("architecture", "os", "variant", "os.version", "author")
                                  if k in self.base}
        config.setdefault("architecture", _architecture())
        config.setdefault("os", "linux")
        config.update({"created": created, "config": self.config, "history": self.history,
                       "rootfs": {"type": "layers", "diff_ids": [layer.diff_id for layer in self.layers]}})
        config_digest, config_size = self.store.put_json(config)
        manifest_digest, _ = self.store.put_oci_manifest(config_digest, config_size,
                                                         [(layer.digest, layer.size) for layer in self.layers])
        self._say(f"COMMIT {', '.join(ref.familiar for ref in self.refs)}")
        for ref in self.refs:
            self.store.tag(ref, manifest_digest)
            self._say(f"Successfully tagged {ref.familiar}")
        return config_digest


def _destination(dest: str, workdir: str) -> str:
    """A COPY destination made absolute (relative to WORKDIR) and normalised.

    A trailing ``/`` (or a last component ``.``/``..``) means "into this
    directory" and is kept, as Docker reads it.
    """
    into = dest.endswith(("/", "/.", "/..")) or dest in (".", "..")
    path = os.path.normpath(os.path.join(workdir, dest))
    return path.rstrip("/") + "/" if into else path


#: what the builder reads and extends of a base image's config, and the JSON type each must have
_RUN_CONFIG_TYPES: dict[str, tuple[type, type | None]] = {
    "Env": (list, str), "Cmd": (list, str), "Entrypoint": (list, str), "Shell": (list, str),
    "Labels": (dict, str), "ExposedPorts": (dict, None), "Volumes": (dict, None),
    "WorkingDir": (str, None), "User": (str, None), "StopSignal": (str, None),
}


def _checked_run_config(config: dict[str, Any], what: str) -> dict[str, Any]:
    """A base image's run config, refused where a field the builder extends has the wrong type (a
    non-string Env entry, Labels that are no object): not an internal error halfway through a step."""
    for key, (kind, item) in _RUN_CONFIG_TYPES.items():
        value = config.get(key)
        if value is None:
            continue
        items = list(value.values()) if isinstance(value, dict) else value if isinstance(value, list) else []
        if not isinstance(value, kind) or (item is not None and not all(isinstance(v, item) for v in items)):
            shape = "a list" if kind is list else "an object" if kind is dict else "a string"
            raise BuildError(f"{what}: the image's config has a malformed {key} (not {shape}"
                             f"{' of strings' if item is not None else ''})",
                             hint="the base image is malformed; rebuild or re-import it")
    return config


def _clip(text: str, limit: int = 80) -> str:
    return text if len(text) <= limit else text[:limit - 3] + "..."

