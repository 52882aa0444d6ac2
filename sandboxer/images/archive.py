"""``sandboxer load`` and ``sandboxer save``: images in and out of archives and OCI layouts.

What ``load`` reads, told apart by what it holds:

* a **docker-archive** (``docker save``, ``skopeo copy … docker-archive:``):
  ``manifest.json`` lists each image's config, names (``RepoTags``) and layer
  tarballs, plain or gzip, wherever they sit (``<hex>.tar``, the legacy
  ``<id>/layer.tar``, Docker 25's ``blobs/sha256/<hex>``).  It carries no
  registry manifest, so the store makes an OCI one naming the layers as
  stored; the config is kept byte for byte, so the image id survives.
* an **OCI image layout** (``oci-layout``, ``index.json``, ``blobs/``), as a
  directory or a tar of one (an oci-archive).  Manifests are kept verbatim
  (a manifest's digest is its identity); nested indexes are followed to the
  manifest of this machine's platform, or ``--platform``'s.
* either tar compressed (gzip, bzip2, xz), or on stdin (spooled into the
  store's ``tmp/`` first: finding members needs seeking).

Archives are untrusted.  A member name that climbs out (``../x``, ``/x``)
refuses the whole archive; every blob is hashed as it streams into the store
(a layer is never read whole into memory) and checked against its digest,
every layer against the config's diff-id.  Names enter the index only once
every image of the archive is stored and unpacked, so a bad archive leaves
no name behind; its orphan blobs are what ``sandboxer image prune`` removes.

``save`` writes either format, blobs verbatim and verified as they are
copied, into a temporary file renamed over the destination at the end.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import posixpath
import sys
import tarfile
import tempfile
import zlib
from collections.abc import Iterator
from contextlib import contextmanager
from typing import IO, Any, NamedTuple

from ..errors import UsageError
from .manifests import (
    IMAGE_MANIFEST_TYPES,
    INDEX_TYPES,
    LAYER_TYPES,
    MANIFEST_TYPES,
    choose_manifest,
    parse_platform,
    platform_matches,
)
from .reference import Reference, parse_reference
from .store import Image, Store, StoreError, diff_id_of

__all__ = ["FORMATS", "load", "save"]

FORMATS = ("docker-archive", "oci-archive")
#: manifests, configs and index files are read whole; nothing legitimate comes near this
_MAX_JSON = 16 << 20
_MAX_LINKS = 16
_MAX_NESTING = 8
_CHUNK = 1 << 20
_CORRUPT = "the archive is corrupt, truncated or was tampered with; nothing was loaded"
_OCI_NAME = "org.opencontainers.image.ref.name"
_CONTAINERD_NAME = "io.containerd.image.name"


class _Found(NamedTuple):
    """One image of the archive, stored but not yet named."""

    names: list[Reference]
    digest: str
    what: str


# -- reading an archive -------------------------------------------------------------


def _member_path(name: str, label: str) -> str:
    """A member name, normalised; one that would land outside the archive refuses it."""
    path = posixpath.normpath(name)
    if name.startswith("/") or path == ".." or path.startswith("../"):
        raise StoreError(f"{label}: member {name!r} points outside the archive; nothing was loaded",
                         hint="the archive is malformed or hostile")
    return path


class _Source:
    """An archive's files by path: :class:`_TarSource` or :class:`_DirSource`."""

    label: str

    def exists(self, name: str) -> bool:
        raise NotImplementedError

    def open(self, name: str) -> _Member:
        """A member to stream; its read errors are :class:`StoreError` naming it, because
        ``Store.put_blob`` reports an ``OSError`` as a failure to write the store."""
        return _Member(self._open(name), f"{self.label}: {name}")

    def _open(self, name: str) -> IO[bytes]:
        raise NotImplementedError

    def read_small(self, name: str) -> bytes:
        """A JSON file or small blob, whole; a huge one is refused rather than read into memory."""
        with self.open(name) as f:
            data = f.read(_MAX_JSON + 1)
        if len(data) > _MAX_JSON:
            raise StoreError(f"{self.label}: {name} is larger than {_MAX_JSON >> 20} MiB", hint=_CORRUPT)
        return data

    def read_json(self, name: str) -> Any:
        return _parse_json(self.read_small(name), self.label, name)

    def missing(self, name: str) -> StoreError:
        return StoreError(f"{self.label}: {name} is not in the archive", hint=_CORRUPT)


