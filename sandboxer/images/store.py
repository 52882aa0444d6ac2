"""The image store: content-addressed blobs, unpacked layers, an index of names.

Layout under the store root (``$SANDBOXER_DATA_DIR``, else
``$XDG_DATA_HOME/sandboxer``, else ``~/.local/share/sandboxer``)::

    blobs/sha256/<hex>   manifests, configs, layer tarballs; verified on write and on read
    layers/<hex>/        one layer unpacked, by diff-id (sha256 of its uncompressed tar)
    index.json           {"images": {"<domain>/<path>:<tag>": "sha256:<manifest digest>"}}
    tmp/                 staging: everything is written here, fsynced, then renamed into place
    locks/               lock files (flock): the index's, and one per blob, layer or pull under way

Why it is safe with many processes (8 pytest-xdist workers starting the
same image): a blob or layer is made under its own lock, and whoever gets
the lock second finds it done; a reader never sees a half-written file or
directory because nothing appears under its final name before it is
complete.  The index is read-modify-written under the index lock.  Layers
hold files owned by the user's subordinate ids, so they are unpacked and
removed inside a user namespace mapped like a sandbox's.
"""

from __future__ import annotations

import os
import sys

from .. import jsonc
from ..errors import SandboxerError, UsageError
from ..state import Lock, remove_free_lock, unlink_quiet
from .reference import Reference, parse_reference

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import IO, Any

__all__ = ["Store", "Image", "StoreError", "store_root", "MEDIA_TYPES"]

MEDIA_TYPES = {
    "oci_manifest": "application/vnd.oci.image.manifest.v1+json",
    "oci_config": "application/vnd.oci.image.config.v1+json",
    "oci_layer": "application/vnd.oci.image.layer.v1.tar",
    "oci_layer_gzip": "application/vnd.oci.image.layer.v1.tar+gzip",
    "oci_layer_zstd": "application/vnd.oci.image.layer.v1.tar+zstd",
}
#: the media type of a layer blob, by the compression its magic bytes show (see layers.layer_codec)
_LAYER_MEDIA = {"": MEDIA_TYPES["oci_layer"], "gz": MEDIA_TYPES["oci_layer_gzip"],
                "zst": MEDIA_TYPES["oci_layer_zstd"]}
_CHUNK = 1 << 20
_INDEX_FILE = "index.json"


class StoreError(SandboxerError):
    """The image store is missing something, or holds something corrupt."""


def store_root() -> str:
    override = os.environ.get("SANDBOXER_DATA_DIR")
    if override:
        return override
    data = os.environ.get("XDG_DATA_HOME") or os.path.join(os.path.expanduser("~"), ".local", "share")
    return os.path.join(data, "sandboxer")


class _StagedFile:
    """See :meth:`Store._staged_file`."""

    __slots__ = ("path", "root")

    def __init__(self, path: str, root: str) -> None:
        self.path = path
        self.root = root

    def __enter__(self) -> str:
        return self.path

    def __exit__(self, kind: type[BaseException] | None, err: BaseException | None, _tb: object) -> None:
        unlink_quiet(self.path)  # gone already if it was committed
        if isinstance(err, OSError):
            raise _disk_error(err, self.root) from None


class Image:
    """An image resolved from the store: what ``run`` needs to start it.

    A plain slotted class: ``dataclasses`` costs ~13 ms to import on the run path.
    """

    __slots__ = ("reference", "manifest_digest", "manifest", "config", "diff_ids")

    def __init__(self, reference: Reference, manifest_digest: str, manifest: dict[str, Any],
                 config: dict[str, Any], diff_ids: list[str]) -> None:
        self.reference = reference
        self.manifest_digest = manifest_digest
        self.manifest = manifest
        self.config = config
        self.diff_ids = diff_ids

    @property
    def id(self) -> str:
        """Docker's image id: the config's digest."""
        return str(self.manifest["config"]["digest"])

    @property
    def run_config(self) -> dict[str, Any]:
        """The ``config`` section: Env, Entrypoint, Cmd, WorkingDir, User, Labels…"""
        return dict(self.config.get("config") or {})


def _hex(digest: str) -> str:
    algo, _, value = digest.partition(":")
    if algo != "sha256" or len(value) != 64 or any(c not in "0123456789abcdef" for c in value):
        raise StoreError(f"unsupported or malformed digest {digest!r}", hint="only sha256 digests are supported")
    return value