class _TarSource(_Source):
    """A tar's members, read in place: ``extractfile`` streams a member from the archive."""

    def __init__(self, tar: tarfile.TarFile, label: str) -> None:
        self.label = label
        self._tar = tar
        self._members = {_member_path(m.name, label): m for m in tar}

    def exists(self, name: str) -> bool:
        return _member_path(name, self.label) in self._members

    def _open(self, name: str) -> IO[bytes]:
        f = self._tar.extractfile(self._resolve(_member_path(name, self.label)))
        if f is None:
            raise self.missing(name)
        return f

    def _resolve(self, name: str) -> tarfile.TarInfo:
        """The regular member behind ``name``, through symlinks and hardlinks inside the archive
        (skopeo writes the legacy ``<id>/layer.tar`` as a symlink to ``../<hex>.tar``)."""
        for _ in range(_MAX_LINKS):
            member = self._members.get(name)
            if member is None:
                raise self.missing(name)
            if member.isfile():
                return member
            if member.issym():
                name = _member_path(posixpath.join(posixpath.dirname(name), member.linkname), self.label)
            elif member.islnk():
                name = _member_path(member.linkname, self.label)
            else:
                raise StoreError(f"{self.label}: {name} is not a file", hint=_CORRUPT)
        raise StoreError(f"{self.label}: {name} is a loop of links", hint=_CORRUPT)


class _DirSource(_Source):
    """An OCI layout directory."""

    def __init__(self, root: str) -> None:
        self.label = root
        self._root = root

    def exists(self, name: str) -> bool:
        return os.path.isfile(os.path.join(self._root, _member_path(name, self.label)))

    def _open(self, name: str) -> IO[bytes]:
        path = os.path.join(self._root, _member_path(name, self.label))
        try:
            return open(path, "rb")
        except FileNotFoundError:
            raise self.missing(name) from None
        except OSError as e:
            raise StoreError(f"cannot read {path}: {e.strerror}") from None


class _Member:
    """A member being read: ``read`` and a context manager, read errors turned into StoreError."""

    def __init__(self, f: IO[bytes], what: str) -> None:
        self._f = f
        self._what = what

    def read(self, n: int = -1) -> bytes:
        try:
            return self._f.read(n)
        except (OSError, EOFError, zlib.error, tarfile.TarError) as e:
            raise StoreError(f"{self._what}: cannot read it: {e}", hint=_CORRUPT) from None

    def __enter__(self) -> _Member:
        return self

    def __exit__(self, *_exc: object) -> None:
        self._f.close()


def _parse_json(raw: bytes, label: str, name: str) -> Any:
    try:
        return json.loads(raw)
    except (ValueError, UnicodeDecodeError) as e:
        raise StoreError(f"{label}: {name} is not valid JSON ({e})", hint=_CORRUPT) from None


def _parse_object(raw: bytes, label: str, name: str) -> dict[str, Any]:
    return _object(_parse_json(raw, label, name), label, name)


def _object(value: Any, label: str, name: str) -> dict[str, Any]:
    if not isinstance(value, dict):
        raise StoreError(f"{label}: {name} is not a JSON object", hint=_CORRUPT)
    return value


@contextmanager
def _open_source(path: str | None, store: Store) -> Iterator[_Source]:
    """``path`` as a source: a directory, a (compressed) tar, or stdin for None or ``-``."""
    if path is None or path == "-":
        with _spooled_stdin(store) as spooled, _open_tar(spooled, "stdin") as source:
            yield source
    elif os.path.isdir(path):
        yield _DirSource(path)
    else:
        with _open_tar(path, path) as source:
            yield source


@contextmanager
def _spooled_stdin(store: Store) -> Iterator[str]:
    """stdin copied into the store's ``tmp/`` (removed after; ``image prune`` sweeps a crash's)."""
    if sys.stdin is None or sys.stdin.isatty():
        raise UsageError("no archive to load", hint="give one with -i FILE, or pipe it in: sandboxer load < FILE")
    with tempfile.NamedTemporaryFile(dir=os.path.join(store.root, "tmp"), prefix="load-stdin-") as spool:
        try:
            while chunk := sys.stdin.buffer.read(_CHUNK):
                spool.write(chunk)
            spool.flush()
        except OSError as e:
            raise StoreError(f"cannot copy stdin into {spool.name}: {e.strerror or e}",
                             hint="check the free space of the image store (SANDBOXER_DATA_DIR), "
                                  "or load from a file with -i FILE") from None
        yield spool.name


@contextmanager
def _open_tar(path: str, label: str) -> Iterator[_TarSource]:
    try:
        tar = tarfile.open(path, "r:*")
    except (tarfile.TarError, EOFError, zlib.error):
        raise StoreError(f"{label} is not a tar archive (nor an OCI layout directory)",
                         hint="load reads docker-archive and oci-archive tars and OCI layout directories") from None
    except OSError as e:
        raise UsageError(f"cannot read {path}: {e.strerror or e}") from None
    with tar:
        try:
            yield _TarSource(tar, label)
        except (tarfile.TarError, EOFError, zlib.error) as e:
            raise StoreError(f"{label}: cannot read the archive: {e}", hint=_CORRUPT) from None


# -- load ------------------------------------------------------------------------------


def load(path: str | None, *, name: str | None = None, platform: str | None = None,
         store: Store | None = None) -> list[Image]:
    """Store the images of an archive or layout and name them; one :class:`Image` per name.

    ``name`` names an image the archive leaves unnamed (an OCI layout
    without ``ref.name``, a docker-archive with empty ``RepoTags``).
    """
    store = store or Store()
    fallback = parse_reference(name) if name else None
    parse_platform(platform)  # a bad --platform fails before anything is read
    with _open_source(path, store) as source:
        if source.exists("manifest.json"):  # checked first: Docker 25 writes both manifest.json and an OCI layout
            found = _load_docker_archive(source, store)
        elif source.exists("oci-layout"):
            found = _load_oci_layout(source, store, platform)
        elif source.exists("repositories"):
            raise StoreError(f"{source.label} is a docker-archive of Docker before 1.10 (no manifest.json)",
                             hint="that format is not supported; save the image again with a newer docker, "
                                  "podman or skopeo")
        else:
            raise StoreError(f"{source.label} is neither a docker-archive (no manifest.json) "
                             "nor an OCI image layout (no oci-layout)",
                             hint="to make an image of a root filesystem tarball use 'sandboxer import FILE NAME'")
        named = _names(found, fallback, source.label)
    images = [store.image_from_manifest(ref, digest) for ref, digest in named]
    for image in images:
        store.layer_dirs(image)  # unpack now, not at the first run; verifies every layer once more
    for image in images:
        store.tag(image.reference, image.manifest_digest)
    return images


def _names(found: list[_Found], fallback: Reference | None, label: str) -> list[tuple[Reference, str]]:
    """(name, manifest digest) for every name of every image; ``fallback`` for the one unnamed image."""
    unnamed = [f for f in found if not f.names]
    if unnamed and fallback is None:
        raise StoreError(f"{label}: {unnamed[0].what} has no name",
                         hint="name it: sandboxer load -i FILE --name NAME[:TAG]")
    if len(unnamed) > 1:
        raise StoreError(f"{label}: {len(unnamed)} images have no name, and --name names only one",
                         hint="name them in the archive, or save them to separate archives")
    return [(ref, f.digest) for f in found for ref in (f.names or ([fallback] if fallback else []))]


def _parse_names(values: list[Any]) -> list[Reference]:
    """The archive's names that are valid references (a digest is dropped where there is a tag)."""
    out = []
    for value in values:
        try:
            ref = parse_reference(str(value))
        except UsageError:
            continue  # not a usable name: the image counts as unnamed unless another one is
        out.append(ref._replace(digest=None) if ref.tag else ref)
    return out


def _check_diff_id(store: Store, blob: str, diff_id: str, n: int, what: str) -> None:
    """A layer must be what the config says: its uncompressed digest is the config's diff-id."""
    if blob != diff_id and diff_id_of(store.blob_path(blob)) != diff_id:
        raise StoreError(f"layer {n} of {what} does not match its diff-id {diff_id[:19]}…", hint=_CORRUPT)


def _diff_ids(raw_config: bytes, label: str, name: str) -> list[str]:
    """The config's ``rootfs.diff_ids``: what each layer must unpack to."""
    config = _parse_object(raw_config, label, name)
    try:
        diff_ids = config["rootfs"]["diff_ids"]
        if isinstance(diff_ids, list):
            return [str(d) for d in diff_ids]
    except (KeyError, TypeError):
        pass
    raise StoreError(f"{label}: the config {name} has no rootfs.diff_ids", hint=_CORRUPT)


# -- docker-archive ---------------------------------------------------------------------