class Store:
    """One user's image store; see the module docstring for the layout."""

    def __init__(self, root: str | None = None) -> None:
        self.root = root or store_root()
        for sub in ("blobs/sha256", "layers", "tmp", "locks"):
            os.makedirs(os.path.join(self.root, sub), mode=0o700, exist_ok=True)

    # -- locks and atomic writes ------------------------------------------

    def lock(self, name: str = "index", transient: bool = False) -> Lock:
        """An exclusive ``flock`` on ``locks/<name>.lock`` while in a ``with`` block; ``transient``
        for a lock on one object being made (a blob, a layer): its file goes as the block ends.

        flock is what filelock does on Linux; importing filelock costs ~50 ms,
        more than the rest of ``sandboxer run IMAGE``.  Each acquisition opens
        its own file description, so threads of one process exclude each
        other too, and a crashed holder's lock goes with its process.
        """
        return Lock(os.path.join(self.root, "locks", f"{name}.lock"), transient)

    def _staging(self, prefix: str) -> str:
        return os.path.join(self.root, "tmp", f"{prefix}-{os.getpid()}-{os.urandom(6).hex()}")

    def _staged_file(self, prefix: str) -> _StagedFile:
        """A temporary path in ``tmp/`` for a ``with`` block: removed unless committed, and a failed
        write (a full disk above all) reported as one :class:`StoreError`."""
        return _StagedFile(self._staging(prefix), self.root)

    def _commit_file(self, tmp: str, final: str) -> None:
        with open(tmp, "rb") as f:
            os.fsync(f.fileno())
        os.replace(tmp, final)
        _fsync_dir(os.path.dirname(final))

    # -- blobs ----------------------------------------------------------------

    def blob_path(self, digest: str) -> str:
        return os.path.join(self.root, "blobs", "sha256", _hex(digest))

    def has_blob(self, digest: str, size: int | None = None) -> bool:
        try:
            st = os.stat(self.blob_path(digest))
        except FileNotFoundError:
            return False
        return size is None or st.st_size == size

    def put_blob(self, stream: IO[bytes] | Any, expected: str | None = None,
                 size: int | None = None) -> tuple[str, int]:
        """Copy ``stream`` into the store, hashing as it goes; returns (digest, size).

        With ``expected``, a mismatch (a truncated or tampered download) is an
        error and nothing is stored.  With ``size``, the copy stops at the
        first byte beyond it: a hostile source may stream without end.
        """
        import hashlib

        digest = hashlib.sha256()
        written = 0
        with self._staged_file("blob") as tmp:
            with open(tmp, "wb") as out:
                while chunk := stream.read(_CHUNK):
                    if size is not None and written + len(chunk) > size:
                        raise StoreError(f"blob {(expected or '')[:19]}… is larger than the {size} bytes "
                                         "expected; stopped, not stored",
                                         hint="the source sends more than it declared: it is corrupt or hostile")
                    digest.update(chunk)
                    out.write(chunk)
                    written += len(chunk)
            actual = f"sha256:{digest.hexdigest()}"
            if expected is not None and actual != expected:
                raise StoreError(f"blob {expected[:19]}… has digest {actual[:19]}…; not stored",
                                 hint="the source is corrupt or was truncated; fetch it again")
            if size is not None and written != size:
                raise StoreError(f"blob {actual[:19]}… is {written} bytes, {size} expected; not stored",
                                 hint="the source was truncated; fetch it again")
            final = self.blob_path(actual)
            if not os.path.exists(final):  # else an equal blob is there already: ours goes with the staging
                self._commit_file(tmp, final)
        return actual, written

    def put_json(self, obj: dict[str, Any]) -> tuple[str, int]:
        import io

        data = jsonc.dumps(obj, separators=(",", ":"), sort_keys=True).encode()
        return self.put_blob(io.BytesIO(data))

    def read_blob(self, digest: str) -> bytes:
        """A small blob (manifest, config), verified: a corrupt one is removed and reported."""
        path = self.blob_path(digest)
        try:
            with open(path, "rb") as f:
                data = f.read()
        except FileNotFoundError:
            raise StoreError(f"blob {digest[:19]}… is missing from the store",
                             hint="pull or load the image again") from None
        if f"sha256:{_sha256_hex(data)}" != digest:
            unlink_quiet(path)
            raise StoreError(f"blob {digest[:19]}… was corrupt and has been removed",
                             hint="pull or load the image again")
        return data

    def read_json(self, digest: str) -> dict[str, Any]:
        obj = jsonc.loads(self.read_blob(digest).decode())
        if not isinstance(obj, dict):
            raise StoreError(f"blob {digest[:19]}… is not a JSON object")
        return obj

    def note_source(self, digest: str, repository: str) -> None:
        """Remember a repository a blob came from (push mounts it from there instead of uploading)."""
        path = os.path.join(self.root, "sources", _hex(digest))
        if repository in self.sources(digest):
            return
        os.makedirs(os.path.dirname(path), mode=0o700, exist_ok=True)
        with open(path, "a") as f:  # appends of one short line are atomic
            f.write(repository + "\n")

    def sources(self, digest: str) -> list[str]:
        try:
            with open(os.path.join(self.root, "sources", _hex(digest))) as f:
                return [line for line in f.read().splitlines() if line]
        except FileNotFoundError:
            return []

    # -- layers ---------------------------------------------------------------

    def layer_path(self, diff_id: str) -> str:
        return os.path.join(self.root, "layers", _hex(diff_id))

    def has_layer(self, diff_id: str) -> bool:
        return os.path.isdir(self.layer_path(diff_id))

    def ensure_layer(self, diff_id: str, blob_digest: str) -> str:
        """Unpack the layer blob once (whoever holds its lock first); returns its directory."""
        final = self.layer_path(diff_id)
        if os.path.isdir(final):
            return final
        with self.lock(f"layer-{_hex(diff_id)}", transient=True):
            if os.path.isdir(final):
                return final
            from .layers import CORRUPT_HINT, LayerError, apply_layer

            staging = self._staging("layer")
            os.mkdir(staging, 0o755)
            try:
                # unpacked first (into staging: nothing outside it, whatever the tar holds), and its
                # diff-id checked from the same read before it takes its place
                try:
                    stats = apply_layer(self.blob_path(blob_digest), staging, label=diff_id[:19])
                except LayerError as e:  # a blob that does not decompress, or no tar: the store's error, as
                    if e.hint != CORRUPT_HINT:  # when a pass of its own found it (the CLI and builder say more)
                        raise
                    raise StoreError(e.message, hint=e.hint) from None
                if stats.diff_id != diff_id:
                    raise StoreError(f"layer {blob_digest[:19]}… unpacks to {stats.diff_id[:19]}…, not "
                                     f"{diff_id[:19]}…", hint="the image's config does not match its layers; "
                                                               "it is corrupt")
                os.rename(staging, final)
                for note in stats.notes:  # what was left out (device nodes need privileges): said once, here
                    print(f"sandboxer: notice: layer {diff_id[:19]}…: {note}", file=sys.stderr)
            except BaseException:
                _remove_any_owner(staging)
                raise
        return final

    # -- the index ------------------------------------------------------------

    def _index_path(self) -> str:
        return os.path.join(self.root, _INDEX_FILE)

    def read_index(self) -> dict[str, str]:
        try:
            with open(self._index_path()) as f:
                data = jsonc.loads(f.read())
        except FileNotFoundError:
            return {}
        except ValueError as e:
            raise StoreError(f"the image index {self._index_path()} is corrupt: {e}",
                             hint="remove it; images must then be pulled or loaded again") from None
        images = data.get("images", {}) if isinstance(data, dict) else {}
        return {str(k): str(v) for k, v in images.items()}

    def _write_index(self, images: dict[str, str]) -> None:
        self.write_json_file(_INDEX_FILE, {"images": dict(sorted(images.items()))})

    def tag(self, ref: Reference, manifest_digest: str) -> None:
        with self.lock():
            images = self.read_index()
            images[str(ref)] = manifest_digest
            self._write_index(images)

    def untag(self, ref: Reference) -> str:
        with self.lock():
            images = self.read_index()
            digest = images.pop(str(ref), None)
            if digest is None:
                raise _unknown(ref)
            self._write_index(images)
            return digest

    def lookup(self, name: str) -> tuple[Reference, str]:
        """(reference, manifest digest) of a name, or an image id / digest prefix."""
        images = self.read_index()
        if name.startswith("sha256:") or (len(name) >= 12 and all(c in "0123456789abcdef" for c in name)):
            for key, digest in images.items():
                if self._matches_id(name, digest):
                    return parse_reference(key), digest
        ref = parse_reference(name)
        if ref.digest and not ref.tag:
            for key, digest in images.items():
                if digest == ref.digest and parse_reference(key).repository == ref.repository:
                    return ref, digest
        digest_found = images.get(str(ref._replace(digest=None)))
        if digest_found is None or (ref.digest and ref.digest != digest_found):
            raise _unknown(ref)
        return ref, digest_found

    def _matches_id(self, name: str, manifest_digest: str) -> bool:
        prefix = name.removeprefix("sha256:")
        if _hex(manifest_digest).startswith(prefix):
            return True
        try:
            config_digest = str(self.read_json(manifest_digest)["config"]["digest"])
        except (StoreError, KeyError, TypeError):
            return False
        return config_digest.removeprefix("sha256:").startswith(prefix)

    def image(self, name: str) -> Image:
        ref, digest = self.lookup(name)
        return self.image_from_manifest(ref, digest)

    def image_from_manifest(self, ref: Reference, digest: str) -> Image:
        """The image a stored manifest describes (its config must be stored too)."""
        manifest = self.read_json(digest)
        try:
            config = self.read_json(str(manifest["config"]["digest"]))
            diff_ids = [str(d) for d in config["rootfs"]["diff_ids"]]
        except (KeyError, TypeError):
            raise StoreError(f"image {ref.familiar} has a malformed manifest or config",
                             hint=f"remove it (sandboxer rmi {ref.familiar}) and pull or load it again") from None
        return Image(ref, digest, manifest, config, diff_ids)

    def images(self) -> list[Image]:
        out = []
        for key in sorted(self.read_index()):
            try:
                out.append(self.image(key))
            except StoreError:
                continue  # a broken entry shows up in inspect, not in the list
        return out

    def layer_dirs(self, image: Image) -> list[str]:
        """The image's unpacked layers, top first (overlay's lowerdir order), unpacking any missing."""
        blobs = [str(layer["digest"]) for layer in image.manifest.get("layers", [])]
        if len(blobs) != len(image.diff_ids):
            raise StoreError(f"image {image.reference.familiar}: {len(blobs)} layers but "
                             f"{len(image.diff_ids)} diff-ids", hint="the image is corrupt; pull or load it again")
        dirs = [self.ensure_layer(d, b) for d, b in zip(image.diff_ids, blobs, strict=True)]
        return dirs[::-1]

    # -- clean-up -------------------------------------------------------------

    def prune(self) -> tuple[list[str], list[str]]:
        """Remove blobs and layers no image in the index refers to; returns (blobs, layers).

        Layers a running sandbox uses are kept even if their image is gone:
        sandboxes record them (under this same lock) before they start.
        """
        with self.lock():
            keep_blobs, keep_layers = self._referenced()
            keep_layers |= {_hex(d) for d in layers_in_use()}
            blob_dir = os.path.join(self.root, "blobs", "sha256")
            removed_blobs = [f"sha256:{h}" for h in os.listdir(blob_dir) if h not in keep_blobs]
            for digest in removed_blobs:
                unlink_quiet(self.blob_path(digest))
                unlink_quiet(os.path.join(self.root, "sources", _hex(digest)))
            layer_dir = os.path.join(self.root, "layers")
            removed_layers = []
            for h in os.listdir(layer_dir):
                if h not in keep_layers:
                    _remove_any_owner(os.path.join(layer_dir, h))
                    removed_layers.append(f"sha256:{h}")
            self._remove_stale_staging()
            locks = os.path.join(self.root, "locks")
            for entry in os.listdir(locks):  # per-object locks their holders were killed holding
                if entry.startswith(("blob-", "layer-", "pull-")):
                    remove_free_lock(os.path.join(locks, entry))
        return removed_blobs, removed_layers

    def _referenced(self) -> tuple[set[str], set[str]]:
        """(blob hexes, layer hexes) the images in the index refer to; call it under the index lock."""
        blobs: set[str] = set()
        layers: set[str] = set()
        for digest in set(self.read_index().values()):
            blobs.add(_hex(digest))
            try:
                manifest = self.read_json(digest)
                blobs.add(_hex(str(manifest["config"]["digest"])))
                blobs.update(_hex(str(layer["digest"])) for layer in manifest.get("layers", []))
                config = self.read_json(str(manifest["config"]["digest"]))
                layers.update(_hex(str(d)) for d in config["rootfs"]["diff_ids"])
            except (StoreError, KeyError, TypeError):
                continue
        return blobs, layers

    def _discard(self, blobs: list[str], diff_ids: list[str]) -> None:
        """Remove what an aborted import stored, unless a named image or a running sandbox uses it."""
        with self.lock():
            keep_blobs, keep_layers = self._referenced()
            keep_layers |= {_hex(d) for d in layers_in_use()}
            for digest in blobs:
                if _hex(digest) not in keep_blobs:
                    unlink_quiet(self.blob_path(digest))
            for diff_id in diff_ids:
                if _hex(diff_id) not in keep_layers:
                    _remove_any_owner(self.layer_path(diff_id))

    def _remove_stale_staging(self, age_s: float = 3600.0) -> None:
        """Staging entries of processes that died mid-write (a killed pull's partial blob): their writer
        is gone (see :func:`_writer_gone`), or they are older than an hour."""
        import stat
        import time

        tmp = os.path.join(self.root, "tmp")
        for entry in os.listdir(tmp):
            path = os.path.join(tmp, entry)
            try:
                st = os.lstat(path)
            except FileNotFoundError:
                continue
            age = time.time() - st.st_mtime
            if age <= age_s and not _writer_gone(entry, age):
                continue
            if stat.S_ISDIR(st.st_mode):  # an unpacked layer's files may belong to subordinate ids
                _remove_any_owner(path)
            else:
                unlink_quiet(path)

    # -- import -----------------------------------------------------------------

    def import_rootfs(self, tarball: str, ref: Reference, *, cmd: list[str] | None = None) -> Image:
        """``sandboxer import``: one plain or gzip rootfs tarball becomes a one-layer image."""
        run_config: dict[str, Any] = {"Env": ["PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"]}
        if cmd:
            run_config["Cmd"] = cmd
        return self.add_image(ref, [tarball], run_config, f"sandboxer import {os.path.basename(tarball)}")

    def add_image(self, ref: Reference, tarballs: list[str], run_config: dict[str, Any],
                  created_by: str) -> Image:
        """An image from layer tarballs (bottom first): blobs, unpacked layers, config, manifest, name."""
        import datetime

        now = datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
        blobs: list[tuple[str, int]] = []
        diff_ids: list[str] = []
        for tarball in tarballs:
            try:
                src = open(tarball, "rb")
            except OSError as e:
                raise UsageError(f"cannot read {tarball}: {e.strerror}") from None
            with src:
                blob, size = self.put_blob(src)
            try:
                diff_id = diff_id_of(self.blob_path(blob))
                self.ensure_layer(diff_id, blob)
            except SandboxerError as e:  # not a usable layer: leave nothing of this import behind
                self._discard([b for b, _ in blobs] + [blob], diff_ids)
                from .layers import CORRUPT_HINT

                if getattr(e, "hint", None) == CORRUPT_HINT:  # "pull it again" is for a pulled layer
                    e.hint = f"{tarball} is damaged, truncated or not a tar archive; nothing was imported"
                raise
            blobs.append((blob, size))
            diff_ids.append(diff_id)
        config = {
            "architecture": _architecture(), "os": "linux", "created": now, "config": run_config,
            "rootfs": {"type": "layers", "diff_ids": diff_ids},
            "history": [{"created": now, "created_by": created_by}],
        }
        config_digest, config_size = self.put_json(config)
        manifest_digest, manifest = self.put_oci_manifest(config_digest, config_size, blobs)
        self.tag(ref, manifest_digest)
        return Image(ref, manifest_digest, manifest, config, diff_ids)

    def put_oci_manifest(self, config_digest: str, config_size: int,
                         layers: list[tuple[str, int]]) -> tuple[str, dict[str, Any]]:
        """Store an OCI manifest of stored blobs: a config and layers (plain or gzip, sniffed).

        For images that come without one: ``import``, and a docker-archive
        (whose config is kept byte for byte, so the image id survives).
        Returns (manifest digest, manifest).
        """
        from .layers import layer_codec

        descriptors = []
        for blob, size in layers:
            fd = os.open(self.blob_path(blob), os.O_RDONLY | os.O_CLOEXEC)
            try:
                codec = layer_codec(fd, blob[:19])
            finally:
                os.close(fd)
            if codec not in _LAYER_MEDIA:
                raise StoreError(f"layer {blob[:19]}… is {codec}-compressed, which no image format names",
                                 hint="compress layers with gzip or zstd, or not at all")
            descriptors.append({"mediaType": _LAYER_MEDIA[codec], "digest": blob, "size": size})
        manifest = {
            "schemaVersion": 2, "mediaType": MEDIA_TYPES["oci_manifest"],
            "config": {"mediaType": MEDIA_TYPES["oci_config"], "digest": config_digest, "size": config_size},
            "layers": descriptors,
        }
        return self.put_json(manifest)[0], manifest

    # -- small JSON files beside the index (the build cache) ---------------------

    def read_json_file(self, name: str) -> dict[str, Any] | None:
        """``<root>/<name>`` as a JSON object; None if it is missing or unreadable (a cache, not a record)."""
        try:
            with open(os.path.join(self.root, name)) as f:
                data = jsonc.loads(f.read())
        except (OSError, ValueError):
            return None
        return data if isinstance(data, dict) else None

    def write_json_file(self, name: str, obj: dict[str, Any]) -> None:
        """Replace ``<root>/<name>`` atomically (``tmp/``, fsync, rename); hold a lock around a read-modify-write."""
        with self._staged_file(name) as tmp:
            with open(tmp, "w") as f:
                f.write(jsonc.dumps(obj, separators=(",", ":"), sort_keys=True))
            self._commit_file(tmp, os.path.join(self.root, name))