def _load_docker_archive(source: _Source, store: Store) -> list[_Found]:
    entries = source.read_json("manifest.json")
    if not isinstance(entries, list) or not entries:
        raise StoreError(f"{source.label}: manifest.json lists no images", hint=_CORRUPT)
    return [_load_docker_image(source, store, _object(entry, source.label, "manifest.json"), n)
            for n, entry in enumerate(entries, 1)]


def _load_docker_image(source: _Source, store: Store, entry: dict[str, Any], n: int) -> _Found:
    """One entry of manifest.json: its config verbatim, its layers checked, an OCI manifest made."""
    config_path, layer_paths = entry.get("Config"), entry.get("Layers")
    if not isinstance(config_path, str) or not isinstance(layer_paths, list):
        raise StoreError(f"{source.label}: image {n} of manifest.json has no Config or Layers", hint=_CORRUPT)
    names = _parse_names(entry.get("RepoTags") or [])
    what = f"{names[0].familiar if names else f'image {n}'} in {source.label}"
    raw_config = source.read_small(config_path)
    diff_ids = _diff_ids(raw_config, source.label, config_path)
    if len(diff_ids) != len(layer_paths):
        raise StoreError(f"{what}: manifest.json lists {len(layer_paths)} layers, its config "
                         f"{len(diff_ids)} diff-ids", hint=_CORRUPT)
    config_digest, config_size = store.put_blob(io.BytesIO(raw_config))
    layers = []
    for i, (layer_path, diff_id) in enumerate(zip(layer_paths, diff_ids, strict=True), 1):
        with source.open(str(layer_path)) as f:
            blob, size = store.put_blob(f)
        _check_diff_id(store, blob, diff_id, i, what)
        layers.append((blob, size))
    digest, _ = store.put_oci_manifest(config_digest, config_size, layers)
    return _Found(names, digest, f"image {n} of manifest.json")


# -- OCI image layout (a directory or an oci-archive) -----------------------------------


def _load_oci_layout(source: _Source, store: Store, platform: str | None) -> list[_Found]:
    layout = _object(source.read_json("oci-layout"), source.label, "oci-layout")
    if "imageLayoutVersion" not in layout:
        raise StoreError(f"{source.label}: oci-layout has no imageLayoutVersion", hint=_CORRUPT)
    index = _object(source.read_json("index.json"), source.label, "index.json")
    entries = _descriptors(index, source.label, "index.json")
    if not entries:
        raise StoreError(f"{source.label}: index.json lists no images", hint=_CORRUPT)
    found = []
    for n, entry in enumerate(entries, 1):
        annotations = entry.get("annotations") or {}
        names = _parse_names([annotations[k] for k in (_CONTAINERD_NAME, _OCI_NAME) if annotations.get(k)])[:1]
        what = f"{names[0].familiar if names else f'manifest {n} of index.json'} in {source.label}"
        chosen = _follow_indexes(source, store, entry, platform, what)
        if chosen is not None:
            found.append(_Found(names, _load_oci_image(source, store, chosen, what), f"manifest {n} of index.json"))
    if not found:  # every entry is for another platform: this raises, saying which there are
        choose_manifest(index, platform, source.label)
    return found


def _descriptors(index: dict[str, Any], label: str, name: str) -> list[dict[str, Any]]:
    entries = index.get("manifests")
    if not isinstance(entries, list) or not all(isinstance(e, dict) for e in entries):
        raise StoreError(f"{label}: {name} has no list of manifests", hint=_CORRUPT)
    return entries


def _follow_indexes(source: _Source, store: Store, entry: dict[str, Any], platform: str | None,
                    what: str) -> dict[str, Any] | None:
    """The descriptor of this platform's image manifest, through nested indexes; None for
    a top-level manifest declared for another platform."""
    for _ in range(_MAX_NESTING):
        if entry.get("mediaType") not in INDEX_TYPES:
            return entry if "platform" not in entry or platform_matches(entry, platform) else None
        name = f"index {entry.get('digest')}"
        nested = _parse_object(_read_blob(source, store, entry), source.label, name)
        _descriptors(nested, source.label, name)
        entry = choose_manifest(nested, platform, what)
    raise StoreError(f"{what}: indexes nested more than {_MAX_NESTING} deep", hint=_CORRUPT)


def _load_oci_image(source: _Source, store: Store, descriptor: dict[str, Any], what: str) -> str:
    """Copy one image (config, layers, then its manifest verbatim); returns the manifest digest."""
    raw = _read_blob(source, store, descriptor)
    manifest = _parse_object(raw, source.label, f"manifest {descriptor.get('digest')}")
    media_type = manifest.get("mediaType") or descriptor.get("mediaType")
    if media_type not in IMAGE_MANIFEST_TYPES:
        raise StoreError(f"{what}: unsupported manifest type {media_type!r}",
                         hint="only OCI and Docker schema 2 images are supported")
    config_descriptor, layers = manifest.get("config"), manifest.get("layers")
    if not isinstance(config_descriptor, dict) or not isinstance(layers, list) \
            or not all(isinstance(layer, dict) for layer in layers):
        raise StoreError(f"{what}: the manifest has no config or layers", hint=_CORRUPT)
    for layer in layers:
        if layer.get("mediaType") not in LAYER_TYPES:
            raise StoreError(f"{what}: unsupported layer type {layer.get('mediaType')!r}",
                             hint="plain, gzip and zstd layers are supported")
    raw_config = _read_blob(source, store, config_descriptor)
    diff_ids = _diff_ids(raw_config, source.label, str(config_descriptor["digest"]))
    if len(diff_ids) != len(layers):
        raise StoreError(f"{what}: {len(layers)} layers but {len(diff_ids)} diff-ids", hint=_CORRUPT)
    store.put_blob(io.BytesIO(raw_config))
    for n, (layer, diff_id) in enumerate(zip(layers, diff_ids, strict=True), 1):
        _copy_blob(source, store, layer)
        _check_diff_id(store, str(layer["digest"]), diff_id, n, what)
    return store.put_blob(io.BytesIO(raw))[0]


def _blob_member(store: Store, descriptor: dict[str, Any]) -> tuple[str, str, int | None]:
    """(digest, member path, size) of a descriptor; the store refuses a malformed or non-sha256 digest."""
    digest = str(descriptor.get("digest"))
    member = f"blobs/sha256/{os.path.basename(store.blob_path(digest))}"
    size = descriptor.get("size")
    return digest, member, size if isinstance(size, int) and size >= 0 else None


def _read_blob(source: _Source, store: Store, descriptor: dict[str, Any]) -> bytes:
    """A small blob (index, manifest, config), checked against its descriptor."""
    digest, member, size = _blob_member(store, descriptor)
    raw = source.read_small(member)
    if f"sha256:{hashlib.sha256(raw).hexdigest()}" != digest or (size is not None and len(raw) != size):
        raise StoreError(f"{source.label}: blob {digest[:19]}… does not match its digest or size", hint=_CORRUPT)
    return raw


def _copy_blob(source: _Source, store: Store, descriptor: dict[str, Any]) -> None:
    """A layer blob into the store, streamed and checked; one the store already holds is not copied."""
    digest, member, size = _blob_member(store, descriptor)
    if store.has_blob(digest, size):
        return
    with source.open(member) as f:
        try:
            store.put_blob(f, expected=digest, size=size)
        except StoreError as e:
            raise StoreError(f"{source.label}: {e}", hint=_CORRUPT) from None


# -- save --------------------------------------------------------------------------------


def save(names: list[str], output: str | None, fmt: str = "docker-archive",
         store: Store | None = None) -> list[Image]:
    """Write images to ``output`` (a file, replaced atomically; stdout for None or ``-``)."""
    if fmt not in FORMATS:
        raise UsageError(f"unknown archive format {fmt!r}", hint=f"use one of {', '.join(FORMATS)}")
    store = store or Store()
    images = [store.image(name) for name in names]  # an unknown name fails before anything is written
    with _output(output) as out, tarfile.open(fileobj=out, mode="w|", format=tarfile.PAX_FORMAT) as tar:
        writer = _Writer(tar, store)
        if fmt == "docker-archive":
            writer.docker_archive(images)
        else:
            writer.oci_archive(images)
    return images


@contextmanager
def _output(path: str | None) -> Iterator[IO[bytes]]:
    """stdout, or a temporary file beside ``path``, fsynced and renamed over it on success."""
    if path is None or path == "-":
        if sys.stdout.isatty():
            raise UsageError("refusing to write an archive to a terminal",
                             hint="give -o FILE, or redirect stdout: sandboxer save IMAGE > FILE")
        yield sys.stdout.buffer
        sys.stdout.buffer.flush()
        return
    if os.path.isdir(path):
        raise UsageError(f"{path} is a directory", hint="give -o the path of the archive file to write")
    tmp = os.path.join(os.path.dirname(os.path.abspath(path)), f".{os.path.basename(path)}.{os.getpid()}.tmp")
    try:
        f = open(tmp, "wb")
    except OSError as e:
        raise UsageError(f"cannot write {path}: {e.strerror}",
                         hint="-o needs a file in a directory that exists and you can write") from None
    try:
        with f:
            yield f
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except FileNotFoundError:
            pass
        raise