def _sha256_hex(data: bytes) -> str:
    """sha256 of a small blob (a manifest, a config) with CPython's built-in implementation:
    ``hashlib`` loads OpenSSL, ~4 ms of every ``run IMAGE`` that verifies two small blobs."""
    try:
        from _sha256 import sha256  # type: ignore[import-not-found]  # CPython 3.11
    except ImportError:
        try:
            from _sha2 import sha256  # type: ignore[import-not-found]  # CPython 3.12+
        except ImportError:
            from hashlib import sha256
    return str(sha256(data).hexdigest())


def diff_id_of(blob_path: str) -> str:
    """The sha256 of a layer's uncompressed tar (decompressed on the fly, as the unpacker reads it)."""
    import tarfile

    from .layers import LayerStream, layer_codec

    fd = os.open(blob_path, os.O_RDONLY | os.O_CLOEXEC)
    try:
        with LayerStream(fd, layer_codec(fd, os.path.basename(blob_path)[:12]), hashed=True) as stream:
            return stream.drain()
    except tarfile.ReadError as e:
        raise StoreError(f"layer {os.path.basename(blob_path)[:12]} cannot be decompressed: {e}",
                         hint="the layer is truncated or corrupt") from None
    finally:
        os.close(fd)


def _writer_gone(entry: str, age: float) -> bool:
    """The process named in a staging entry ``PREFIX-PID-HEX`` (:meth:`Store._staging`) no longer writes
    it (:func:`sandboxer.procfs.writer_gone`).  Entries named otherwise are not judged here."""
    from ..procfs import writer_gone

    parts = entry.rsplit("-", 2)
    return len(parts) == 3 and parts[1].isdecimal() and writer_gone(int(parts[1]), age)