class _Writer:
    """Blobs and JSON into a tar being streamed out; each blob once, verified as it is copied."""

    def __init__(self, tar: tarfile.TarFile, store: Store) -> None:
        self.tar = tar
        self.store = store
        self._written: set[str] = set()

    def docker_archive(self, images: list[Image]) -> None:
        """``manifest.json`` plus ``<hex>.json`` configs and ``<hex>.tar`` layers, as skopeo writes it."""
        entries: dict[str, dict[str, Any]] = {}  # by image id: one entry, several RepoTags
        for image in images:
            if image.id not in entries:
                config = f"{image.id.removeprefix('sha256:')}.json"
                self.blob(config, image.id)
                layers = [f"{str(layer['digest']).removeprefix('sha256:')}.tar" for layer in _layers(image)]
                for name, layer in zip(layers, _layers(image), strict=True):
                    self.blob(name, str(layer["digest"]))
                entries[image.id] = {"Config": config, "RepoTags": [], "Layers": layers}
            tags = entries[image.id]["RepoTags"]
            if image.reference.tag and image.reference.familiar not in tags:
                tags.append(image.reference.familiar)
        self.data("manifest.json", json.dumps(list(entries.values())).encode())

    def oci_archive(self, images: list[Image]) -> None:
        """An OCI layout: blobs verbatim, one index entry per name (``ref.name`` and containerd's full name)."""
        self.data("oci-layout", json.dumps({"imageLayoutVersion": "1.0.0"}).encode())
        for directory in ("blobs", "blobs/sha256"):  # explicit: rootless skopeo fails to chown implied ones
            self.tar.addfile(_tarinfo(directory, 0, tarfile.DIRTYPE))
        manifests = []
        for image in images:
            for digest in (image.id, *(str(layer["digest"]) for layer in _layers(image)), image.manifest_digest):
                self.blob(f"blobs/sha256/{digest.removeprefix('sha256:')}", digest)
            manifests.append({
                "mediaType": str(image.manifest.get("mediaType") or MANIFEST_TYPES["oci_manifest"]),
                "digest": image.manifest_digest, "size": os.path.getsize(self.store.blob_path(image.manifest_digest)),
                "annotations": {_OCI_NAME: image.reference.familiar, _CONTAINERD_NAME: str(image.reference)}})
        index = {"schemaVersion": 2, "mediaType": MANIFEST_TYPES["oci_index"], "manifests": manifests}
        self.data("index.json", json.dumps(index).encode())

    def data(self, name: str, data: bytes) -> None:
        self.tar.addfile(_tarinfo(name, len(data)), io.BytesIO(data))

    def blob(self, name: str, digest: str) -> None:
        """Copy a stored blob, hashing it on the way: a corrupt store must not make a corrupt archive."""
        if name in self._written:
            return
        path = self.store.blob_path(digest)
        try:
            f = open(path, "rb")
        except FileNotFoundError:
            raise StoreError(f"blob {digest[:19]}… is missing from the store",
                             hint="pull or load the image again") from None
        with f:
            reader = _HashingReader(f)
            self.tar.addfile(_tarinfo(name, os.fstat(f.fileno()).st_size), reader)
        if reader.digest() != digest:
            raise StoreError(f"blob {digest[:19]}… in the store is corrupt; nothing was written",
                             hint="remove the image (sandboxer rmi) and pull or load it again")
        self._written.add(name)


class _HashingReader:
    """A file's ``read`` that hashes what passes through it."""

    def __init__(self, f: IO[bytes]) -> None:
        self._f = f
        self._sha = hashlib.sha256()

    def read(self, n: int = -1) -> bytes:
        chunk = self._f.read(n)
        self._sha.update(chunk)
        return chunk

    def digest(self) -> str:
        return f"sha256:{self._sha.hexdigest()}"


def _layers(image: Image) -> list[dict[str, Any]]:
    return list(image.manifest.get("layers") or [])


def _tarinfo(name: str, size: int, kind: bytes = tarfile.REGTYPE) -> tarfile.TarInfo:
    """A reproducible member: root-owned, dated 1970, files read-only, as skopeo writes them."""
    info = tarfile.TarInfo(name)
    info.size, info.type, info.mtime = size, kind, 0
    info.mode = 0o755 if kind == tarfile.DIRTYPE else 0o444
    return info