def layers_in_use() -> set[str]:
    """Diff-ids used by running sandboxes (recorded in their locked state directories)."""
    from ..state import IMAGE_LAYERS, live_records

    out: set[str] = set()
    for text in live_records(IMAGE_LAYERS):
        out.update(line for line in text.splitlines() if line.startswith("sha256:"))
    return out


def _architecture() -> str:
    machine = os.uname().machine
    return {"x86_64": "amd64", "aarch64": "arm64"}.get(machine, machine)


def _unknown(ref: Reference) -> StoreError:
    return StoreError(f"no such image: {ref.familiar}",  # 'run' adds how to run on the host's root
                      hint="see 'sandboxer images', or make one with 'sandboxer import ROOTFS.tar NAME'")


def _disk_error(err: OSError, root: str) -> SandboxerError:
    """A write into the store failed: say where, and what to do (ENOSPC above all)."""
    import errno

    if err.errno in (errno.ENOSPC, errno.EDQUOT):
        return StoreError(f"no space left on the device of the image store {root}",
                          hint="free some space ('sandboxer image prune' removes unused layers); "
                               "nothing was added to the store")
    return StoreError(f"cannot write to the image store {root}: {err.strerror or err}",
                      hint="check the permissions and free space of the store (SANDBOXER_DATA_DIR)")


def _fsync_dir(path: str) -> None:
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)



def _remove_any_owner(path: str) -> None:
    """Files owned by subordinate ids need the mapped user namespace to go."""
    from ..rmtree import rmtree

    try:
        rmtree(path)
    except OSError:
        from ..state import remove_tree

        remove_tree(path)
